"""The datagram codec: roundtrips, garbage never raises, worst-case sizes, trimming, padding."""

from __future__ import annotations

import msgpack
from hypothesis import assume, given
from hypothesis import strategies as st

from p2pstore.dht.contact import (
    Contact,
    canonical_host,
    distance,
    pack_contact,
    unpack_contact,
)
from p2pstore.dht.messages import (
    MAX_DATAGRAM_BYTES,
    TOKEN_MAX_BYTES,
    TXID_MAX_BYTES,
    Ack,
    AddProvider,
    ErrorReply,
    FindNode,
    FindValue,
    GetProviders,
    Method,
    NodesReply,
    Ping,
    Pong,
    ProvidersReply,
    Rejection,
    Request,
    Response,
    Store,
    ValueReply,
    decode,
    encode_request,
    encode_response,
)
from p2pstore.dht.records import MAX_NAME_BYTES, MAX_VALUE_BYTES, SignedValue
from p2pstore.identity import Identity

ids = st.binary(min_size=32, max_size=32)
txids = st.binary(min_size=8, max_size=16)
tokens = st.binary(min_size=4, max_size=32)
ports = st.integers(1, 65535)
ipv4 = st.ip_addresses(v=4).map(lambda a: canonical_host(str(a)))
ipv6 = st.ip_addresses(v=6).map(lambda a: canonical_host(str(a)))
contacts = st.builds(Contact, ids, st.one_of(ipv4, ipv6), ports)
contact_lists = st.lists(contacts, max_size=20).map(tuple)
signed_values = st.builds(
    SignedValue,
    public_key=st.binary(min_size=32, max_size=32),
    name=st.binary(max_size=MAX_NAME_BYTES),
    seq=st.integers(0, 2**63 - 1),
    value=st.binary(max_size=MAX_VALUE_BYTES),
    signature=st.binary(min_size=64, max_size=64),
)
request_bodies = st.one_of(
    st.just(Ping()),
    st.builds(FindNode, ids),
    st.builds(FindValue, ids),
    st.builds(GetProviders, ids),
    st.builds(Store, tokens, signed_values),
    st.builds(AddProvider, tokens, ids, ports),
)


@st.composite
def responses(draw: st.DrawFn) -> Response:
    method = draw(st.sampled_from(list(Method)))
    body: object
    if draw(st.booleans()):
        body = ErrorReply(draw(st.integers(0, 0xFFFF)), draw(st.text(max_size=40)))
    elif method is Method.PING:
        body = Pong()
    elif method in (Method.STORE, Method.ADD_PROVIDER):
        body = Ack()
    elif method is Method.FIND_NODE:
        body = NodesReply(draw(contact_lists), draw(tokens))
    elif method is Method.GET_PROVIDERS:
        body = ProvidersReply(
            draw(contact_lists), draw(tokens), draw(st.lists(contacts, max_size=8).map(tuple))
        )
    else:
        body = ValueReply(
            draw(st.lists(contacts, max_size=8).map(tuple)),
            draw(tokens),
            draw(st.none() | signed_values),
        )
    return Response(draw(txids), draw(ids), method, body)


@given(txids, ids, request_bodies, st.integers(0, 600))
def test_request_roundtrip(txid: bytes, sender: bytes, body: object, pad_to: int) -> None:
    request = Request(txid, sender, body)  # type: ignore[arg-type]
    data = encode_request(request, pad_to=pad_to)
    assert len(data) >= pad_to
    assert decode(data) == request


@given(responses())
def test_response_roundtrip(response: Response) -> None:
    data = encode_response(response, budget=10**6)
    # Every response that fits a datagram comes back intact (bigger ones are trimmed by the
    # sender, which other tests cover, or rejected by the receiver).
    assume(len(data) <= MAX_DATAGRAM_BYTES)
    assert decode(data) == response


@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    result = decode(data)
    assert isinstance(result, Rejection | Request | Response)


json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(json_like)
def test_arbitrary_msgpack_objects_are_rejected_not_raised(obj: object) -> None:
    result = decode(msgpack.packb(obj, use_bin_type=True))
    assert isinstance(result, Rejection)


@given(txids, ids, request_bodies, st.data())
def test_mutated_fields_never_raise(
    txid: bytes, sender: bytes, body: object, data: st.DataObject
) -> None:
    wire = msgpack.unpackb(encode_request(Request(txid, sender, body)), raw=False)  # type: ignore[arg-type]
    key = data.draw(st.sampled_from(sorted(wire)))
    wire[key] = data.draw(json_like)
    result = decode(msgpack.packb(wire, use_bin_type=True))
    assert isinstance(result, Rejection | Request)


def test_oversize_is_rejected_before_parsing() -> None:
    assert decode(b"\x00" * (MAX_DATAGRAM_BYTES + 1)) == Rejection("oversize", "1401 bytes")


def test_wrong_version_and_bool_version_are_rejected() -> None:
    wire = msgpack.unpackb(encode_request(Request(bytes(8), bytes(32), Ping())), raw=False)
    for version in (2, True, "1"):
        wire["v"] = version
        result = decode(msgpack.packb(wire, use_bin_type=True))
        assert isinstance(result, Rejection)
        assert result.reason == "version"


def test_short_txid_is_rejected() -> None:
    wire = msgpack.unpackb(encode_request(Request(bytes(8), bytes(32), Ping())), raw=False)
    wire["t"] = bytes(7)
    result = decode(msgpack.packb(wire, use_bin_type=True))
    assert isinstance(result, Rejection)
    assert result.reason == "schema"


def _worst_ipv6(n: int) -> tuple[Contact, ...]:
    return tuple(
        Contact(bytes([i]) * 32, f"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff{i:02x}", 65535)
        for i in range(n)
    )


def test_twenty_ipv6_contacts_fit_one_datagram_in_the_worst_case() -> None:
    txid = b"\xff" * TXID_MAX_BYTES
    token = b"\xff" * TOKEN_MAX_BYTES
    nodes = _worst_ipv6(20)
    for method, body in (
        (Method.FIND_NODE, NodesReply(nodes, token)),
        (Method.GET_PROVIDERS, ProvidersReply(nodes, token, ())),
        (Method.FIND_VALUE, ValueReply(nodes, token, None)),
    ):
        data = encode_response(Response(txid, b"\xff" * 32, method, body), budget=10**6)
        assert len(data) <= MAX_DATAGRAM_BYTES, (method, len(data))
        assert decode(data) == Response(txid, b"\xff" * 32, method, body)


def test_largest_store_request_fits_one_datagram() -> None:
    value = SignedValue(
        b"\xff" * 32, b"\xff" * MAX_NAME_BYTES, 2**63 - 1, b"\xff" * MAX_VALUE_BYTES, b"\xff" * 64
    )
    data = encode_request(Request(b"\xff" * 16, b"\xff" * 32, Store(b"\xff" * 32, value)))
    assert len(data) <= MAX_DATAGRAM_BYTES


@given(st.integers(60, MAX_DATAGRAM_BYTES))
def test_trimming_respects_the_budget_and_keeps_the_closest(budget: int) -> None:
    nodes = _worst_ipv6(20)
    providers = _worst_ipv6(10)
    response = Response(
        bytes(8), bytes(32), Method.GET_PROVIDERS, ProvidersReply(nodes, bytes(16), providers)
    )
    data = encode_response(response, budget=budget)
    decoded = decode(data)
    assert isinstance(decoded, Response)
    body = decoded.body
    assert isinstance(body, ProvidersReply)
    if len(data) > budget:
        assert body.nodes == ()
        assert body.providers == ()
    assert body.nodes == nodes[: len(body.nodes)]
    assert body.providers == providers[: len(body.providers)]
    if body.providers:
        assert body.nodes == nodes, "providers are dropped before nodes"


def test_signed_value_roundtrip_keeps_a_valid_signature() -> None:
    ident = Identity.generate()
    value = SignedValue.sign(ident, b"name", 7, b"payload")
    data = encode_request(Request(bytes(8), ident.node_id, Store(bytes(16), value)))
    decoded = decode(data)
    assert isinstance(decoded, Request)
    assert isinstance(decoded.body, Store)
    assert decoded.body.value.verify()


@given(contacts)
def test_contact_packing_roundtrip(contact: Contact) -> None:
    packed = pack_contact(contact)
    assert len(packed) in (38, 50)
    assert unpack_contact(packed) == contact


@given(ids, ids, ids)
def test_xor_metric(a: bytes, b: bytes, c: bytes) -> None:
    assert distance(a, a) == 0
    assert distance(a, b) == distance(b, a)
    assert (distance(a, b) == 0) == (a == b)
    assert distance(a, c) <= distance(a, b) + distance(b, c)
    # Unidirectionality: for a given point and distance there is exactly one other point.
    d = distance(a, b)
    assert (int.from_bytes(a, "big") ^ d).to_bytes(32, "big") == b
