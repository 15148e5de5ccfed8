"""The iterative lookup's decision logic, sans-IO.

A :class:`Lookup` is told what happened (:meth:`~Lookup.on_reply`, :meth:`~Lookup.on_failure`) and
says what to do next (:meth:`~Lookup.next_requests`, :attr:`~Lookup.done`). The service only sends
requests and awaits replies.

Rules: among the ``k`` closest candidates not known to have failed, query those not yet queried,
closest first, keeping at most ``alpha`` requests in flight. The lookup is done when those ``k``
closest have all answered (or no candidate is left and nothing is in flight). Rounds: the first
requests (to the initial contacts) are round 1; a contact first learned from a reply of a round-r
request is queried in round r + 1; :attr:`~Lookup.rounds` is the highest round of any request sent.

Stalls: a request that is slow compared with the round trips the node measures may be declared
stalled (:meth:`~Lookup.on_stalled`): it no longer takes one of the ``alpha`` slots, so the lookup
goes on without waiting for it, but its reply is still used if it comes (Jimenez, Osmani and
Knutsson, "Sub-second lookups on a large-scale Kademlia-based overlay", 2011).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from enum import Enum

from .contact import Contact


class CandidateState(Enum):
    """Where a candidate stands in a lookup."""

    NEW = "new"
    IN_FLIGHT = "in_flight"
    ANSWERED = "answered"
    FAILED = "failed"


_NEW = CandidateState.NEW
_IN_FLIGHT = CandidateState.IN_FLIGHT
_ANSWERED = CandidateState.ANSWERED
_FAILED = CandidateState.FAILED


class _Candidate:
    __slots__ = ("contact", "distance", "round", "stalled", "state", "wave")

    def __init__(self, contact: Contact, distance: int, round_: int) -> None:
        self.contact = contact
        self.distance = distance
        self.round = round_
        self.state = _NEW
        self.stalled = False
        self.wave = False
        """Sent in the first wave, before any reply (see :meth:`Lookup.next_requests`)."""


class Lookup:
    """The state of one iterative lookup of ``target``."""

    def __init__(
        self,
        target: bytes,
        initial: Iterable[Contact],
        *,
        k: int,
        alpha: int,
        own_id: bytes | None = None,
        accept: Callable[[Contact], bool] | None = None,
        probes: int = 0,
        probe_width: int = 1,
    ) -> None:
        self.target = target
        self._target = int.from_bytes(target, "big")
        self._probes = probes
        self._probe_width = probe_width
        self._replies = 0
        self.k = k
        self.alpha = alpha
        self._own_id = own_id
        self._accept = accept
        self._by_id: dict[bytes, _Candidate] = {}
        self._ranked: list[tuple[int, bytes]] = []
        self._in_flight = 0
        self._stalled = 0
        self._wave_in_flight = 0
        self._done: bool | None = None
        """Cached :attr:`done`; ``None`` when a state change may have altered it."""
        self.rounds = 0
        """Highest round of any request sent so far."""
        self.messages = 0
        """Requests sent so far."""
        for contact in initial:
            self._learn(contact, 1)

    def _learn(self, contact: Contact, round_: int) -> None:
        node_id = contact.node_id
        if node_id in self._by_id or node_id == self._own_id:
            return
        if self._accept is not None and not self._accept(contact):
            return
        d = contact.id_int ^ self._target
        self._by_id[node_id] = _Candidate(contact, d, round_)
        bisect.insort(self._ranked, (d, node_id))
        self._done = None

    def next_requests(self) -> list[tuple[Contact, int]]:
        """Contacts to query now, each with its round; they are marked in flight.

        Normally up to ``alpha`` in flight (stalled requests do not count). With ``probes`` (for
        look-ups that stop at the first record found), once the first reply is in, the next
        ``probes`` requests are probes: the probe window is the ``probe_width`` closest
        candidates not yet answered, failed or stalled, first-wave requests aside, and every
        one of them not yet asked is asked at once. Any of the k closest nodes holds the
        record, and the best candidates often are, so the look-up tends to end after one wave
        of probes; several at once mean a lost or slow probe, or one that is not a holder, does
        not cost a round trip; and a closer name that a late reply brings is probed at once,
        not after the probes in flight. The rest of the first wave does not hold a probe back
        (waiting for the slowest reply of a round is what makes look-ups slow on real links);
        its replies still add candidates when they come.
        """
        out: list[tuple[Contact, int]] = []
        probing = self._probes > 0 and self._replies > 0
        limit = self._probe_width if probing else self.alpha
        busy = 0 if probing else self._in_flight
        by_id = self._by_id
        live = 0
        done = True
        for _, node_id in self._ranked:
            candidate = by_id[node_id]
            state = candidate.state
            if state is _FAILED:
                continue
            if state is _NEW:
                if busy < limit and (not probing or self._probes > 0):
                    candidate.state = _IN_FLIGHT
                    busy += 1
                    self._in_flight += 1
                    if self._replies == 0:
                        candidate.wave = True
                        self._wave_in_flight += 1
                    self.messages += 1
                    if candidate.round > self.rounds:
                        self.rounds = candidate.round
                    if probing:
                        self._probes -= 1
                    out.append((candidate.contact, candidate.round))
                done = False
            elif state is _IN_FLIGHT:
                if probing and not candidate.wave and not candidate.stalled:
                    busy += 1  # a probe in flight holds its place in the window
                done = False
            live += 1
            if live == self.k:
                break
        self._done = done if live else (self._in_flight + self._stalled == 0)
        return out

    def on_reply(self, node_id: bytes, contacts: Iterable[Contact]) -> None:
        """``node_id`` answered, naming ``contacts``. Ignored unless it was in flight."""
        candidate = self._by_id.get(node_id)
        if candidate is None or candidate.state is not _IN_FLIGHT:
            return
        self._settle(candidate, _ANSWERED)
        round_ = candidate.round + 1
        for contact in contacts:
            self._learn(contact, round_)

    def on_failure(self, node_id: bytes) -> None:
        """The request to ``node_id`` failed (timeout, error). Ignored unless it was in flight."""
        candidate = self._by_id.get(node_id)
        if candidate is None or candidate.state is not _IN_FLIGHT:
            return
        self._settle(candidate, _FAILED)

    def on_stalled(self, node_id: bytes) -> None:
        """The request to ``node_id`` is slow: stop counting it against ``alpha`` (its reply or
        failure is still taken when it comes). Ignored unless it is in flight and not stalled."""
        candidate = self._by_id.get(node_id)
        if candidate is None or candidate.state is not _IN_FLIGHT or candidate.stalled:
            return
        candidate.stalled = True
        self._in_flight -= 1
        self._stalled += 1
        if candidate.wave:
            candidate.wave = False
            self._wave_in_flight -= 1

    def _settle(self, candidate: _Candidate, state: CandidateState) -> None:
        candidate.state = state
        if candidate.wave:
            candidate.wave = False
            self._wave_in_flight -= 1
        if candidate.stalled:
            candidate.stalled = False
            self._stalled -= 1
        else:
            self._in_flight -= 1
        self._replies += 1
        self._done = None

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered, failed or stalled."""
        return self._in_flight

    @property
    def outstanding(self) -> int:
        """Requests sent and not yet answered or failed, stalled ones included."""
        return self._in_flight + self._stalled

    @property
    def done(self) -> bool:
        """Whether the k closest live candidates have all answered (or none is left to ask)."""
        if self._done is None:
            live = 0
            done = True
            for _, node_id in self._ranked:
                state = self._by_id[node_id].state
                if state is _FAILED:
                    continue
                if state is not _ANSWERED:
                    done = False
                    break
                live += 1
                if live == self.k:
                    break
            self._done = done if (live or not done) else (self.outstanding == 0)
        return self._done

    def state_of(self, node_id: bytes) -> CandidateState | None:
        """The state of a candidate, ``None`` if unknown."""
        candidate = self._by_id.get(node_id)
        return None if candidate is None else candidate.state

    def round_of(self, node_id: bytes) -> int | None:
        """The round a candidate is (or would be) queried in, ``None`` if unknown."""
        candidate = self._by_id.get(node_id)
        return None if candidate is None else candidate.round

    def result(self) -> list[Contact]:
        """Up to k closest contacts that answered, closest first."""
        out = []
        for _, node_id in self._ranked:
            candidate = self._by_id[node_id]
            if candidate.state is _ANSWERED:
                out.append(candidate.contact)
                if len(out) == self.k:
                    break
        return out
