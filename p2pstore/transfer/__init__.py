"""Chunk transfer: the sans-IO download scheduler (the Trio client/server layers live beside it)."""

from __future__ import annotations

from .progress import PeerProgress, Progress
from .scheduler import (
    CancelRequest,
    ChunkRequest,
    Decision,
    DownloadScheduler,
    DropPeer,
    SchedulerConfig,
    StripeComplete,
    StripeSpec,
)

__all__ = [
    "CancelRequest",
    "ChunkRequest",
    "Decision",
    "DownloadScheduler",
    "DropPeer",
    "PeerProgress",
    "Progress",
    "SchedulerConfig",
    "StripeComplete",
    "StripeSpec",
]
