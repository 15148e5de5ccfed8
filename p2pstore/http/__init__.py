"""The daemon's HTTP face: gateway, JSON API, status page and Prometheus metrics (``docs/http.md``).

:func:`serve_node_http` runs it as a task in the node's nursery (``p2pstore daemon --http ADDR``).
"""

from .app import HttpSettings, NodeApp, serve_node_http

__all__ = ["HttpSettings", "NodeApp", "serve_node_http"]
