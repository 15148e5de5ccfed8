"""The iterative lookup's decision logic, sans-IO.

A :class:`Lookup` is told what happened (:meth:`~Lookup.on_reply`, :meth:`~Lookup.on_failure`) and
says what to do next (:meth:`~Lookup.next_requests`, :attr:`~Lookup.done`). The service only sends
requests and awaits replies.

Rules: among the ``k`` closest candidates not known to have failed, query those not yet queried,
closest first, keeping at most ``alpha`` requests in flight. The lookup is done when those ``k``
closest have all answered (or no candidate is left and nothing is in flight). Rounds: the first
requests (to the initial contacts) are round 1; a contact first learned from a reply of a round-r
request is queried in round r + 1; :attr:`~Lookup.rounds` is the highest round of any request sent.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

from .contact import Contact, distance


class CandidateState(Enum):
    """Where a candidate stands in a lookup."""

    NEW = "new"
    IN_FLIGHT = "in_flight"
    ANSWERED = "answered"
    FAILED = "failed"


@dataclass
class _Candidate:
    contact: Contact
    distance: int
    round: int
    state: CandidateState = CandidateState.NEW


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
    ) -> None:
        self.target = target
        self._probes = probes
        self._replies = 0
        self.k = k
        self.alpha = alpha
        self._own_id = own_id
        self._accept = accept
        self._by_id: dict[bytes, _Candidate] = {}
        self._ranked: list[tuple[int, bytes]] = []
        self._in_flight = 0
        self.rounds = 0
        """Highest round of any request sent so far."""
        self.messages = 0
        """Requests sent so far."""
        for contact in initial:
            self._learn(contact, 1)

    def _learn(self, contact: Contact, round_: int) -> None:
        if contact.node_id == self._own_id or contact.node_id in self._by_id:
            return
        if self._accept is not None and not self._accept(contact):
            return
        d = distance(contact.node_id, self.target)
        self._by_id[contact.node_id] = _Candidate(contact, d, round_)
        bisect.insort(self._ranked, (d, contact.node_id))

    def _closest_live(self) -> list[_Candidate]:
        out = []
        for _, node_id in self._ranked:
            candidate = self._by_id[node_id]
            if candidate.state is not CandidateState.FAILED:
                out.append(candidate)
                if len(out) == self.k:
                    break
        return out

    def _parallelism(self) -> int:
        # Probing: after the first wave, ask the single closest candidate, ``probes`` times.
        return 1 if self._probes > 0 and self._replies > 0 else self.alpha

    def next_requests(self) -> list[tuple[Contact, int]]:
        """Contacts to query now, each with its round; they are marked in flight.

        Normally up to ``alpha`` in flight. With ``probes`` (for look-ups that stop at the first
        record found), once the first wave has answered, the next ``probes`` requests go one at a
        time to the closest candidate known after every reply is in: any of the k closest nodes
        holds the record, and the best candidate usually is one, so the look-up tends to end with
        one request where ``alpha`` would send several.
        """
        out: list[tuple[Contact, int]] = []
        limit = self._parallelism()
        for candidate in self._closest_live():
            if self._in_flight >= limit:
                break
            if candidate.state is CandidateState.NEW:
                candidate.state = CandidateState.IN_FLIGHT
                self._in_flight += 1
                self.messages += 1
                self.rounds = max(self.rounds, candidate.round)
                if self._replies > 0 and self._probes > 0:
                    self._probes -= 1
                out.append((candidate.contact, candidate.round))
        return out

    def on_reply(self, node_id: bytes, contacts: Iterable[Contact]) -> None:
        """``node_id`` answered, naming ``contacts``. Ignored unless it was in flight."""
        candidate = self._by_id.get(node_id)
        if candidate is None or candidate.state is not CandidateState.IN_FLIGHT:
            return
        candidate.state = CandidateState.ANSWERED
        self._in_flight -= 1
        self._replies += 1
        for contact in contacts:
            self._learn(contact, candidate.round + 1)

    def on_failure(self, node_id: bytes) -> None:
        """The request to ``node_id`` failed (timeout, error). Ignored unless it was in flight."""
        candidate = self._by_id.get(node_id)
        if candidate is None or candidate.state is not CandidateState.IN_FLIGHT:
            return
        candidate.state = CandidateState.FAILED
        self._in_flight -= 1
        self._replies += 1

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered or failed."""
        return self._in_flight

    @property
    def done(self) -> bool:
        """Whether the k closest live candidates have all answered (or none is left to ask)."""
        closest = self._closest_live()
        if not closest:
            return self._in_flight == 0
        return all(c.state is CandidateState.ANSWERED for c in closest)

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
            if candidate.state is CandidateState.ANSWERED:
                out.append(candidate.contact)
                if len(out) == self.k:
                    break
        return out
