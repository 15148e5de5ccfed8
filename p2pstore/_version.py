"""The single source of the package version."""

__version__ = "0.1.0"


def version_text() -> str:
    """What ``p2pstore --version`` prints."""
    return f"p2pstore {__version__}"
