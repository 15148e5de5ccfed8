"""The routing table: k-buckets by XOR distance, made on demand, sans-IO.

Bucket ``i`` holds the contacts whose distance to us has bit length ``i + 1`` (so bucket 255 is
the far half of the ID space). Each bucket keeps at most ``k`` contacts ordered least recently seen
first, plus a small cache of verified replacements. Only contacts that answered one of our
requests are passed to :meth:`RoutingTable.update` (the service enforces that); our own ID is
never stored.

Eviction (Kademlia, section 2.2): a new contact for a full bucket goes to the replacement cache
and :meth:`update` returns the bucket's least recently seen contact for the caller to PING; the
caller reports the outcome with :meth:`ping_result`: alive -> it stays (moved to the tail),
dead -> it is removed and the freshest replacement takes its place.

Memory: a bucket exists only once a contact for it was seen or its range was looked up, and a
contact costs a list slot, its last-seen time and one address-index entry (plus the
:class:`Contact` itself, which callers share where they can): about 100 bytes, so a full table in
a network of 100,000 nodes (about 260 contacts) is a few tens of KiB.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence

from .contact import ID_BITS, Address, Contact

_SYSTEM_RANDOM = random.SystemRandom()


class _Bucket:
    """Parallel lists: ``contacts[i]`` (ID ``ids[i]``) was last seen at ``seen[i]``
    (non-decreasing)."""

    __slots__ = (
        "contacts",
        "failures",
        "ids",
        "last_touched",
        "pending_ping",
        "replacement_seen",
        "replacements",
        "seen",
    )

    def __init__(self, now: float) -> None:
        self.contacts: list[Contact] = []
        self.ids: list[bytes] = []
        """``contacts[i].node_id``: a membership test or search runs at C speed."""
        self.seen: list[float] = []
        self.replacements: list[Contact] = []
        """Most recently seen last."""
        self.replacement_seen: list[float] = []
        self.failures: dict[bytes, int] | None = None
        """Consecutive unanswered requests, only of contacts that have any."""
        self.last_touched = now
        self.pending_ping: bytes | None = None

    def position(self, node_id: bytes) -> int:
        ids = self.ids
        return ids.index(node_id) if node_id in ids else -1


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
        far_bucket_sizes: Sequence[int] = (),
    ) -> None:
        self.own_id = own_id
        self.k = k
        self._capacity = {ID_BITS - 1 - i: max(k, size) for i, size in enumerate(far_bucket_sizes)}
        """Buckets that hold more than k contacts (255, 254, ... in order), see
        :meth:`capacity`."""
        self._indices: list[int] = []
        """Sorted indices of the buckets made so far."""
        self._own = int.from_bytes(own_id, "big")
        self._replacement_cache_size = replacement_cache_size
        self._max_failures = max_failures
        self._created = now
        self._buckets: dict[int, _Bucket] = {}
        self._by_address: dict[Address, bytes] = {}
        self.version = 0
        """Incremented whenever a contact enters, leaves or changes address."""

    # Queries ---------------------------------------------------------------------------------

    def capacity(self, index: int) -> int:
        """Contacts bucket ``index`` holds: k, or more for the farthest buckets when
        ``far_bucket_sizes`` says so (wide far buckets: the first hop of a lookup then lands
        several bits closer to any target, so lookups need fewer rounds; Jimenez, Osmani and
        Knutsson 2011)."""
        return self._capacity.get(index, self.k)

    def _new_bucket(self, index: int, now: float) -> _Bucket:
        bucket = self._buckets[index] = _Bucket(now)
        bisect.insort(self._indices, index)
        return bucket

    def bucket_index(self, node_id: bytes) -> int:
        """The bucket a node ID belongs in. Raises :class:`ValueError` for our own ID."""
        d = self._own ^ int.from_bytes(node_id, "big")
        if d == 0:
            raise ValueError("our own ID has no bucket")
        return d.bit_length() - 1

    def __len__(self) -> int:
        return len(self._by_address)

    def __contains__(self, node_id: object) -> bool:
        return isinstance(node_id, bytes) and self.get(node_id) is not None

    def _find(self, node_id: bytes) -> tuple[_Bucket, int] | None:
        d = self._own ^ int.from_bytes(node_id, "big")
        if d == 0:
            return None
        bucket = self._buckets.get(d.bit_length() - 1)
        if bucket is None:
            return None
        i = bucket.position(node_id)
        return None if i < 0 else (bucket, i)

    def get(self, node_id: bytes) -> Contact | None:
        """The contact with this ID, if in the table."""
        found = self._find(node_id)
        return None if found is None else found[0].contacts[found[1]]

    def by_address(self, address: Address) -> Contact | None:
        """The contact at this UDP address, if in the table."""
        node_id = self._by_address.get(address)
        return None if node_id is None else self.get(node_id)

    def contacts(self) -> list[Contact]:
        """Every contact, bucket by bucket, least recently seen first within a bucket."""
        return [c for i in sorted(self._buckets) for c in self._buckets[i].contacts]

    def bucket(self, index: int) -> list[Contact]:
        """Contacts of bucket ``index``, least recently seen first."""
        b = self._buckets.get(index)
        return [] if b is None else list(b.contacts)

    def bucket_last_seen(self, index: int) -> list[float]:
        """Last-seen times of bucket ``index``'s contacts (non-decreasing)."""
        b = self._buckets.get(index)
        return [] if b is None else list(b.seen)

    def replacements(self, index: int) -> list[Contact]:
        """Replacement cache of bucket ``index``, most recently seen last."""
        b = self._buckets.get(index)
        return [] if b is None else list(b.replacements)

    def pending_ping(self, index: int) -> bytes | None:
        """The contact of bucket ``index`` being pinged for eviction, if any."""
        b = self._buckets.get(index)
        return None if b is None else b.pending_ping

    def closest(
        self, target: bytes, count: int | None = None, *, exclude: bytes | None = None
    ) -> list[Contact]:
        """Up to ``count`` (default k) contacts closest to ``target``, closest first, never the
        one whose ID is ``exclude``.

        Every contact of bucket ``j`` is at a distance from ``target`` in
        ``[P_j, P_j + 2**j)`` with ``P_j = ((d >> j) ^ 1) << j`` (``d``: our distance to the
        target); these ranges are disjoint, so buckets are visited in order of ``P_j`` and only
        the visited ones are sorted.
        """
        n = self.k if count is None else count
        if n <= 0:
            return []
        t = int.from_bytes(target, "big")
        d = self._own ^ t
        buckets = self._buckets
        indices = self._indices
        # P_j grows as j falls over the bits of d that are set, then as j rises over those
        # that are clear: that is the visiting order, without sorting the buckets.
        order = [j for j in reversed(indices) if (d >> j) & 1]
        order.extend(j for j in indices if not (d >> j) & 1)
        out: list[Contact] = []
        for j in order:
            contacts = buckets[j].contacts
            if not contacts:
                continue
            if len(contacts) == 1:
                if contacts[0].node_id != exclude:
                    out.append(contacts[0])
            else:
                if exclude is not None and exclude in buckets[j].ids:
                    contacts = [c for c in contacts if c.node_id != exclude]
                # Sorting positions by a list of distances beats sorting (distance, contact)
                # pairs (IDs are distinct, so there are no ties).
                ds = [c.id_int ^ t for c in contacts]
                ranked = sorted(range(len(ds)), key=ds.__getitem__)
                out.extend([contacts[i] for i in ranked[: n - len(out)]])
            if len(out) >= n:
                break
        return out

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
        bucket = self._buckets.get(index)
        if bucket is None:
            bucket = self._new_bucket(index, self._created)
        bucket.last_touched = now
        i = bucket.position(contact.node_id)
        if i >= 0:
            old = bucket.contacts[i]
            del bucket.contacts[i]
            del bucket.ids[i]
            del bucket.seen[i]
            if old != contact:
                self._by_address.pop(old.address, None)
                self._by_address[contact.address] = contact.node_id
                self.version += 1
            else:
                contact = old  # keep the object the table already holds
            if bucket.failures is not None:
                bucket.failures.pop(contact.node_id, None)
            bucket.contacts.append(contact)
            bucket.ids.append(contact.node_id)
            bucket.seen.append(now)
            return None
        self._drop_replacement(bucket, contact.node_id)
        if len(bucket.contacts) < self._capacity.get(index, self.k):
            self._insert(bucket, contact, now)
            return None
        bucket.replacements.append(contact)
        bucket.replacement_seen.append(now)
        if len(bucket.replacements) > self._replacement_cache_size:
            del bucket.replacements[0]
            del bucket.replacement_seen[0]
        if bucket.pending_ping is None:
            oldest = bucket.contacts[0]
            bucket.pending_ping = oldest.node_id
            return oldest
        return None

    def adopt_bucket(self, index: int, contacts: Sequence[Contact], seen: float) -> int:
        """Fill bucket ``index``, which holds no contact yet, in bulk with verified contacts that
        all answered at ``seen``, under the rules of :meth:`update` for a bucket with room (the
        simulator builds 100,000 tables with it): ``contacts`` must all fall in bucket ``index``
        and have distinct IDs (:class:`ValueError` otherwise); those whose address the table
        already holds (or an earlier one of them has) are skipped, and the first
        ``capacity(index)`` of the rest enter, with no eviction and no replacement cache.
        Returns how many entered."""
        if contacts:
            low = ((self._own >> index) ^ 1) << index  # the range of bucket index's IDs
            id_ints = [c.id_int for c in contacts]
            if not low <= min(id_ints) <= max(id_ints) < low + (1 << index):
                raise ValueError(f"a contact outside bucket {index}")
        if len({c.node_id for c in contacts}) != len(contacts):
            raise ValueError("duplicate node IDs")
        bucket = self._buckets.get(index)
        if bucket is None:
            bucket = self._new_bucket(index, self._created)
        elif bucket.contacts:
            raise ValueError(f"bucket {index} is not empty")
        by_address = self._by_address
        addresses = [c.address for c in contacts]
        candidates = list(contacts)
        if not by_address.keys().isdisjoint(addresses) or len(set(addresses)) != len(addresses):
            unique: dict[Address, Contact] = {}
            for c in contacts:
                if c.address not in by_address:
                    unique.setdefault(c.address, c)
            candidates = list(unique.values())
        chosen = candidates[: self._capacity.get(index, self.k)]
        if not chosen:
            return 0
        bucket.contacts = chosen
        bucket.ids = [c.node_id for c in chosen]
        bucket.seen = [seen] * len(chosen)
        by_address.update({c.address: c.node_id for c in chosen})
        if seen > bucket.last_touched:
            bucket.last_touched = seen
        self.version += 1
        return len(chosen)

    def ping_result(self, node_id: bytes, alive: bool, now: float) -> None:
        """The outcome of the PING that :meth:`update` asked for."""
        if node_id == self.own_id:
            return
        bucket = self._buckets.get(self.bucket_index(node_id))
        if bucket is None:
            return
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
        bucket = self._buckets.get(self.bucket_index(node_id))
        if bucket is not None and bucket.pending_ping == node_id:
            bucket.pending_ping = None

    def mark_failed(self, node_id: bytes) -> None:
        """A request to ``node_id`` went unanswered: replace it if a replacement is waiting,
        drop it after ``max_failures`` consecutive failures, else keep it (marked stale)."""
        found = self._find(node_id)
        if found is None:
            return
        bucket = found[0]
        if bucket.failures is None:
            bucket.failures = {}
        failures = bucket.failures[node_id] = bucket.failures.get(node_id, 0) + 1
        if bucket.replacements or failures >= self._max_failures:
            self.remove(node_id)

    def failures(self, node_id: bytes) -> int:
        """Consecutive unanswered requests of a contact in the table (0 if not in it)."""
        found = self._find(node_id)
        if found is None or found[0].failures is None:
            return 0
        return found[0].failures.get(node_id, 0)

    def remove(self, node_id: bytes) -> None:
        """Remove a contact (no-op if absent); the freshest replacement, if any, takes its place."""
        found = self._find(node_id)
        if found is None:
            return
        bucket, i = found
        capacity = self.capacity(self.bucket_index(node_id))
        contact = bucket.contacts.pop(i)
        del bucket.ids[i]
        del bucket.seen[i]
        self._by_address.pop(contact.address, None)
        self.version += 1
        if bucket.failures is not None:
            bucket.failures.pop(node_id, None)
            if not bucket.failures:
                bucket.failures = None
        if bucket.pending_ping == node_id:
            bucket.pending_ping = None
        while bucket.replacements and len(bucket.contacts) < capacity:
            replacement = bucket.replacements.pop()
            seen = bucket.replacement_seen.pop()
            if replacement.address in self._by_address:
                continue  # that address now belongs to another node in the table
            self._insert(bucket, replacement, seen)

    # Refresh ---------------------------------------------------------------------------------

    def nearest_occupied(self) -> int | None:
        """Index of the nearest bucket that holds a contact (``None``: the table is empty)."""
        occupied = [i for i, b in self._buckets.items() if b.contacts]
        return min(occupied) if occupied else None

    def _last_touched(self, index: int) -> float:
        b = self._buckets.get(index)
        return self._created if b is None else b.last_touched

    def buckets_to_refresh(self, now: float, interval: float) -> list[int]:
        """Indices of buckets not touched for ``interval`` seconds, from the nearest non-empty
        bucket outwards (nearer buckets are empty in any network of realistic size)."""
        nearest = self.nearest_occupied()
        if nearest is None:
            return []
        return [i for i in range(nearest, ID_BITS) if self.is_stale(i, now, interval)]

    def next_refresh_due(self, interval: float) -> float | None:
        """The earliest moment one of the buckets :meth:`buckets_to_refresh` considers becomes
        stale (``None`` for an empty table)."""
        nearest = self.nearest_occupied()
        if nearest is None:
            return None
        buckets = self._buckets
        created = self._created
        oldest = min(
            (buckets[i].last_touched if i in buckets else created) for i in range(nearest, ID_BITS)
        )
        return oldest + interval

    def is_stale(self, index: int, now: float, interval: float) -> bool:
        """Whether bucket ``index`` was not touched for ``interval`` seconds."""
        return now - self._last_touched(index) >= interval

    def touch(self, index: int, now: float) -> None:
        """Mark bucket ``index`` as refreshed (a lookup of an ID in its range was made)."""
        bucket = self._buckets.get(index)
        if bucket is None:
            bucket = self._new_bucket(index, now)
        bucket.last_touched = now

    def has_room_for(self, node_id: bytes) -> bool:
        """Whether ``node_id``'s bucket has a free slot (a new contact would enter directly)."""
        if node_id == self.own_id:
            return False
        index = self.bucket_index(node_id)
        bucket = self._buckets.get(index)
        return bucket is None or len(bucket.contacts) < self.capacity(index)

    def sparse_buckets(self) -> list[int]:
        """Indices of non-full buckets from the nearest occupied one outwards: the ranges a
        joining node looks up to fill its table (Kademlia paper, section 2.3)."""
        nearest = self.nearest_occupied()
        if nearest is None:
            return []
        return [i for i in range(nearest, ID_BITS) if len(self.bucket_contacts(i)) < self.k]

    def bucket_contacts(self, index: int) -> list[Contact]:
        """The contacts of bucket ``index`` (the table's own list: do not modify it)."""
        b = self._buckets.get(index)
        return [] if b is None else b.contacts

    def random_id_in_bucket(self, index: int, rng: random.Random | None = None) -> bytes:
        """A random ID whose distance to us falls in bucket ``index`` (from ``rng``)."""
        rand = (rng or _SYSTEM_RANDOM).getrandbits(ID_BITS) & ((1 << index) - 1)
        d = (1 << index) | rand
        return (self._own ^ d).to_bytes(ID_BITS // 8, "big")

    def bucket_count(self) -> int:
        """Buckets allocated so far (they are made on demand)."""
        return len(self._buckets)

    # Internals -------------------------------------------------------------------------------

    def _insert(self, bucket: _Bucket, contact: Contact, seen: float) -> None:
        position = len(bucket.seen)
        while position > 0 and bucket.seen[position - 1] > seen:
            position -= 1
        bucket.contacts.insert(position, contact)
        bucket.ids.insert(position, contact.node_id)
        bucket.seen.insert(position, seen)
        self._by_address[contact.address] = contact.node_id
        self.version += 1

    @staticmethod
    def _drop_replacement(bucket: _Bucket, node_id: bytes) -> None:
        for i, c in enumerate(bucket.replacements):
            if c.node_id == node_id:
                del bucket.replacements[i]
                del bucket.replacement_seen[i]
                return
