"""Logging setup: quiet by default, -v/-vv, JSON lines."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from p2pstore.logs import level_for, setup_logging


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_levels() -> None:
    assert [level_for(v) for v in (-1, 0, 1, 2, 5)] == [
        logging.WARNING,
        logging.WARNING,
        logging.INFO,
        logging.DEBUG,
        logging.DEBUG,
    ]


@pytest.mark.parametrize(
    ("verbosity", "shown"), [(0, ["w"]), (1, ["i", "w"]), (2, ["d", "i", "w"])]
)
def test_verbosity_filters(verbosity: int, shown: list[str]) -> None:
    out = io.StringIO()
    setup_logging(verbosity, stream=out)
    log = logging.getLogger("p2pstore.test")
    log.debug("d")
    log.info("i")
    log.warning("w")
    assert [line.rsplit(": ", 1)[1] for line in out.getvalue().splitlines()] == shown


def test_json_lines_are_one_object_each() -> None:
    out = io.StringIO()
    setup_logging(1, json_lines=True, stream=out)
    log = logging.getLogger("p2pstore.test")
    log.info("hello %s", "wörld\nnext")
    try:
        raise ValueError("bad")
    except ValueError:
        log.exception("failed")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "hello wörld\nnext"
    assert first["level"] == "info"
    assert first["logger"] == "p2pstore.test"
    assert first["ts"].endswith("Z")
    assert "ValueError: bad" in second["exc"]


def test_setup_is_idempotent() -> None:
    first, second = io.StringIO(), io.StringIO()
    setup_logging(0, stream=first)
    setup_logging(0, stream=second)
    logging.getLogger("p2pstore.test").warning("once")
    assert first.getvalue() == ""
    assert second.getvalue().count("once") == 1
