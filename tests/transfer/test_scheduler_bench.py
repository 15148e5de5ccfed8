"""Micro-benchmark: the scheduler on a 100 GiB-sized file (150k chunks) with 8 peers.

Run with ``pytest -q -s -m slow tests/transfer/test_scheduler_bench.py``; prints the figures.
"""

from __future__ import annotations

import random
import time

import pytest

from p2pstore.transfer import DownloadScheduler, SchedulerConfig, StripeSpec

N_CHUNKS = 150_000
STRIPE_N, STRIPE_K = 14, 10
PEERS = 8
HOLD_FRACTION = 0.6  # each peer holds a random 60% of the chunks


@pytest.mark.slow
def test_next_requests_scales() -> None:
    rng = random.Random(1)
    stripes = []
    for s in range(N_CHUNKS // STRIPE_N):
        ids = tuple(s.to_bytes(4, "big") + j.to_bytes(2, "big") for j in range(STRIPE_N))
        stripes.append(StripeSpec(ids, STRIPE_K, (1 << 20,) * STRIPE_N))
    n = len(stripes) * STRIPE_N
    t0 = time.perf_counter()
    sched = DownloadScheduler(stripes, config=SchedulerConfig(), rng=random.Random(2))
    t_init = time.perf_counter() - t0

    peers = [f"peer{i}" for i in range(PEERS)]
    haves = [[g for g in range(n) if rng.random() < HOLD_FRACTION] for _ in peers]
    t0 = time.perf_counter()
    for peer, have in zip(peers, haves, strict=True):
        sched.add_peer(peer, have, 0.0)
    t_add = time.perf_counter() - t0

    requests = 0
    now = 0.0
    t_next = t_recv = 0.0
    while not sched.is_complete():
        now += 0.001
        progressed = False
        for peer in peers:
            t0 = time.perf_counter()
            reqs = sched.next_requests(peer, now)
            t_next += time.perf_counter() - t0
            requests += len(reqs)
            progressed |= bool(reqs)
            flight = sorted(sched.in_flight(peer))
            t0 = time.perf_counter()
            for g in flight[: max(1, len(flight) // 2)]:
                sched.chunk_received(peer, g, 1 << 20, now)
            t_recv += time.perf_counter() - t0
            progressed |= bool(flight)
        assert progressed, "stalled before completion"
    per_req_us = t_next / requests * 1e6
    per_recv_us = t_recv / requests * 1e6
    print(
        f"\n{n} chunks, {PEERS} peers: init {t_init:.2f} s, add_peer x{PEERS} {t_add:.2f} s, "
        f"{requests} requests, next_requests {per_req_us:.1f} us/request, "
        f"chunk_received {per_recv_us:.1f} us/chunk"
    )
    assert sched.progress(now).fraction == 1.0
    assert per_req_us < 200  # generous: O(log n) per request, not O(n)
