"""Tunables of the DHT: one frozen dataclass, validated on construction.

Every interval is a number of seconds on Trio's clock, so tests can shrink them to fractions of a
second (or drive them with :class:`trio.testing.MockClock`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError

MAX_K = 20
"""Largest bucket size: a reply carrying k IPv6 contacts (52 bytes each) must fit a datagram."""


@dataclass(frozen=True)
class DhtConfig:
    """Configuration of one DHT node; :class:`~p2pstore.errors.ConfigError` if inconsistent."""

    k: int = 20
    """Bucket size, and the number of closest nodes a lookup returns and a record is stored on."""
    alpha: int = 3
    """Requests a lookup keeps in flight."""
    request_timeout: float = 1.0
    """Deadline of one request (each in its own cancel scope)."""
    lookup_timeout: float = 10.0
    """Deadline of a whole iterative lookup; it returns what it has when this expires."""
    store_retries: int = 1
    """Extra attempts of a STORE / ADD_PROVIDER / bootstrap PING that timed out."""
    lookup_retries: int = 1
    """Extra attempts of a lookup request that timed out, before its node counts as failed for
    that lookup (a stalled request does not hold the lookup up meanwhile)."""
    provider_ttl: float = 24 * 3600.0
    """How long a node keeps a provider record it was given."""
    value_ttl: float = 24 * 3600.0
    """How long a node keeps a signed value it was given."""
    republish_interval: float = 12 * 3600.0
    """How often a provider re-announces its keys (and a publisher re-stores its values)."""
    bucket_refresh_interval: float = 3600.0
    """A bucket not touched for this long is refreshed with a lookup of a random ID in its range."""
    token_rotation: float = 300.0
    """Write-token secret lifetime; a token stays valid for one to two rotations."""
    maintenance_interval: float = 30.0
    """Shortest period of the housekeeping task (expiry, refresh, republish, routing-table
    save); a node with nothing due before sleeps until the first thing falls due, at most ten
    periods."""
    table_save_interval: float = 300.0
    """How often the routing table is written to the data directory (also on shutdown)."""
    table_save_delay: float = 5.0
    """A routing table that changed is saved this long after the change (changes meanwhile
    are saved together), so a node killed and restarted comes back with its contacts."""
    far_bucket_sizes: tuple[int, ...] = (256, 128, 64, 32)
    """Capacity of the farthest buckets (255, 254, ...), where larger than k. Those ranges hold
    half, a quarter, an eighth, a sixteenth of the network: a wide far bucket makes the first
    hop of a lookup land about log2(size / k) bits closer to any target, which saves a round at
    large N (Jimenez, Osmani and Knutsson 2011). Replies still carry k contacts. Local policy:
    nothing on the wire depends on it."""
    replacement_cache_size: int = 8
    """Verified contacts kept per full bucket, to replace contacts that stop answering."""
    max_failures: int = 3
    """Consecutive unanswered requests after which a contact leaves the table even if no
    replacement is waiting."""
    rate_limit_per_second: float = 50.0
    """Sustained requests per second accepted from one IP address."""
    rate_limit_burst: float = 200.0
    """Requests one IP address may send in a burst above the sustained rate."""
    rate_limit_max_sources: int = 4096
    """IP addresses the rate limiter tracks at once (least recently seen are forgotten)."""
    max_provider_keys: int = 65536
    """Distinct keys this node stores provider records for; further new keys are refused."""
    max_providers_per_key: int = 64
    """Provider records kept per key; further new providers for that key are refused."""
    max_providers_per_ip: int = 4
    """Provider records kept per key from one IP address (loopback exempt): 50 identities on
    one host cannot fill a key's records and crowd out the honest ones."""
    max_providers_per_subnet: int = 8
    """Provider records kept per key from one /24 (IPv4) or /64 (IPv6) (loopback exempt)."""
    max_values: int = 65536
    """Signed values this node stores; further new value keys are refused."""
    max_pending_verifications: int = 32
    """Concurrent PINGs sent to unknown requesters to verify them for the routing table."""
    amplification_factor: int = 3
    """A reply to an unverified address is at most this many times the request's size."""

    def __post_init__(self) -> None:
        if not 1 <= self.k <= MAX_K:
            raise ConfigError(f"k must be between 1 and {MAX_K}, not {self.k}")
        if not 1 <= self.alpha <= self.k:
            raise ConfigError(f"alpha must be between 1 and k ({self.k}), not {self.alpha}")
        positive = {
            "request_timeout": self.request_timeout,
            "lookup_timeout": self.lookup_timeout,
            "provider_ttl": self.provider_ttl,
            "value_ttl": self.value_ttl,
            "republish_interval": self.republish_interval,
            "bucket_refresh_interval": self.bucket_refresh_interval,
            "token_rotation": self.token_rotation,
            "maintenance_interval": self.maintenance_interval,
            "table_save_interval": self.table_save_interval,
            "table_save_delay": self.table_save_delay,
            "rate_limit_per_second": self.rate_limit_per_second,
            "rate_limit_burst": self.rate_limit_burst,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(f"{name} must be positive, not {value}")
        counts = {
            "replacement_cache_size": self.replacement_cache_size,
            "max_failures": self.max_failures,
            "rate_limit_max_sources": self.rate_limit_max_sources,
            "max_provider_keys": self.max_provider_keys,
            "max_providers_per_key": self.max_providers_per_key,
            "max_providers_per_ip": self.max_providers_per_ip,
            "max_providers_per_subnet": self.max_providers_per_subnet,
            "max_values": self.max_values,
            "max_pending_verifications": self.max_pending_verifications,
            "amplification_factor": self.amplification_factor,
        }
        for name, count in counts.items():
            if count < 1:
                raise ConfigError(f"{name} must be at least 1, not {count}")
        if len(self.far_bucket_sizes) > 255 or any(
            not 1 <= size <= 1024 for size in self.far_bucket_sizes
        ):
            raise ConfigError("far_bucket_sizes: at most 255 sizes, each between 1 and 1024")
        if self.lookup_retries < 0:
            raise ConfigError(f"lookup_retries must not be negative, not {self.lookup_retries}")
        if self.store_retries < 0:
            raise ConfigError(f"store_retries must not be negative, not {self.store_retries}")
        if self.republish_interval >= self.provider_ttl:
            raise ConfigError("republish_interval must be shorter than provider_ttl")
