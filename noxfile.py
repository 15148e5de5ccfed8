"""Developer sessions: ``nox -s tests`` (default), ``slow``, ``lint``, ``typecheck``, ``bench``."""

from __future__ import annotations

import pathlib

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """The default suite: everything not marked slow. Extra arguments go to pytest."""
    session.install("-e", ".[dev]")
    session.run("pytest", "-m", "not slow", "-p", "no:cacheprovider", *session.posargs)


@nox.session
def slow(session: nox.Session) -> None:
    """The long cases: thorough hypothesis profile, big multi-node networks."""
    session.install("-e", ".[dev]")
    session.run(
        "pytest",
        "-m",
        "slow",
        "-p",
        "no:cacheprovider",
        *session.posargs,
        env={"HYPOTHESIS_PROFILE": "thorough"},
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole tree."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy, strict on the package."""
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """Run every script in benchmarks/ (each prints a table and a JSON last line)."""
    session.install("-e", ".[dev]")
    for script in sorted(pathlib.Path("benchmarks").glob("bench_*.py")):
        session.run("python", str(script), *session.posargs)
