"""The routing table: 256 k-buckets by XOR distance, sans-IO.

Bucket ``i`` holds the contacts whose distance to us has bit length ``i + 1`` (so bucket 255 is
the far half of the ID space). Each bucket keeps at most ``k`` contacts ordered least recently seen
first, plus a small cache of verified replacements. Only contacts that answered one of our
requests are passed to :meth:`RoutingTable.update` (the service enforces that); our own ID is
never stored.

Eviction (Kademlia, section 2.2): a new contact for a full bucket goes to the replacement cache
and :meth:`update` returns the bucket's least recently seen contact for the caller to PING; the
caller reports the outcome with :meth:`ping_result`: alive -> it stays (moved to the tail),
dead -> it is removed and the freshest replacement takes its place.
"""

from __future__ import annotations

import heapq
import os
from dataclasses import dataclass

from .contact import ID_BITS, Address, Contact, distance


@dataclass
class _Entry:
    contact: Contact
    last_seen: float
    failures: int = 0


@dataclass
class _Bucket:
    entries: list[_Entry]
    """Least recently seen first."""
    replacements: list[_Entry]
    """Most recently seen last."""
    last_touched: float
    pending_ping: bytes | None = None


class RoutingTable:
    """k-buckets of verified contacts around ``own_id``."""

    def __init__(
        self,
        own_id: bytes,
        *,
        k: int = 20,
        replacement_cache_size: int = 8,
        max_failures: int = 3,
        now: float = 0.0,
    ) -> None:
        self.own_id = own_id
        self.k = k
        self._replacement_cache_size = replacement_cache_size
        self._max_failures = max_failures
        self._buckets = [_Bucket([], [], now) for _ in range(ID_BITS)]
        self._by_id: dict[bytes, int] = {}
        self._by_address: dict[Address, bytes] = {}
        self._flat: dict[bytes, tuple[int, Contact]] = {}
        """node ID -> (ID as an integer, contact): the index :meth:`closest` ranks."""

    # Queries ---------------------------------------------------------------------------------

    def bucket_index(self, node_id: bytes) -> int:
        """The bucket a node ID belongs in. Raises :class:`ValueError` for our own ID."""
        d = distance(self.own_id, node_id)
        if d == 0:
            raise ValueError("our own ID has no bucket")
        return d.bit_length() - 1

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._by_id

    def get(self, node_id: bytes) -> Contact | None:
        """The contact with this ID, if in the table."""
        entry = self._flat.get(node_id)
        return None if entry is None else entry[1]

    def by_address(self, address: Address) -> Contact | None:
        """The contact at this UDP address, if in the table."""
        node_id = self._by_address.get(address)
        return None if node_id is None else self.get(node_id)

    def contacts(self) -> list[Contact]:
        """Every contact, bucket by bucket, least recently seen first within a bucket."""
        return [e.contact for b in self._buckets for e in b.entries]

    def bucket(self, index: int) -> list[Contact]:
        """Contacts of bucket ``index``, least recently seen first."""
        return [e.contact for e in self._buckets[index].entries]

    def bucket_last_seen(self, index: int) -> list[float]:
        """Last-seen times of bucket ``index``'s contacts (non-decreasing)."""
        return [e.last_seen for e in self._buckets[index].entries]

    def replacements(self, index: int) -> list[Contact]:
        """Replacement cache of bucket ``index``, most recently seen last."""
        return [e.contact for e in self._buckets[index].replacements]

    def pending_ping(self, index: int) -> bytes | None:
        """The contact of bucket ``index`` being pinged for eviction, if any."""
        return self._buckets[index].pending_ping

    def closest(self, target: bytes, count: int | None = None) -> list[Contact]:
        """Up to ``count`` (default k) contacts closest to ``target``, closest first."""
        t = int.from_bytes(target, "big")
        best = heapq.nsmallest(
            self.k if count is None else count, self._flat.values(), key=lambda e: e[0] ^ t
        )
        return [contact for _, contact in best]

    # Updates ---------------------------------------------------------------------------------

    def update(self, contact: Contact, now: float) -> Contact | None:
        """Record that ``contact`` just answered us (it must be verified).

        Returns a contact the caller must PING and report with :meth:`ping_result` when the
        bucket is full and no such check is already pending; otherwise ``None``.
        """
        if contact.node_id == self.own_id:
            return None
        other = self._by_address.get(contact.address)
        if other is not None and other != contact.node_id:
            # A different node now answers at this address: the old one is gone.
            self.remove(other)
        index = self.bucket_index(contact.node_id)
        bucket = self._buckets[index]
        bucket.last_touched = now
        for i, entry in enumerate(bucket.entries):
            if entry.contact.node_id == contact.node_id:
                del bucket.entries[i]
                self._set_address(entry.contact, contact)
                self._flat[contact.node_id] = (self._flat[contact.node_id][0], contact)
                bucket.entries.append(_Entry(contact, now))
                return None
        if len(bucket.entries) < self.k:
            self._drop_replacement(bucket, contact.node_id)
            self._insert(index, _Entry(contact, now))
            return None
        self._drop_replacement(bucket, contact.node_id)
        bucket.replacements.append(_Entry(contact, now))
        if len(bucket.replacements) > self._replacement_cache_size:
            del bucket.replacements[0]
        if bucket.pending_ping is None:
            oldest = bucket.entries[0].contact
            bucket.pending_ping = oldest.node_id
            return oldest
        return None

    def ping_result(self, node_id: bytes, alive: bool, now: float) -> None:
        """The outcome of the PING that :meth:`update` asked for."""
        if node_id == self.own_id:
            return
        bucket = self._buckets[self.bucket_index(node_id)]
        if bucket.pending_ping == node_id:
            bucket.pending_ping = None
        contact = self.get(node_id)
        if contact is None:
            return
        if alive:
            self.update(contact, now)
        else:
            self.remove(node_id)

    def abandon_ping(self, node_id: bytes) -> None:
        """Forget the pending eviction PING of ``node_id`` without a verdict (e.g. on shutdown)."""
        if node_id == self.own_id:
            return
        bucket = self._buckets[self.bucket_index(node_id)]
        if bucket.pending_ping == node_id:
            bucket.pending_ping = None

    def mark_failed(self, node_id: bytes) -> None:
        """A request to ``node_id`` went unanswered: replace it if a replacement is waiting,
        drop it after ``max_failures`` consecutive failures, else keep it (marked stale)."""
        index = self._by_id.get(node_id)
        if index is None:
            return
        bucket = self._buckets[index]
        for entry in bucket.entries:
            if entry.contact.node_id == node_id:
                entry.failures += 1
                if bucket.replacements or entry.failures >= self._max_failures:
                    self.remove(node_id)
                return

    def failures(self, node_id: bytes) -> int:
        """Consecutive unanswered requests of a contact in the table (0 if not in it)."""
        index = self._by_id.get(node_id)
        if index is None:
            return 0
        for entry in self._buckets[index].entries:
            if entry.contact.node_id == node_id:
                return entry.failures
        return 0

    def remove(self, node_id: bytes) -> None:
        """Remove a contact (no-op if absent); the freshest replacement, if any, takes its place."""
        index = self._by_id.pop(node_id, None)
        if index is None:
            return
        bucket = self._buckets[index]
        for i, entry in enumerate(bucket.entries):
            if entry.contact.node_id == node_id:
                del bucket.entries[i]
                self._by_address.pop(entry.contact.address, None)
                del self._flat[node_id]
                break
        if bucket.pending_ping == node_id:
            bucket.pending_ping = None
        while bucket.replacements and len(bucket.entries) < self.k:
            replacement = bucket.replacements.pop()
            other = self._by_address.get(replacement.contact.address)
            if other is not None:
                continue  # that address now belongs to another node in the table
            self._insert(index, replacement)

    # Refresh ---------------------------------------------------------------------------------

    def buckets_to_refresh(self, now: float, interval: float) -> list[int]:
        """Indices of buckets not touched for ``interval`` seconds, from the nearest non-empty
        bucket outwards (nearer buckets are empty in any network of realistic size)."""
        occupied = [i for i, b in enumerate(self._buckets) if b.entries]
        if not occupied:
            return []
        return [
            i
            for i in range(occupied[0], ID_BITS)
            if now - self._buckets[i].last_touched >= interval
        ]

    def touch(self, index: int, now: float) -> None:
        """Mark bucket ``index`` as refreshed (a lookup of an ID in its range was made)."""
        self._buckets[index].last_touched = now

    def has_room_for(self, node_id: bytes) -> bool:
        """Whether ``node_id``'s bucket has a free slot (a new contact would enter directly)."""
        return (
            node_id != self.own_id
            and len(self._buckets[self.bucket_index(node_id)].entries) < self.k
        )

    def sparse_buckets(self) -> list[int]:
        """Indices of non-full buckets from the nearest occupied one outwards: the ranges a
        joining node looks up to fill its table (Kademlia paper, section 2.3)."""
        occupied = [i for i, b in enumerate(self._buckets) if b.entries]
        if not occupied:
            return []
        return [i for i in range(occupied[0], ID_BITS) if len(self._buckets[i].entries) < self.k]

    def random_id_in_bucket(self, index: int) -> bytes:
        """A random ID whose distance to us falls in bucket ``index``."""
        rand = int.from_bytes(os.urandom(ID_BITS // 8), "big") & ((1 << index) - 1)
        d = (1 << index) | rand
        own = int.from_bytes(self.own_id, "big")
        return (own ^ d).to_bytes(ID_BITS // 8, "big")

    # Internals -------------------------------------------------------------------------------

    def _insert(self, index: int, entry: _Entry) -> None:
        entries = self._buckets[index].entries
        position = len(entries)
        while position > 0 and entries[position - 1].last_seen > entry.last_seen:
            position -= 1
        entries.insert(position, entry)
        self._by_id[entry.contact.node_id] = index
        self._by_address[entry.contact.address] = entry.contact.node_id
        node_id = entry.contact.node_id
        self._flat[node_id] = (int.from_bytes(node_id, "big"), entry.contact)

    def _set_address(self, old: Contact, new: Contact) -> None:
        self._by_address.pop(old.address, None)
        self._by_address[new.address] = new.node_id

    @staticmethod
    def _drop_replacement(bucket: _Bucket, node_id: bytes) -> None:
        bucket.replacements = [e for e in bucket.replacements if e.contact.node_id != node_id]
