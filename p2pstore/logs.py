"""Logging setup for the command line: stderr only, quiet by default.

Verbosity 0 shows warnings and errors, 1 (``-v``) adds info, 2+ (``-vv``) adds debug. With
``json_lines=True`` every record is one JSON object on its own line (``ts``, ``level``,
``logger``, ``message``, and ``exc`` when an exception is attached), for log shippers.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

_HANDLER_NAME = "p2pstore-cli"
"""Name of the handler this module installs, so calling :func:`setup_logging` again replaces it."""

_LEVELS = (logging.WARNING, logging.INFO, logging.DEBUG)


class JsonLineFormatter(logging.Formatter):
    """Formats a record as one JSON object (no newlines inside, non-ASCII kept as is)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class _CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler writing to the current ``sys.stderr`` at emit time (tests swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def level_for(verbosity: int) -> int:
    """The logging level for a ``-v`` count (0 -> WARNING, 1 -> INFO, 2+ -> DEBUG)."""
    return _LEVELS[max(0, min(verbosity, len(_LEVELS) - 1))]


def setup_logging(
    verbosity: int = 0,
    json_lines: bool = False,
    stream: TextIO | None = None,
    level: int | None = None,
) -> None:
    """Install (or replace) the single stderr handler on the root logger.

    ``stream`` overrides the destination (default: the current ``sys.stderr``). Idempotent:
    the previous handler installed by this function is removed first. ``level``, when given,
    wins over ``verbosity`` (``-q``, or ``log_level`` from the settings file).
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    new: logging.Handler = (
        logging.StreamHandler(stream) if stream is not None else _CurrentStderrHandler()
    )
    new.set_name(_HANDLER_NAME)
    if json_lines:
        new.setFormatter(JsonLineFormatter())
    else:
        new.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    if level is None:
        level = level_for(verbosity)
    new.setLevel(level)
    root.addHandler(new)
    root.setLevel(level)


LOG_LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
"""The names ``log_level`` accepts in ``p2pstore.toml``."""
