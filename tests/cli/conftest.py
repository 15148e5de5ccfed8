"""Fixtures shared by the CLI tests that run commands against the scripted node: a short data
directory (Unix socket paths are limited to about 100 bytes) and a control socket served from it
by a :class:`~tests.cli.fakes.FakeNode` in a thread. A test module may define its own."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from .fakes import FakeNode, daemon_in_thread, short_tmp_dir


@pytest.fixture
def data_dir() -> Iterator[Path]:
    with short_tmp_dir() as d:
        yield d


@pytest.fixture
def daemon(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeNode]:
    monkeypatch.setattr(logging.getLogger("p2pstore.control"), "propagate", False)
    with daemon_in_thread(FakeNode(), data_dir) as node:
        yield node
