"""Migration example: ``P2PNode(...)`` + ``initialize()`` / ``start_server()`` / ``shutdown()``.

Old (client-server design)::

    node = P2PNode(host="0.0.0.0", dht_port=8468, tcp_port=9000, bootstrap=[("10.0.0.1", 8468)])
    node.initialize()      # open storage, bind the DHT
    node.start_server()    # start the chunk server thread
    ...
    node.shutdown()        # stop threads, close sockets (if nobody forgets to call it)

New: one ``async with open_node(...)`` block. Entering it opens the store, binds UDP and TCP,
starts every background task in the node's nursery and joins the network; leaving it (normally,
by an exception or by cancellation) stops all of them, saves the routing table and closes the
store. There is no separate start or stop call to forget.

This script starts two nodes on 127.0.0.1 (free ports, temporary data directories), checks that
they found each other, stops the second one by cancelling its scope, restarts it from the same
data directory (same node ID, routing table reloaded) and exits 0.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import trio

from p2pstore.node import Node, open_node


async def run_node(
    data_dir: Path,
    bootstrap: list[tuple[str, int]],
    *,
    task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A node as a long-running task: the replacement of start_server() + shutdown().

    ``nursery.start(run_node, ...)`` returns the running Node once it listens and has joined;
    cancelling the surrounding scope is the shutdown.
    """
    async with open_node(
        data_dir, host="127.0.0.1", udp_port=0, tcp_port=0, bootstrap=bootstrap
    ) as node:
        task_status.started(node)
        await trio.sleep_forever()


async def main(root: Path) -> None:
    # The simplest form: the node lives exactly as long as the block.
    async with open_node(root / "a", host="127.0.0.1", udp_port=0, tcp_port=0) as a:
        print(f"node A {a.node_id.hex()[:16]}  udp {a.udp_address}  tcp {a.tcp_address}")

        # A second node as a task of its own, stoppable independently of A.
        with trio.CancelScope() as b_scope:
            async with trio.open_nursery() as nursery:
                b: Node = await nursery.start(run_node, root / "b", [a.udp_address])
                b_id = b.node_id
                print(f"node B {b_id.hex()[:16]}  udp {b.udp_address}  tcp {b.tcp_address}")

                # Joining is done when start() returns: B pinged A and looked itself up.
                assert a.node_id in {c.node_id for c in b.peers()}
                with trio.fail_after(5):  # A learns B from B's requests
                    while b_id not in {c.node_id for c in a.peers()}:  # noqa: ASYNC110 (remote state)
                        await trio.sleep(0.05)
                status = b.status()
                print(f"B status: routing table {status.routing_table_size}, files {status.files}")

                b_scope.cancel()  # the shutdown: every task of B is cancelled

        # B's data directory now holds its identity and its saved routing table.
        names = sorted(p.name for p in (root / "b").iterdir())
        print("B's data directory:", ", ".join(names))
        assert "identity.key" in names
        assert "dht_routing.msgpack" in names

        # Restart B from the same directory, without bootstrap addresses: it rejoins through
        # the contacts it saved, and keeps its node ID.
        async with open_node(root / "b", host="127.0.0.1", udp_port=0, tcp_port=0) as b2:
            assert b2.node_id == b_id
            assert a.node_id in {c.node_id for c in b2.peers()}
            print("B restarted with the same node ID and rejoined through its saved contacts")
    print("OK")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="p2pstore-example-") as tmp:
        trio.run(main, Path(tmp))
