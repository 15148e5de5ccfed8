"""A hypothesis state machine driving the scheduler with simulated peers and checking invariants.

The model keeps its own view (what each live peer claims to hold, what is in flight to whom, which
chunks arrived, which peers rest after a BUSY) and checks the scheduler against it after every
step. Availability changes during the download: peers join, fail, come back, and announce more
chunks (have-updates); seeds may be spared; lying peers are dropped after a few false claims.
"""

from __future__ import annotations

import random

from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from p2pstore.transfer import (
    CancelRequest,
    Decision,
    DownloadScheduler,
    DropPeer,
    SchedulerConfig,
    StripeComplete,
)

from .helpers import CHUNK, make_stripes

#: Short, so that the drop of a peer that only answers BUSY is exercised.
BUSY_GIVE_UP = 3.0


class SchedulerMachine(RuleBasedStateMachine):
    sched: DownloadScheduler

    @initialize(
        shapes=st.lists(
            st.integers(1, 5).flatmap(lambda n: st.tuples(st.just(n), st.integers(1, n))),
            min_size=1,
            max_size=4,
        ),
        stored=st.sets(st.integers(0, 19), max_size=6),
        bound=st.integers(1, 4),
        dups=st.integers(0, 2),
        strikes=st.integers(1, 3),
        seed=st.integers(0, 2**32 - 1),
        spare=st.booleans(),
        lies=st.integers(1, 3),
        floor=st.none() | st.integers(1, 4),
    )
    def setup(
        self,
        shapes: list[tuple[int, int]],
        stored: set[int],
        bound: int,
        dups: int,
        strikes: int,
        seed: int,
        spare: bool,
        lies: int,
        floor: int | None,
    ) -> None:
        self.stripes = make_stripes(shapes)
        self.stripe_of: list[int] = []
        self.k: list[int] = []
        for s, (n, k) in enumerate(shapes):
            self.stripe_of += [s] * n
            self.k.append(k)
        self.n = len(self.stripe_of)
        self.bound = bound
        self.config = SchedulerConfig(
            max_in_flight_per_peer=bound,
            endgame_duplicates=dups,
            request_strikes_before_drop=strikes,
            slow_peer_grace=1.0,
            rate_window=2.0,
            spare_seeds=spare,
            false_claims_before_drop=lies,
            max_busy_backoff=1.0,
            busy_give_up=BUSY_GIVE_UP,
            pipeline_floor=None if floor is None else min(floor, bound),
        )
        self.rest: dict[str, float] = {}  # peer -> no new request before this time (BUSY)
        self.fair: set[str] = set()  # live peers added with fair_share (it sticks while live)
        self.streak: dict[str, int] = {}  # peer -> BUSYs since its last delivery
        self.deferring: dict[str, float] = {}  # peer -> its first BUSY since its last delivery
        self.sched = DownloadScheduler(
            self.stripes,
            already_have={g for g in stored if g < self.n},
            config=self.config,
            rng=random.Random(seed),
        )
        self.avail: set[int] = set()  # chunks that count towards their stripe
        self.done: set[int] = set()
        for g in sorted(g for g in stored if g < self.n):
            self._arrive(g)
        assert self.sched.progress(0.0).stripes_done == len(self.done)
        self.claims: dict[str, set[int]] = {}  # live peers only
        self.flight: dict[str, set[int]] = {}
        self.dropped: set[str] = set()
        self.failed: set[str] = set()
        self.next_peer = 0
        self.now = 0.0

    # ------------------------------------------------------------ model helpers

    def _arrive(self, g: int) -> None:
        s = self.stripe_of[g]
        if s in self.done:
            return
        self.avail.add(g)
        if sum(1 for h in self.avail if self.stripe_of[h] == s) >= self.k[s]:
            self.done.add(s)

    def _received(self, peer: str, g: int) -> list[Decision]:
        self.streak.pop(peer, None)
        self.deferring.pop(peer, None)
        return self.sched.chunk_received(peer, g, CHUNK, self.now)

    def _apply(self, decisions: list[Decision]) -> None:
        for d in decisions:
            if isinstance(d, CancelRequest):
                assert d.index in self.flight[d.peer], d  # type: ignore[index]
                self.flight[d.peer].discard(d.index)  # type: ignore[index]
            elif isinstance(d, StripeComplete):
                assert d.stripe in self.done
            elif isinstance(d, DropPeer):
                event(f"drop {d.reason}")
                name: str = d.peer  # type: ignore[assignment]
                assert name in self.claims
                self.dropped.add(name)
                del self.claims[name]
                del self.flight[name]

    def _expected_unreachable(self) -> dict[int, list[int]]:
        held = set().union(*self.claims.values()) if self.claims else set()
        out = {}
        for s in range(len(self.k)):
            if s in self.done:
                continue
            chunks = [g for g in range(self.n) if self.stripe_of[g] == s]
            reach = [g for g in chunks if g in self.avail or g in held]
            if len(reach) < self.k[s]:
                out[s] = [g for g in chunks if g not in reach]
        return out

    def _pending(self) -> list[tuple[str, int]]:
        return sorted((p, g) for p, gs in self.flight.items() for g in gs)

    # ------------------------------------------------------------ rules

    @rule(data=st.data())
    def add_peer(self, data: st.DataObject) -> None:
        if self.failed and data.draw(st.booleans()):
            name = data.draw(st.sampled_from(sorted(self.failed)))
            self.failed.discard(name)
            self.fair.discard(name)  # back as a new peer: fair only if added so again
        elif self.dropped and data.draw(st.integers(0, 4)) == 0:
            name = data.draw(st.sampled_from(sorted(self.dropped)))
            assert self.sched.add_peer(name, range(self.n), self.now) is False
            return
        else:
            name = f"p{self.next_peer}"
            self.next_peer += 1
        have = data.draw(st.sets(st.integers(0, self.n - 1)))
        fair = data.draw(st.booleans())  # a swarm peer: not judged slow, stripe slack when idle
        assert self.sched.add_peer(name, have, self.now, fair_share=fair) is True
        if fair:
            self.fair.add(name)
        self.claims.setdefault(name, set()).update(have)
        self.flight.setdefault(name, set())

    @precondition(lambda self: self.claims)
    @rule(data=st.data())
    def request(self, data: st.DataObject) -> None:
        peer = data.draw(st.sampled_from(sorted(self.claims)))
        self._request(peer)

    def _request(self, peer: str) -> None:
        before = len(self.flight[peer])
        depth = self.sched.pipeline_depth(peer)
        reqs = self.sched.next_requests(peer, self.now)
        assert before + len(reqs) <= max(before, depth), "more requests than its pipeline"
        assert depth <= self.bound
        if peer in self.fair and self.config.pipeline_floor is None:
            # a fixed pipeline: a fair-share peer never beyond its cap
            assert depth <= min(self.bound, self.config.max_in_flight_fair_share)
        if self.now < self.rest.get(peer, 0.0):
            assert reqs == [], "a resting (busy) peer was given work"
        for r in reqs:
            assert r.peer == peer
            assert peer not in self.dropped
            assert r.index in self.claims[peer], "requested from a peer that lacks it"
            assert self.stripe_of[r.index] not in self.done, "request in a completed stripe"
            assert r.index not in self.avail
            assert r.index not in self.flight[peer]
            others = any(r.index in f for p, f in self.flight.items() if p != peer)
            assert r.duplicate == others
            self.flight[peer].add(r.index)
        assert len(self.flight[peer]) <= self.bound

    @precondition(lambda self: self.claims)
    @rule(data=st.data(), seconds=st.floats(0.0, 2.0))
    def round_trip(self, data: st.DataObject, seconds: float) -> None:
        peer = data.draw(st.sampled_from(sorted(self.claims)))
        self.sched.set_round_trip(peer, seconds)
        assert 1 <= self.sched.pipeline_depth(peer) <= self.bound

    @precondition(lambda self: any(self.flight.values()))
    @rule(
        data=st.data(),
        outcome=st.sampled_from(["ok", "ok", "ok", "corrupt", "missing", "timeout", "busy"]),
    )
    def respond(self, data: st.DataObject, outcome: str) -> None:
        peer, g = data.draw(st.sampled_from(self._pending()))
        if outcome == "busy":
            retry = data.draw(st.floats(0.0, 2.0))
            self.flight[peer].discard(g)
            decisions = self.sched.request_busy(peer, g, retry, self.now)
            if peer in self.fair and not decisions:
                # a BUSY puts a fair-share peer back at its cap (its BDP is measured again)
                cap = self.config.max_in_flight_fair_share
                assert self.sched.pipeline_depth(peer) <= min(self.bound, cap)
            since = self.deferring.setdefault(peer, self.now)
            if since < self.now and self.now - since >= BUSY_GIVE_UP:
                assert decisions == [DropPeer(peer, "busy")]
                self._apply(decisions)
                return
            assert decisions == []
            streak = self.streak[peer] = self.streak.get(peer, 0) + 1
            backoff = min(1.0, 0.25 * 2.0 ** (streak - 1))  # floored, doubled, capped
            self.rest[peer] = max(self.rest.get(peer, 0.0), self.now + max(retry, backoff))
            assert self.sched.busy_until(peer) == self.rest[peer]
        elif outcome == "ok":
            self.flight[peer].discard(g)
            self._arrive(g)
            self._apply(self._received(peer, g))
        elif outcome == "corrupt":
            decisions = self.sched.chunk_corrupt(peer, g, self.now)
            assert decisions == [DropPeer(peer, "corrupt")]
            self._apply(decisions)
        elif outcome == "missing":
            self.flight[peer].discard(g)
            self.claims[peer].discard(g)
            self._apply(self.sched.chunk_missing(peer, g, self.now))
        else:
            self.flight[peer].discard(g)
            self._apply(self.sched.request_timed_out(peer, g, self.now))

    @precondition(lambda self: self.claims)
    @rule(data=st.data())
    def late_delivery(self, data: st.DataObject) -> None:
        """A live peer delivers a chunk nobody (or somebody else) asked it for."""
        peer = data.draw(st.sampled_from(sorted(self.claims)))
        if not self.claims[peer]:
            return
        g = data.draw(st.sampled_from(sorted(self.claims[peer])))
        self.flight[peer].discard(g)
        self._arrive(g)
        self._apply(self._received(peer, g))

    @precondition(lambda self: self.claims)
    @rule(data=st.data())
    def have_update(self, data: st.DataObject) -> None:
        """A live peer stored more chunks and says so (HAVE_UPDATE)."""
        peer = data.draw(st.sampled_from(sorted(self.claims)))
        more = data.draw(st.sets(st.integers(0, self.n - 1), min_size=1))
        assert self.sched.add_peer(peer, more, self.now) is True
        self.claims[peer] |= more

    @precondition(lambda self: self.claims)
    @rule(data=st.data())
    def fail_peer(self, data: st.DataObject) -> None:
        peer = data.draw(st.sampled_from(sorted(self.claims)))
        assert self.sched.peer_failed(peer, self.now) == []
        del self.claims[peer]
        del self.flight[peer]
        self.streak.pop(peer, None)
        self.deferring.pop(peer, None)
        self.failed.add(peer)

    @rule(dt=st.floats(0.0, 3.0))
    def advance_time(self, dt: float) -> None:
        self.now += dt
        decisions = self.sched.check_slow_peers(self.now)
        assert all(isinstance(d, DropPeer) and d.reason == "slow" for d in decisions)
        self._apply(decisions)

    @precondition(lambda self: self.claims)
    @rule(data=st.data())
    def slow_but_steady(self, data: st.DataObject) -> None:
        """One peer answers its oldest request while time passes (it may be judged slow)."""
        peer = data.draw(st.sampled_from(sorted(self.claims)))
        self.now += 0.5
        if self.flight[peer]:
            g = min(self.flight[peer])
            self.flight[peer].discard(g)
            self._arrive(g)
            self._apply(self._received(peer, g))
        self._request(peer)
        self._apply(self.sched.check_slow_peers(self.now))

    @rule()
    def drain(self) -> None:
        """Every live peer answers every request honestly from now on: done iff reachable."""
        reachable = not self._expected_unreachable()
        self.now = max([self.now, *self.rest.values()]) + 0.01  # every BUSY hint has passed
        for _ in range(3 * self.n + 5):
            if self.sched.is_complete():
                break
            for peer in sorted(self.claims):
                self._request(peer)
            for peer, g in self._pending():
                if g in self.flight.get(peer, ()):
                    self.flight[peer].discard(g)
                    self._arrive(g)
                    self._apply(self._received(peer, g))
            self.now += 0.01
        assert self.sched.is_complete() == reachable
        event(f"drain reachable={reachable}")
        if not reachable:
            assert not any(self.flight.values())

    # ------------------------------------------------------------ invariants

    @invariant()
    def in_flight_matches_model(self) -> None:
        if not hasattr(self, "sched"):
            return
        for peer, flight in self.flight.items():
            assert self.sched.in_flight(peer) == flight
            assert len(flight) <= self.bound
            assert flight <= self.claims[peer]
            assert not any(self.stripe_of[g] in self.done for g in flight)
        for peer in self.dropped:
            assert self.sched.in_flight(peer) == frozenset()
            assert self.sched.next_requests(peer, self.now) == []
        assert self.sched.peers() == set(self.claims)

    @invariant()
    def stripes_and_reachability(self) -> None:
        if not hasattr(self, "sched"):
            return
        assert self.sched.unreachable_stripes() == self._expected_unreachable()
        assert self.sched.is_complete() == (len(self.done) == len(self.k))
        for s in range(len(self.k)):
            assert self.sched.stripe_done(s) == (s in self.done)
            lo = self.stripe_of.index(s)
            assert self.sched.stripe_ready(s) == {
                g - lo for g in self.avail if self.stripe_of[g] == s
            }
        prog = self.sched.progress(self.now)
        assert prog.bytes_done == sum(self.k[s] for s in self.done) * CHUNK
        assert prog.bytes_total == sum(self.k) * CHUNK


TestScheduler = SchedulerMachine.TestCase
