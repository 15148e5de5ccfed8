"""The ``p2pstore`` command line (Typer)."""

from __future__ import annotations

from typing import Annotated

import typer

from ._version import __version__

app = typer.Typer(
    name="p2pstore",
    help="A peer-to-peer, content-addressed, erasure-coded file store.",
    no_args_is_help=True,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"p2pstore {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """A peer-to-peer, content-addressed, erasure-coded file store."""


def main() -> None:
    """Entry point of the ``p2pstore`` console script."""
    app()
