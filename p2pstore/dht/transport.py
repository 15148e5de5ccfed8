"""The datagram transport interface, the real Trio UDP socket, and test transports.

The service talks to a :class:`Transport` only, so tests can wrap the real socket in a
:class:`FaultyTransport` (loss, duplication, delay), count traffic with a
:class:`CountingTransport`, or run nodes on an in-memory :class:`MemoryNetwork` where source
addresses can be forged without sending anything anywhere.
"""

from __future__ import annotations

import random
import socket
from abc import ABC, abstractmethod
from collections.abc import Callable

import trio

from .contact import Address, canonical_host, is_ipv6
from .messages import MAX_DATAGRAM_BYTES

RECV_BUFFER_BYTES = MAX_DATAGRAM_BYTES + 1
"""One byte more than the largest valid datagram, so an oversized one is seen as such."""
MEMORY_QUEUE_DATAGRAMS = 1024
"""Datagrams an in-memory endpoint buffers before it drops, as a full socket buffer would."""


class Transport(ABC):
    """An unreliable datagram endpoint. Sending never raises for network trouble."""

    @property
    @abstractmethod
    def local_address(self) -> Address:
        """The (host, port) this endpoint is bound to."""

    @abstractmethod
    async def send(self, data: bytes, address: Address) -> bool:
        """Send one datagram; ``False`` if the OS refused it (unreachable, buffer full...)."""

    @abstractmethod
    async def receive(self) -> tuple[bytes, Address]:
        """Wait for the next datagram and its source address (host in canonical form).

        A datagram longer than :data:`MAX_DATAGRAM_BYTES` is returned truncated to
        :data:`RECV_BUFFER_BYTES`, so the caller can see it is oversized.
        """

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background work of the transport, if any; the service starts it in its nursery and
        cancels it on shutdown. The default has none and returns at once."""
        task_status.started()

    @abstractmethod
    def close(self) -> None:
        """Release the endpoint. Idempotent."""


TransportWrapper = Callable[[Transport], Transport]
"""Wraps the service's transport, e.g. ``lambda t: FaultyTransport(t, loss=0.2)``."""


class UdpTransport(Transport):
    """A Trio UDP socket bound to one address (one address family per socket)."""

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self._sock = sock
        name = sock.getsockname()
        self._local: Address = (canonical_host(name[0]), int(name[1]))

    @classmethod
    async def bind(cls, host: str, port: int) -> UdpTransport:
        """A socket bound to ``host:port`` (``port`` 0 picks a free one).

        Raises :class:`OSError` if the address cannot be bound.
        """
        family = socket.AF_INET6 if is_ipv6(host) else socket.AF_INET
        sock = trio.socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            await sock.bind((host, port))
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    @property
    def local_address(self) -> Address:
        return self._local

    async def send(self, data: bytes, address: Address) -> bool:
        try:
            await self._sock.sendto(data, address)
        except OSError:
            return False
        return True

    async def receive(self) -> tuple[bytes, Address]:
        while True:
            try:
                data, source = await self._sock.recvfrom(RECV_BUFFER_BYTES)
            except OSError:
                continue  # e.g. ECONNREFUSED left by an ICMP error on some platforms
            return data, (canonical_host(source[0]), int(source[1]))

    def close(self) -> None:
        self._sock.close()


class _WrappingTransport(Transport):
    def __init__(self, inner: Transport) -> None:
        self.inner = inner

    @property
    def local_address(self) -> Address:
        return self.inner.local_address

    async def send(self, data: bytes, address: Address) -> bool:
        return await self.inner.send(data, address)

    async def receive(self) -> tuple[bytes, Address]:
        return await self.inner.receive()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.inner.run(task_status=task_status)

    def close(self) -> None:
        self.inner.close()


class CountingTransport(_WrappingTransport):
    """Counts datagrams and bytes sent and received (the benchmark's message counter)."""

    def __init__(self, inner: Transport) -> None:
        super().__init__(inner)
        self.sent = 0
        self.sent_bytes = 0
        self.received = 0
        self.received_bytes = 0

    async def send(self, data: bytes, address: Address) -> bool:
        self.sent += 1
        self.sent_bytes += len(data)
        return await self.inner.send(data, address)

    async def receive(self) -> tuple[bytes, Address]:
        data, source = await self.inner.receive()
        self.received += 1
        self.received_bytes += len(data)
        return data, source


class FaultyTransport(_WrappingTransport):
    """Drops, duplicates and delays outgoing datagrams at random (for tests).

    ``loss``/``duplicate`` are probabilities; each sent copy is delayed by ``delay`` plus a uniform
    random ``jitter`` seconds (delayed copies are sent from this transport's own :meth:`run`
    task, so a slow "link" never blocks the caller). ``seed`` makes the faults reproducible.
    """

    def __init__(
        self,
        inner: Transport,
        *,
        loss: float = 0.0,
        duplicate: float = 0.0,
        delay: float = 0.0,
        jitter: float = 0.0,
        seed: int | None = None,
    ) -> None:
        super().__init__(inner)
        self.loss = loss
        self.duplicate = duplicate
        self.delay = delay
        self.jitter = jitter
        self.dropped = 0
        self._rng = random.Random(seed)
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.inner.run)
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    async def _send_later(self, data: bytes, address: Address, wait: float) -> None:
        await trio.sleep(wait)
        await self.inner.send(data, address)

    async def send(self, data: bytes, address: Address) -> bool:
        copies = 2 if self._rng.random() < self.duplicate else 1
        for _ in range(copies):
            if self._rng.random() < self.loss:
                self.dropped += 1
                continue
            wait = self.delay + self._rng.uniform(0.0, self.jitter)
            if wait > 0 and self._nursery is not None:
                self._nursery.start_soon(self._send_later, data, address, wait)
            else:
                await self.inner.send(data, address)
        return True


class MemoryNetwork:
    """An in-memory datagram network for tests: nothing leaves the process.

    Addresses are arbitrary ``(host, port)`` pairs; :meth:`inject` delivers a datagram with any
    source address, which is how tests forge spoofed packets.
    """

    def __init__(self) -> None:
        self._endpoints: dict[Address, MemoryTransport] = {}

    def transport(self, host: str, port: int) -> MemoryTransport:
        """A new endpoint at ``host:port``. Raises :class:`OSError` if the address is taken."""
        address = (canonical_host(host), port)
        if address in self._endpoints:
            raise OSError(f"{address} is already bound")
        endpoint = MemoryTransport(self, address)
        self._endpoints[address] = endpoint
        return endpoint

    def inject(self, data: bytes, source: Address, destination: Address) -> bool:
        """Deliver ``data`` to ``destination`` as if sent from ``source``."""
        endpoint = self._endpoints.get(destination)
        if endpoint is None:
            return False
        try:
            endpoint._inbox_send.send_nowait((data[:RECV_BUFFER_BYTES], source))
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        return True

    def _unbind(self, address: Address) -> None:
        self._endpoints.pop(address, None)


class MemoryTransport(Transport):
    """One endpoint of a :class:`MemoryNetwork`."""

    def __init__(self, network: MemoryNetwork, address: Address) -> None:
        self._network = network
        self._address = address
        self._inbox_send, self._inbox_receive = trio.open_memory_channel[tuple[bytes, Address]](
            MEMORY_QUEUE_DATAGRAMS
        )

    @property
    def local_address(self) -> Address:
        return self._address

    async def send(self, data: bytes, address: Address) -> bool:
        await trio.lowlevel.checkpoint()
        return self._network.inject(data, self._address, address)

    async def receive(self) -> tuple[bytes, Address]:
        return await self._inbox_receive.receive()

    def close(self) -> None:
        self._network._unbind(self._address)
        self._inbox_send.close()
