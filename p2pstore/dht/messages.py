"""The DHT datagram codec and schema: sans-IO, bytes in / typed messages out.

Every datagram is one msgpack map (see ``docs/protocol.md``, DHT section, for the full table)::

    request:  {"v": 1, "t": txid, "y": "q", "q": method, "id": sender, "a": {args}, ["p": pad]}
    reply:    {"v": 1, "t": txid, "y": "r", "q": method, "id": sender, "r": {results}}
    error:    {"v": 1, "t": txid, "y": "e", "q": method, "id": sender, "e": [code, message]}

:func:`decode` checks the size before parsing, parses with hard msgpack limits, then checks every
field's type and size. It never raises: anything malformed comes back as a :class:`Rejection`.
Unknown map keys are ignored (a later version may add optional fields).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import msgpack

from ..errors import ProtocolError
from ..identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES
from .contact import NODE_ID_BYTES, Contact, pack_contact, pack_endpoint, unpack_endpoint
from .records import MAX_NAME_BYTES, MAX_SEQ, MAX_VALUE_BYTES, SignedValue

PROTOCOL_VERSION = 1
"""Version of this message format; a datagram with another ``v`` is dropped."""
MAX_DATAGRAM_BYTES = 1400
"""Largest datagram sent or accepted: fits a 1500-byte MTU under IPv6 + UDP headers with slack."""
TXID_MIN_BYTES = 8
"""Transaction IDs are random; 64 bits make a blind reply forgery a 2**-64 guess."""
TXID_MAX_BYTES = 16
"""Longer transaction IDs buy nothing and cost bytes."""
TOKEN_MIN_BYTES = 4
"""Shortest write token accepted on the wire (ours are longer; see tokens.py)."""
TOKEN_MAX_BYTES = 32
"""Longest write token accepted on the wire."""
MAX_LIST_ITEMS = 32
"""Contacts or providers in one list: more than 20 IPv6 entries could not fit a datagram anyway."""
MAX_MAP_ITEMS = 16
"""Keys in any map: our largest map has 7; the slack allows for optional future fields."""
MAX_STR_BYTES = 512
"""Longest string (error messages are cut to 128 characters, 4 UTF-8 bytes each at most)."""
MAX_ERROR_MESSAGE_CHARS = 128
"""Error messages are for logs; they need no more."""


class Method(StrEnum):
    """The RPC names, as they appear in the ``q`` field."""

    PING = "ping"
    FIND_NODE = "find_node"
    FIND_VALUE = "find_value"
    GET_PROVIDERS = "get_providers"
    STORE = "store"
    ADD_PROVIDER = "add_provider"


class ErrorCode:
    """Codes of error replies."""

    GENERIC = 200
    BAD_TOKEN = 203
    REFUSED = 204
    """The record was valid but not stored (stale sequence number, store full, bad signature)."""


# Request bodies -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Ping:
    """Are you there? Answered with :class:`Pong`."""


@dataclass(frozen=True)
class FindNode:
    """Ask for the k contacts closest to ``target``. Answered with :class:`NodesReply`."""

    target: bytes


@dataclass(frozen=True)
class FindValue:
    """Ask for the value stored under ``key``. Answered with :class:`ValueReply`."""

    key: bytes


@dataclass(frozen=True)
class GetProviders:
    """Ask for providers of ``key``. Answered with :class:`ProvidersReply`."""

    key: bytes


@dataclass(frozen=True)
class Store:
    """Store a signed value; ``token`` must have been issued to the sender's IP."""

    token: bytes
    value: SignedValue


@dataclass(frozen=True)
class AddProvider:
    """Register the sender (its source IP, and ``tcp_port``) as a provider of ``key``."""

    token: bytes
    key: bytes
    tcp_port: int


RequestBody = Ping | FindNode | FindValue | GetProviders | Store | AddProvider

# Reply bodies -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pong:
    """Reply to PING."""


@dataclass(frozen=True)
class NodesReply:
    """Reply to FIND_NODE: closest contacts known to the responder, and a write token."""

    nodes: tuple[Contact, ...]
    token: bytes


@dataclass(frozen=True)
class ProvidersReply:
    """Reply to GET_PROVIDERS. Each provider is a Contact whose ``port`` is its TCP port."""

    nodes: tuple[Contact, ...]
    token: bytes
    providers: tuple[Contact, ...]


@dataclass(frozen=True)
class ValueReply:
    """Reply to FIND_VALUE: the stored value if any, closest contacts, a write token."""

    nodes: tuple[Contact, ...]
    token: bytes
    value: SignedValue | None


@dataclass(frozen=True)
class Ack:
    """Reply to STORE and ADD_PROVIDER: the record is stored."""


@dataclass(frozen=True)
class ErrorReply:
    """The request was understood but refused."""

    code: int
    message: str


ReplyBody = Pong | NodesReply | ProvidersReply | ValueReply | Ack | ErrorReply

_REQUEST_METHOD: dict[type, Method] = {
    Ping: Method.PING,
    FindNode: Method.FIND_NODE,
    FindValue: Method.FIND_VALUE,
    GetProviders: Method.GET_PROVIDERS,
    Store: Method.STORE,
    AddProvider: Method.ADD_PROVIDER,
}
_REPLY_TYPE: dict[Method, type] = {
    Method.PING: Pong,
    Method.FIND_NODE: NodesReply,
    Method.FIND_VALUE: ValueReply,
    Method.GET_PROVIDERS: ProvidersReply,
    Method.STORE: Ack,
    Method.ADD_PROVIDER: Ack,
}


def method_of(body: RequestBody) -> Method:
    """The RPC name of a request body."""
    return _REQUEST_METHOD[type(body)]


@dataclass(frozen=True)
class Request:
    """A decoded request datagram."""

    txid: bytes
    sender_id: bytes
    body: RequestBody

    @property
    def method(self) -> Method:
        """The RPC name."""
        return method_of(self.body)


@dataclass(frozen=True)
class Response:
    """A decoded reply or error datagram, answering a request of ``method``."""

    txid: bytes
    sender_id: bytes
    method: Method
    body: ReplyBody


@dataclass(frozen=True)
class Rejection:
    """A datagram that was dropped: ``reason`` is a short counter name, ``detail`` for logs."""

    reason: str
    detail: str = ""


Message = Request | Response

# Encoding -----------------------------------------------------------------------------------


def _pack(obj: dict[str, Any]) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def _value_to_wire(v: SignedValue) -> dict[str, Any]:
    return {"k": v.public_key, "n": v.name, "s": v.seq, "v": v.value, "sig": v.signature}


def _args_to_wire(body: RequestBody) -> dict[str, Any]:
    if isinstance(body, Ping):
        return {}
    if isinstance(body, FindNode):
        return {"target": body.target}
    if isinstance(body, FindValue | GetProviders):
        return {"key": body.key}
    if isinstance(body, Store):
        return {"token": body.token, "value": _value_to_wire(body.value)}
    return {"token": body.token, "key": body.key, "port": body.tcp_port}


def _check_txid(txid: bytes) -> None:
    if not TXID_MIN_BYTES <= len(txid) <= TXID_MAX_BYTES:
        raise ValueError(f"transaction IDs are {TXID_MIN_BYTES}..{TXID_MAX_BYTES} bytes")


def encode_request(request: Request, *, pad_to: int = 0) -> bytes:
    """The datagram of ``request``, padded with a ``p`` field to at least ``pad_to`` bytes.

    Padding lets a requester that the responder has not verified still get a full-size reply
    under the anti-amplification rule. Raises :class:`ValueError` if a field is out of range.
    """
    _check_txid(request.txid)
    envelope: dict[str, Any] = {
        "v": PROTOCOL_VERSION,
        "t": request.txid,
        "y": "q",
        "q": request.method.value,
        "id": request.sender_id,
        "a": _args_to_wire(request.body),
    }
    data = _pack(envelope)
    if len(data) >= pad_to:
        return data
    pad = max(0, pad_to - len(data) - 5)
    while True:
        envelope["p"] = bytes(pad)
        data = _pack(envelope)
        if len(data) >= pad_to:
            return data
        pad += pad_to - len(data)


def _reply_to_wire(body: ReplyBody) -> dict[str, Any]:
    if isinstance(body, Pong | Ack):
        return {}
    if isinstance(body, ErrorReply):
        raise AssertionError("error replies have no result map")
    out: dict[str, Any] = {"nodes": [pack_contact(c) for c in body.nodes], "token": body.token}
    if isinstance(body, ProvidersReply):
        out["providers"] = [pack_contact(c) for c in body.providers]
    elif isinstance(body, ValueReply) and body.value is not None:
        out["value"] = _value_to_wire(body.value)
    return out


def _encode_response_exact(response: Response) -> bytes:
    _check_txid(response.txid)
    envelope: dict[str, Any] = {
        "v": PROTOCOL_VERSION,
        "t": response.txid,
        "q": response.method.value,
        "id": response.sender_id,
    }
    body = response.body
    if isinstance(body, ErrorReply):
        envelope["y"] = "e"
        envelope["e"] = [body.code, body.message[:MAX_ERROR_MESSAGE_CHARS]]
    else:
        if not isinstance(body, _REPLY_TYPE[response.method]):
            raise ValueError(f"a {type(body).__name__} does not answer {response.method}")
        envelope["y"] = "r"
        envelope["r"] = _reply_to_wire(body)
    return _pack(envelope)


def shrink_reply(body: ReplyBody, excess: int) -> ReplyBody | None:
    """``body`` with enough trailing entries dropped to save about ``excess`` bytes.

    Providers go first, then the farthest nodes, and last the value. ``None`` if nothing is left
    to drop.
    """

    def cut(items: tuple[Contact, ...], need: int) -> tuple[tuple[Contact, ...], int]:
        items_list = list(items)
        while need > 0 and items_list:
            need -= len(pack_contact(items_list.pop())) + 2
        return tuple(items_list), need

    if isinstance(body, ProvidersReply):
        if body.providers:
            providers, _ = cut(body.providers, excess)
            return ProvidersReply(body.nodes, body.token, providers)
        if body.nodes:
            nodes, _ = cut(body.nodes, excess)
            return ProvidersReply(nodes, body.token, ())
    elif isinstance(body, NodesReply):
        if body.nodes:
            nodes, _ = cut(body.nodes, excess)
            return NodesReply(nodes, body.token)
    elif isinstance(body, ValueReply):
        if body.nodes:
            nodes, _ = cut(body.nodes, excess)
            return ValueReply(nodes, body.token, body.value)
        if body.value is not None:
            return ValueReply((), body.token, None)
    return None


def encode_response(response: Response, *, budget: int = MAX_DATAGRAM_BYTES) -> bytes:
    """The datagram of ``response``, trimmed to at most ``budget`` bytes where possible.

    Trimming drops providers first, then the farthest contacts (replies list them closest first),
    then a value. The result may still exceed ``budget`` if nothing is left to drop; the caller
    checks. Raises :class:`ValueError` if a field is out of range.
    """
    data = _encode_response_exact(response)
    body = response.body
    while len(data) > budget:
        smaller = shrink_reply(body, len(data) - budget)
        if smaller is None:
            break
        body = smaller
        data = _encode_response_exact(
            Response(response.txid, response.sender_id, response.method, body)
        )
    return data


def _contacts_size(contacts: tuple[Contact, ...]) -> int:
    return 3 + sum(52 if ":" in c.host else 40 for c in contacts)


def _value_size(v: SignedValue) -> int:
    return 32 + 16 + len(v.name) + len(v.value) + 66 + 20


def estimated_size(message: Request | Response) -> int:
    """Close to (and never below) the size of ``message``'s datagram without padding, computed
    without encoding it (for the simulator, which passes messages as objects)."""
    size = 60 + len(message.txid)
    if isinstance(message, Request):
        body = message.body
        if isinstance(body, FindNode | FindValue | GetProviders):
            return size + 40
        if isinstance(body, Store):
            return size + 10 + len(body.token) + _value_size(body.value)
        if isinstance(body, AddProvider):
            return size + 60 + len(body.token)
        return size
    reply = message.body
    if isinstance(reply, ErrorReply):
        return size + 8 + len(reply.message.encode())
    if isinstance(reply, NodesReply | ProvidersReply | ValueReply):
        size += 20 + len(reply.token) + _contacts_size(reply.nodes)
        if isinstance(reply, ProvidersReply):
            size += 12 + _contacts_size(reply.providers)
        elif isinstance(reply, ValueReply) and reply.value is not None:
            size += 8 + _value_size(reply.value)
    return size


# Decoding -----------------------------------------------------------------------------------


def _bytes(m: dict[str, Any], key: str, lo: int, hi: int) -> bytes:
    v = m.get(key)
    if not isinstance(v, bytes) or not lo <= len(v) <= hi:
        raise ProtocolError(f"field {key!r} must be {lo}..{hi} bytes")
    return v


def _int(m: dict[str, Any], key: str, lo: int, hi: int) -> int:
    v = m.get(key)
    if type(v) is not int or not lo <= v <= hi:
        raise ProtocolError(f"field {key!r} must be an integer in {lo}..{hi}")
    return v


def _map(m: dict[str, Any], key: str) -> dict[str, Any]:
    v = m.get(key)
    if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
        raise ProtocolError(f"field {key!r} must be a map with string keys")
    return v


def _contacts(m: dict[str, Any], key: str) -> tuple[Contact, ...]:
    v = m.get(key)
    if not isinstance(v, list) or len(v) > MAX_LIST_ITEMS:
        raise ProtocolError(f"field {key!r} must be a list of at most {MAX_LIST_ITEMS} contacts")
    out = []
    for item in v:
        if not isinstance(item, bytes):
            raise ProtocolError(f"field {key!r} must hold packed contacts")
        out.append(Contact(*unpack_endpoint(item)))
    return tuple(out)


def _value(m: dict[str, Any]) -> SignedValue:
    return SignedValue(
        public_key=_bytes(m, "k", PUBLIC_KEY_BYTES, PUBLIC_KEY_BYTES),
        name=_bytes(m, "n", 0, MAX_NAME_BYTES),
        seq=_int(m, "s", 0, MAX_SEQ),
        value=_bytes(m, "v", 0, MAX_VALUE_BYTES),
        signature=_bytes(m, "sig", SIGNATURE_BYTES, SIGNATURE_BYTES),
    )


def _request_body(method: Method, a: dict[str, Any]) -> RequestBody:
    if method is Method.PING:
        return Ping()
    if method is Method.FIND_NODE:
        return FindNode(_bytes(a, "target", NODE_ID_BYTES, NODE_ID_BYTES))
    if method is Method.FIND_VALUE:
        return FindValue(_bytes(a, "key", NODE_ID_BYTES, NODE_ID_BYTES))
    if method is Method.GET_PROVIDERS:
        return GetProviders(_bytes(a, "key", NODE_ID_BYTES, NODE_ID_BYTES))
    token = _bytes(a, "token", TOKEN_MIN_BYTES, TOKEN_MAX_BYTES)
    if method is Method.STORE:
        return Store(token, _value(_map(a, "value")))
    return AddProvider(
        token, _bytes(a, "key", NODE_ID_BYTES, NODE_ID_BYTES), _int(a, "port", 1, 0xFFFF)
    )


def _reply_body(method: Method, r: dict[str, Any]) -> ReplyBody:
    if method is Method.PING:
        return Pong()
    if method in (Method.STORE, Method.ADD_PROVIDER):
        return Ack()
    nodes = _contacts(r, "nodes")
    token = _bytes(r, "token", TOKEN_MIN_BYTES, TOKEN_MAX_BYTES)
    if method is Method.FIND_NODE:
        return NodesReply(nodes, token)
    if method is Method.GET_PROVIDERS:
        return ProvidersReply(nodes, token, _contacts(r, "providers"))
    value = _value(_map(r, "value")) if "value" in r else None
    return ValueReply(nodes, token, value)


def _parse(obj: Any) -> Message:
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise ProtocolError("a datagram must be a map with string keys")
    txid = _bytes(obj, "t", TXID_MIN_BYTES, TXID_MAX_BYTES)
    sender = _bytes(obj, "id", NODE_ID_BYTES, NODE_ID_BYTES)
    q = obj.get("q")
    if not isinstance(q, str):
        raise ProtocolError("field 'q' must be a method name")
    try:
        method = Method(q)
    except ValueError:
        raise ProtocolError(f"unknown method {q[:32]!r}") from None
    kind = obj.get("y")
    if kind == "q":
        if "p" in obj and not isinstance(obj["p"], bytes):
            raise ProtocolError("field 'p' must be bytes")
        return Request(txid, sender, _request_body(method, _map(obj, "a")))
    if kind == "r":
        return Response(txid, sender, method, _reply_body(method, _map(obj, "r")))
    if kind == "e":
        e = obj.get("e")
        if (
            not isinstance(e, list)
            or len(e) != 2
            or type(e[0]) is not int
            or not 0 <= e[0] <= 0xFFFF
            or not isinstance(e[1], str)
        ):
            raise ProtocolError("field 'e' must be [code, message]")
        return Response(txid, sender, method, ErrorReply(e[0], e[1][:MAX_ERROR_MESSAGE_CHARS]))
    raise ProtocolError("field 'y' must be 'q', 'r' or 'e'")


def decode(data: bytes) -> Message | Rejection:
    """Parse and validate one datagram. Never raises: malformed input gives a :class:`Rejection`.

    Reasons: ``oversize`` (checked before parsing), ``msgpack`` (not one well-formed msgpack
    object within the limits), ``version`` (another protocol version), ``schema`` (a field is
    missing, of the wrong type or out of range).
    """
    if len(data) > MAX_DATAGRAM_BYTES:
        return Rejection("oversize", f"{len(data)} bytes")
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_bin_len=MAX_DATAGRAM_BYTES,
            max_str_len=MAX_STR_BYTES,
            max_array_len=MAX_LIST_ITEMS,
            max_map_len=MAX_MAP_ITEMS,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises many types (ValueError, ExtraData, StackError...)
        return Rejection("msgpack", type(exc).__name__)
    if isinstance(obj, dict) and (type(obj.get("v")) is not int or obj["v"] != PROTOCOL_VERSION):
        return Rejection("version", "unsupported protocol version")
    try:
        return _parse(obj)
    except ProtocolError as exc:
        return Rejection("schema", str(exc))


def contact_for_wire(node_id: bytes, host: str, port: int) -> Contact:
    """A contact after checking it packs (raises :class:`ValueError` if the IP or port is bad)."""
    pack_endpoint(node_id, host, port)
    return Contact(node_id, host, port)
