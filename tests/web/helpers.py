"""Shared helpers of the HTTP tests: a node's HTTP face on a free loopback port."""

from __future__ import annotations

from typing import Any

import trio

from p2pstore.http import HttpSettings, serve_node_http
from p2pstore.http.client import Reply, request
from p2pstore.node import Node


class Face:
    """A node's HTTP face started in ``nursery``; :meth:`get` etc. talk to it."""

    def __init__(self, node: Node, host: str, port: int) -> None:
        self.node = node
        self.host = host
        self.port = port

    async def call(self, method: str, target: str, **kwargs: Any) -> Reply:
        return await request(self.host, self.port, method, target, **kwargs)

    async def get(self, target: str, **kwargs: Any) -> Reply:
        return await self.call("GET", target, **kwargs)


async def start_face(
    nursery: trio.Nursery,
    node: Node,
    host: str = "127.0.0.1",
    settings: HttpSettings | None = None,
) -> Face:
    bound = await nursery.start(
        lambda task_status: serve_node_http(
            node, host, 0, settings=settings, task_status=task_status
        )
    )
    return Face(node, bound[0], bound[1])
