"""A provider answers GET_PROVIDERS for its own keys, with the address the reply came from."""

from __future__ import annotations

import trio

from p2pstore.dht import DhtConfig, open_dht
from p2pstore.identity import Identity

CONFIG = DhtConfig(request_timeout=0.3, lookup_timeout=3.0)


async def test_first_node_is_found_as_provider_before_anyone_stored_its_record() -> None:
    first_id, second_id = Identity.generate(), Identity.generate()
    key = b"\x07" * 32
    async with open_dht(first_id, "127.0.0.1", 0, config=CONFIG) as first:
        # Announced into an empty table: no other node holds the record.
        assert await first.announce_provider(key, 4242) == 0
        async with open_dht(second_id, "127.0.0.1", 0, config=CONFIG) as second:
            await second.bootstrap([first.address])
            assert second.stored_providers(key) == []
            with trio.fail_after(5):
                found = await second.find_providers(key)
            assert [(p.node_id, p.host, p.tcp_port) for p in found] == [
                (first.node_id, "127.0.0.1", 4242)
            ]
            first.stop_providing(key)
            assert await second.find_providers(key) == []
