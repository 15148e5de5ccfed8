"""Developer sessions: ``nox -s tests`` (default), ``slow``, ``lint``, ``typecheck``, ``bench``,
``bench_netns`` (root)."""

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
        if script.name == "bench_netns.py":
            continue  # needs root and its own lab: nox -s bench_netns
        session.run("python", str(script), *session.posargs)


@nox.session
def bench_netns(session: nox.Session) -> None:
    """The real-link benchmark: daemons in shaped network namespaces (root, iproute2, nftables).

    Extra arguments go to the script, e.g. ``nox -s bench_netns -- --holders 8 --repeat 3``.
    """
    session.install("-e", ".[dev]")
    session.run("python", "benchmarks/bench_netns.py", *session.posargs)
