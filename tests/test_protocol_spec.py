"""``docs/protocol.md`` against the code, so the specification cannot drift.

Every hex dump in the document must be what our code produces and accepts; every limit it states
must be the constant the code enforces; and the erasure code, the manifest's canonical encoding
and the index levels are re-implemented here *from the document's words alone* (GF(256) with the
stated polynomial and generator, msgpack's shortest forms, "half a chunk") and compared with the
code on examples and on random inputs.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import msgpack
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore import chunking, manifest
from p2pstore.chunking import Layout
from p2pstore.dht import messages as dht
from p2pstore.dht.config import DhtConfig
from p2pstore.dht.records import MAX_NAME_BYTES as DHT_NAME_BYTES
from p2pstore.dht.records import (
    MAX_SEQ,
    MAX_VALUE_BYTES,
    SignedValue,
    signature_input,
    subnet_of,
    value_key,
)
from p2pstore.dht.tokens import TOKEN_BYTES
from p2pstore.erasure import ReedSolomon
from p2pstore.errors import HandshakeError, ManifestError, ProtocolError
from p2pstore.identity import Identity
from p2pstore.manifest import Manifest, ManifestRoot
from p2pstore.store import ChunkStore
from p2pstore.transfer.download import bitmap_indices
from p2pstore.wire import client as wire_client
from p2pstore.wire import config as wire_config
from p2pstore.wire import holdings as wire_holdings
from p2pstore.wire import messages as wire
from p2pstore.wire import server as wire_server
from p2pstore.wire.framing import FrameDecoder, encode_frame
from p2pstore.wire.handshake import (
    FEATURES,
    HandshakeRefused,
    InitiatorHandshake,
    ResponderHandshake,
)
from p2pstore.wire.seal import TAG_BYTES, Opener, Sealer

DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
DOC = DOC_PATH.read_text(encoding="utf-8")


# -- reading the document ------------------------------------------------------------------------


def dump(label: str) -> bytes:
    """The bytes of the document's hex dump ``label (N bytes) =`` (N is checked too)."""
    pattern = rf"^{re.escape(label)} \((\d+) bytes\) =\n((?:  [0-9a-f]+(?: [0-9a-f]+)*\n)+)"
    found = re.findall(pattern, DOC, re.M)
    assert len(found) == 1, f"expected one hex dump {label!r} in protocol.md, found {len(found)}"
    count, lines = found[0]
    data = bytes.fromhex("".join(lines.split()))
    assert len(data) == int(count), f"{label}: the dump has {len(data)} bytes, says {count}"
    return data


def hex_value(label: str) -> bytes:
    """The 32-byte value on the document's line ``label   <64 hex digits>``."""
    found = re.findall(rf"^\s*{re.escape(label)}\s+([0-9a-f]{{64}})\s*$", DOC, re.M)
    assert len(found) == 1, f"expected one line {label!r} <64 hex> in protocol.md"
    return bytes.fromhex(found[0])


_DASHES = str.maketrans({"\u2013": "-", "\u2212": "-"})  # en dash, minus sign


def _normal(text: str) -> str:
    return " ".join(text.translate(_DASHES).split())


def doc_says(text: str) -> None:
    """The document contains ``text``, ignoring how whitespace is laid out (reflowing the page
    is harmless) and writing its en dashes and minus signs as ``-``."""
    assert _normal(text) in _normal(DOC), f"protocol.md no longer says {text!r}"


# -- GF(256) and Reed-Solomon, from the document's definitions ---------------------------------

PRIM = 0x11D  # "GF(2)[x] / (x^8 + x^4 + x^3 + x^2 + 1), polynomial 0x11d"
ALPHA = 2  # "alpha = 2 (the element x)"


def gf_mul(a: int, b: int) -> int:
    """Carry-less multiplication reduced by PRIM (shift and add, no tables)."""
    result = 0
    while b:
        if b & 1:
            result ^= a
        b >>= 1
        a <<= 1
        if a & 0x100:
            a ^= PRIM
    return result


MUL = [[gf_mul(a, b) for b in range(256)] for a in range(256)]


def gf_pow(a: int, n: int) -> int:
    result = 1
    for _ in range(n):
        result = MUL[result][a]
    return result


def generator_poly(m: int) -> list[int]:
    """g(x) = (x - alpha^0) ... (x - alpha^(m-1)), coefficients highest degree first."""
    g = [1]
    for r in range(m):
        root = gf_pow(ALPHA, r)
        shifted = [*g, 0]  # g(x) * x
        scaled = [0, *(MUL[c][root] for c in g)]  # g(x) * root
        g = [a ^ b for a, b in zip(shifted, scaled, strict=True)]
    return g


def column_parity(column: list[int], m: int) -> list[int]:
    """p_0 .. p_(m-1): the remainder of M(x) * x^m mod g(x), M's highest coefficient = share 0."""
    g = generator_poly(m)
    rem = [*column, *([0] * m)]
    for i in range(len(column)):
        coef = rem[i]
        if coef:
            for j in range(1, m + 1):
                rem[i + j] ^= MUL[g[j]][coef]
    return rem[len(column) :]


def spec_parity(shares: list[bytes], m: int) -> list[bytes]:
    """The m parity chunks of k equal-length shares, byte position by byte position."""
    length = len(shares[0])
    out = [bytearray(length) for _ in range(m)]
    for b in range(length):
        for j, p in enumerate(column_parity([s[b] for s in shares], m)):
            out[j][b] = p
    return [bytes(p) for p in out]


def spec_matrix(k: int, m: int) -> list[list[int]]:
    """G[j][i]: the parity of the unit message e_i (= x^(m+k-1-i) mod g(x))."""
    columns = [column_parity([int(i == t) for t in range(k)], m) for i in range(k)]
    return [[columns[i][j] for i in range(k)] for j in range(m)]


def spec_stripe_shares(data: bytes, cs: int, k: int, s: int) -> tuple[list[bytes], list[bytes]]:
    """(data chunks, the k padded shares) of stripe ``s`` of ``data``, by the document's rules."""
    start = s * k * cs
    part = data[start : start + k * cs]
    chunks = [part[i : i + cs] for i in range(0, len(part), cs)]
    length = min(cs, len(part))
    shares = [c + bytes(length - len(c)) for c in chunks]
    shares += [bytes(length)] * (k - len(chunks))
    return chunks, shares


# -- the manifest's canonical msgpack, from the document's rules -----------------------------


def mp_uint(v: int) -> bytes:
    if v < 0x80:
        return bytes([v])
    for tag, width in ((0xCC, 1), (0xCD, 2), (0xCE, 4), (0xCF, 8)):
        if v < 1 << (8 * width):
            return bytes([tag]) + v.to_bytes(width, "big")
    raise ValueError(v)


def mp_str(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) <= 31:
        return bytes([0xA0 | len(raw)]) + raw
    if len(raw) <= 255:
        return b"\xd9" + bytes([len(raw)]) + raw
    return b"\xda" + len(raw).to_bytes(2, "big") + raw  # only to build too-long names


def mp_bin(raw: bytes) -> bytes:
    n = len(raw)
    if n < 1 << 8:
        return b"\xc4" + n.to_bytes(1, "big") + raw
    if n < 1 << 16:
        return b"\xc5" + n.to_bytes(2, "big") + raw
    return b"\xc6" + n.to_bytes(4, "big") + raw


def spec_root(name: str, size: int, cs: int, k: int, m: int, depth: int, table: bytes) -> bytes:
    fields = b"".join(mp_uint(v) for v in (size, cs, k, m, depth))
    return b"\x98" + mp_uint(1) + mp_str(name) + fields + mp_bin(table)


def spec_total_chunks(size: int, cs: int, k: int, m: int) -> int:
    """Every stripe but the last holds k data chunks; the last holds ceil(rest / cs)."""
    stripe = k * cs
    if size == 0:
        return 0
    full, rest = divmod(size, stripe)
    if rest == 0:
        return full * (k + m)
    return full * (k + m) + -(-rest // cs) + m


def spec_level_lengths(chunks: int, cs: int) -> list[int]:
    """Byte lengths of levels 0..depth: cut while longer than half a chunk."""
    capacity = cs // 2 // 32 * 32
    lengths = [32 * chunks]
    while lengths[-1] > capacity:
        lengths.append(32 * -(-lengths[-1] // cs))
    return lengths


# -- erasure code --------------------------------------------------------------------------------


def test_erasure_examples_in_the_document() -> None:
    doc_says("k = 3, m = 2: g(x) = x² + 3x + 2, G = [[15, 7, 3], [14, 6, 2]]")
    assert generator_poly(2) == [1, 3, 2]
    assert spec_matrix(3, 2) == [[15, 7, 3], [14, 6, 2]]
    assert [list(row) for row in ReedSolomon(3, 2).parity_matrix] == [[15, 7, 3], [14, 6, 2]]

    data_line = re.search(r"shares 0\.\.2 \(data\)\s+([0-9a-f ]+)\n", DOC)
    parity_line = re.search(r"shares 3\.\.4 \(parity\)\s+([0-9a-f ]+)\n", DOC)
    assert data_line
    assert parity_line
    data = [bytes.fromhex(h) for h in data_line.group(1).split()]
    parity = [bytes.fromhex(h) for h in parity_line.group(1).split()]
    assert spec_parity(data, 2) == parity
    assert ReedSolomon(3, 2).encode(data) == parity
    doc_says("RSCodec(2).encode(01 05 09) = 01 05 09 0f 02")
    assert column_parity([1, 5, 9], 2) == [0x0F, 0x02]

    short = re.search(r"shares 0\.\.2\s{2,}([0-9a-f ]+?)\s{2,}\(share 1 padded", DOC)
    short_parity = re.search(r"parity chunks 0\.\.1\s+([0-9a-f ]+)\n", DOC)
    assert short
    assert short_parity
    doc_says("data chunk 0 = 010203, data chunk 1 = 04 (d_s = 2, L_s = 3)")
    shares = [bytes.fromhex(h) for h in short.group(1).split()]
    assert shares == [b"\x01\x02\x03", b"\x04\x00\x00", b"\x00\x00\x00"]
    expected = [bytes.fromhex(h) for h in short_parity.group(1).split()]
    assert spec_parity(shares, 2) == expected == ReedSolomon(3, 2).encode(shares)


@settings(max_examples=40, deadline=None)
@given(
    k=st.integers(1, 12),
    m=st.integers(0, 6),
    length=st.integers(1, 40),
    seed=st.binary(min_size=1, max_size=8),
)
def test_erasure_code_is_the_specified_one(k: int, m: int, length: int, seed: bytes) -> None:
    stream = hashlib.shake_256(seed).digest(k * length)
    shares = [stream[i * length : (i + 1) * length] for i in range(k)]
    assert ReedSolomon(k, m).encode(shares) == spec_parity(shares, m)
    assert [list(r) for r in ReedSolomon(k, m).parity_matrix] == spec_matrix(k, m)


def test_erasure_code_matches_reedsolo() -> None:
    reedsolo = pytest.importorskip("reedsolo")
    for k, m, column in ((3, 2, [1, 5, 9]), (4, 2, [200, 0, 17, 255]), (10, 4, list(range(10)))):
        codeword = bytes(reedsolo.RSCodec(m).encode(bytes(column)))
        assert list(codeword[k:]) == column_parity(column, m)


async def test_store_pads_short_stripes_as_specified(tmp_path: Path) -> None:
    """A real put: every stored parity chunk equals the from-the-spec parity (zero padding of the
    short last data chunk, all-zero absent shares, parity as long as the first data chunk)."""
    cs, k, m = chunking.MIN_CHUNK_SIZE, 3, 2
    data = hashlib.shake_256(b"short stripes").digest(3 * cs + 100)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    with ChunkStore.open(tmp_path / "store") as store:
        man = await store.put_file(path, chunk_size=cs, k=k, m=m)
        assert len(man.stripes) == 2
        for s in range(2):
            chunks, shares = spec_stripe_shares(data, cs, k, s)
            parity = spec_parity(shares, m)
            d = len(chunks)
            ids = man.stripes[s]
            assert len(ids) == d + m
            assert list(ids[:d]) == [hashlib.sha256(c).digest() for c in chunks]
            for j, p in enumerate(parity):
                assert len(p) == len(chunks[0])
                assert await store.get_chunk(ids[d + j]) == p
                assert man.erasure_index(s, d + j) == k + j
                assert man.chunk_length(s, d + j) == len(chunks[0])
        assert man.chunk_length(1, 0) == 100


# -- manifest --------------------------------------------------------------------------------


EXAMPLE_NAME, EXAMPLE_SIZE, EXAMPLE_CS, EXAMPLE_K, EXAMPLE_M = "hello.bin", 100_000, 65_536, 2, 1


def example_file() -> bytes:
    doc_says("a 100,000-byte file named `hello.bin` whose byte `i` is `i mod 251`")
    return bytes(i % 251 for i in range(EXAMPLE_SIZE))


def test_manifest_example_in_the_document() -> None:
    data = example_file()
    chunks, shares = spec_stripe_shares(data, EXAMPLE_CS, EXAMPLE_K, 0)
    parity = spec_parity(shares, EXAMPLE_M)
    assert parity[0] == bytes(a ^ b for a, b in zip(shares[0], shares[1], strict=True))
    ids = [hashlib.sha256(c).digest() for c in (*chunks, *parity)]
    assert ids == [hex_value("data chunk 0"), hex_value("data chunk 1"), hex_value("parity 0")]

    root = dump("root")
    assert root == spec_root(
        EXAMPLE_NAME, EXAMPLE_SIZE, EXAMPLE_CS, EXAMPLE_K, EXAMPLE_M, 0, b"".join(ids)
    )
    ours = Manifest.from_table(
        EXAMPLE_NAME, EXAMPLE_SIZE, EXAMPLE_CS, EXAMPLE_K, EXAMPLE_M, b"".join(ids)
    )
    assert ours.encode_root() == root
    file_id = re.search(r"file ID = SHA-256\(root\) = ([0-9a-f]{64})", DOC)
    assert file_id
    assert ours.file_id == bytes.fromhex(file_id.group(1)) == hashlib.sha256(root).digest()

    decoded = ManifestRoot.decode(root)
    assert (decoded.name, decoded.size, decoded.chunk_size, decoded.k, decoded.m) == (
        EXAMPLE_NAME,
        EXAMPLE_SIZE,
        EXAMPLE_CS,
        EXAMPLE_K,
        EXAMPLE_M,
    )
    assert decoded.depth == 0
    assert decoded.table == b"".join(ids)


@pytest.mark.parametrize(
    ("what", "old", "new"),
    [
        ("k as uint 8", b"\x02\x01\x00\xc4", b"\xcc\x02\x01\x00\xc4"),
        ("size as uint 64", b"\xce\x00\x01\x86\xa0", b"\xcf\x00\x00\x00\x00\x00\x01\x86\xa0"),
        ("size as int 32", b"\xce\x00\x01\x86\xa0", b"\xd2\x00\x01\x86\xa0"),
        ("name as str 8", b"\xa9hello.bin", b"\xd9\x09hello.bin"),
        ("table as bin 16", b"\x00\xc4\x60", b"\x00\xc5\x00\x60"),
        ("version 2", b"\x98\x01", b"\x98\x02"),
        ("depth 1", b"\x02\x01\x00\xc4", b"\x02\x01\x01\xc4"),
    ],
)
def test_non_canonical_or_wrong_roots_are_refused(what: str, old: bytes, new: bytes) -> None:
    root = dump("root")
    assert root.count(old) == 1, what
    with pytest.raises(ManifestError):
        ManifestRoot.decode(root.replace(old, new))


def test_trailing_bytes_after_the_root_are_refused() -> None:
    with pytest.raises(ManifestError):
        ManifestRoot.decode(dump("root") + b"\x00")


@settings(max_examples=60, deadline=None)
@given(
    name=st.text(
        st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\"),
        min_size=1,
        max_size=40,
    ).filter(lambda n: n not in (".", "..") and len(n.encode()) <= 255),
    size=st.integers(0, 40 * chunking.MIN_CHUNK_SIZE),
    k=st.integers(1, 6),
    m=st.integers(0, 3),
)
def test_canonical_encoding_is_msgpack_shortest_forms(name: str, size: int, k: int, m: int) -> None:
    cs = chunking.MIN_CHUNK_SIZE
    chunks = spec_total_chunks(size, cs, k, m)
    assert chunks == Layout(cs, k, m).total_chunks(size)
    table = hashlib.shake_256(name.encode()).digest(32 * chunks)
    ours = Manifest.from_table(name, size, cs, k, m, table)
    assert ours.encode_root() == spec_root(name, size, cs, k, m, 0, table)


def test_index_chunks_start_past_half_a_chunk() -> None:
    doc_says("half a chunk: 16,384 IDs at 1 MiB chunks, 1,024 at 64 KiB")
    for shift in range(16, 25):
        cs = 1 << shift
        assert manifest.root_table_capacity(cs) == cs // 2
    assert manifest.root_table_capacity(1 << 20) // 32 == 16_384
    assert manifest.root_table_capacity(1 << 16) // 32 == 1_024

    doc_says("at 64 KiB chunks a file of 1,024 chunks has `depth` 0, and one of 1,025 chunks has")
    doc_says("`depth` 1: one index chunk (the 32,800-byte stripe table) and a 32-byte root table.")
    cs = 1 << 16
    flat = Manifest.from_table("a", 1024 * cs, cs, 1, 0, bytes(32 * 1024))
    assert ManifestRoot.decode(flat.encode_root()).depth == 0
    assert flat.index_chunks() == []
    deep = Manifest.from_table("a", 1025 * cs, cs, 1, 0, bytes(32 * 1025))
    root = ManifestRoot.decode(deep.encode_root())
    ((index_id, index_bytes),) = deep.index_chunks()
    assert root.depth == 1
    assert len(index_bytes) == 32_800
    assert root.table == index_id
    assert index_bytes == deep.table_bytes()
    assert spec_level_lengths(1025, cs) == [32_800, 32]


@pytest.mark.parametrize(
    ("size", "cs", "k", "m"),
    [
        (manifest.MAX_FILE_SIZE, 1 << 16, 1, 0),  # the deepest possible manifest: depth 3
        (manifest.MAX_FILE_SIZE, 1 << 20, 4, 2),
        (10**13, 1 << 16, 10, 4),
        (3 * 10**9, 1 << 16, 4, 2),
        (12 * 2**30, 1 << 20, 4, 2),
    ],
)
def test_depth_and_root_table_follow_the_level_rule(size: int, cs: int, k: int, m: int) -> None:
    """Big files need not be built: a root is checked against size, cs, k and m alone."""
    lengths = spec_level_lengths(spec_total_chunks(size, cs, k, m), cs)
    depth = len(lengths) - 1
    assert depth <= manifest.MAX_DEPTH
    table = bytes(lengths[-1])
    ManifestRoot.decode(spec_root("big", size, cs, k, m, depth, table))
    for bad_depth, bad_table in ((depth + 1, table), (depth, table + bytes(32))):
        if bad_depth <= manifest.MAX_DEPTH:
            with pytest.raises(ManifestError):
                ManifestRoot.decode(spec_root("big", size, cs, k, m, bad_depth, bad_table))
    if depth > 0:
        with pytest.raises(ManifestError):
            ManifestRoot.decode(spec_root("big", size, cs, k, m, depth - 1, table))


def test_manifest_limits_are_the_codes() -> None:
    doc_says("| root bytes | at most 16 MiB (checked before parsing)")
    assert manifest.MAX_ROOT_BYTES == 16 * 2**20
    doc_says("| `size` | int, 0 … 2⁵⁰ (1 PiB) |")
    assert manifest.MAX_FILE_SIZE == 2**50
    doc_says("a power of two from 65,536 (64 KiB) to 16,777,216 (16 MiB)")
    assert (chunking.MIN_CHUNK_SIZE, chunking.MAX_CHUNK_SIZE) == (65_536, 16_777_216)
    doc_says("`k ≥ 1`, `m ≥ 0`, `k + m ≤ 255`")
    assert chunking.MAX_SHARES == 255
    doc_says("| `depth` | int, 0 … 4,")
    assert manifest.MAX_DEPTH == 4
    doc_says("str of 1-255 UTF-8 bytes")
    assert manifest.MAX_NAME_BYTES == 255

    def root(name: str = "n", size: int = 0, cs: int = 1 << 16, k: int = 1, m: int = 0) -> bytes:
        return spec_root(name, size, cs, k, m, 0, b"")

    accepted = [
        root(),
        root(k=254, m=1),
        root(cs=1 << 24),
        root(name="é" * 127 + "x"),  # 255 bytes
        root(name="a\u0080b"),  # only C0 controls and DEL are refused
    ]
    for raw in accepted:
        ManifestRoot.decode(raw)
    refused = [
        root(k=255, m=1),
        root(k=0),
        root(cs=1 << 15),
        root(cs=1 << 25),
        root(cs=3 << 16),
        root(name="é" * 128),  # 256 bytes
        root(name=""),
        root(name="."),
        root(name=".."),
        root(name="a/b"),
        root(name="a\\b"),
        root(name="a\x00b"),
        root(name="a\x1fb"),
        root(name="a\x7fb"),
        root(size=manifest.MAX_FILE_SIZE + 1),
        spec_root("n", 0, 1 << 16, 1, 0, manifest.MAX_DEPTH + 1, b""),
    ]
    for raw in refused:
        with pytest.raises(ManifestError):
            ManifestRoot.decode(raw)


def spec_coding_parameters(d: int, k: int, m: int) -> tuple[int, int]:
    """The document's rule for the (k, m) a file of ``d`` data chunks is coded with."""
    if 2 <= d < k and m >= 1:
        return d, max(1, math.ceil(m * d / k))
    return k, m


def test_small_files_are_coded_with_proportional_parity() -> None:
    doc_says("if `2 ≤ d < k` (less than one stripe, at least two chunks) and `m ≥ 1`")
    doc_says("**`k = d`** and **`m = max(1, ceil(m × d / k))`**")  # noqa: RUF001
    doc_says("a 2-chunk file gets `k` = 2, `m` = 1")
    doc_says("a 3-chunk file gets `k` = 3, `m` = 2")
    cs = chunking.MIN_CHUNK_SIZE
    for k in range(1, 13):
        for m in range(0, 7):
            for d in range(0, 15):
                for size in {max(0, (d - 1) * cs + 1), d * cs}:
                    layout = Layout(cs, k, m).for_size(size)
                    assert (layout.k, layout.m) == spec_coding_parameters(d, k, m), (d, k, m)
    assert spec_coding_parameters(2, 4, 2) == (2, 1)
    assert spec_coding_parameters(3, 4, 2) == (3, 2)
    assert (chunking.DEFAULT_K, chunking.DEFAULT_M) == (4, 2)
    # Not a validity rule: the same 2-chunk file coded with k = 4, m = 2 (one short stripe).
    size = EXAMPLE_SIZE
    table = bytes(32 * spec_total_chunks(size, cs, 4, 2))
    decoded = ManifestRoot.decode(spec_root("two", size, cs, 4, 2, 0, table))
    assert (decoded.k, decoded.m) == (4, 2)


async def test_the_example_file_is_what_the_default_settings_store(tmp_path: Path) -> None:
    doc_says("(what the default `k` = 4, `m` = 2 become for a file of 2 chunks)")
    path = tmp_path / EXAMPLE_NAME
    path.write_bytes(example_file())
    with ChunkStore.open(tmp_path / "store") as store:
        man = await store.put_file(
            path, chunk_size=EXAMPLE_CS, k=chunking.DEFAULT_K, m=chunking.DEFAULT_M
        )
    assert (man.k, man.m) == (EXAMPLE_K, EXAMPLE_M)
    assert man.encode_root() == dump("root")


# -- HAVE bitmaps ------------------------------------------------------------------------------


async def test_bitmap_bit_order(tmp_path: Path) -> None:
    doc_says(
        "bit 0 is the **least significant** (value 1): chunks 0-7 are `01 02 04 … 80` of byte 0"
    )
    chunks = [f"chunk {i}".encode() for i in range(10)]
    ids = [hashlib.sha256(c).digest() for c in chunks]
    cs = chunking.MIN_CHUNK_SIZE
    # Ten one-chunk stripes (k = 1, m = 0); only presence matters to a bitmap.
    man = Manifest.from_table("ten", 10 * cs, cs, 1, 0, b"".join(ids))
    with ChunkStore.open(tmp_path / "store") as store:
        await store.add_manifest(man)
        assert await store.have_bitmap(man.file_id) == b"\x00\x00"
        for i in (0, 7, 9):
            await store.put_chunk(ids[i], chunks[i])
        assert await store.have_bitmap(man.file_id) == b"\x81\x02"
        assert await store.have_bitmap(hashlib.sha256(b"unknown").digest()) is None
    # The receiver's rules: missing bytes are 0, bits >= n and extra bytes are ignored.
    assert bitmap_indices(b"\x81\x02", 10) == [0, 7, 9]
    assert bitmap_indices(b"\x81", 10) == [0, 7]
    assert bitmap_indices(b"\x81\xff\xff", 10) == [0, 7, 8, 9]


# -- DHT ------------------------------------------------------------------------------------


def test_dht_ping_examples() -> None:
    txid, sender, replier = bytes.fromhex("0102030405060708"), bytes(range(32)), b"\xaa" * 32
    doc_says("a `ping` from node ID `00 01 … 1f` with `t` = `0102030405060708`")
    request = dump("ping request")
    assert dht.encode_request(dht.Request(txid, sender, dht.Ping())) == request
    decoded = dht.decode(request)
    assert decoded == dht.Request(txid, sender, dht.Ping())
    reply = dump("ping reply")
    ours = dht.encode_response(dht.Response(txid, replier, dht.Method.PING, dht.Pong()))
    assert ours == reply
    assert dht.decode(reply) == dht.Response(txid, replier, dht.Method.PING, dht.Pong())


def test_dht_unknown_keys_ignored_and_trailing_bytes_refused() -> None:
    request = dump("ping request")
    body = msgpack.unpackb(request)
    body["zz"] = 1
    body["a"]["yy"] = b"x"
    assert isinstance(dht.decode(msgpack.packb(body, use_bin_type=True)), dht.Request)
    assert isinstance(dht.decode(request + b"\x00"), dht.Rejection)
    body = msgpack.unpackb(request)
    body["p"] = "not bin"
    assert isinstance(dht.decode(msgpack.packb(body, use_bin_type=True)), dht.Rejection)


def test_dht_padding_pads_the_datagram_not_the_field() -> None:
    pad = math.ceil(dht.MAX_DATAGRAM_BYTES / DhtConfig().amplification_factor)
    assert pad == 467
    doc_says("the **whole datagram** is at least ⌈1400 / 3⌉ = 467 bytes (ours are exactly 467)")
    nid = bytes(range(32))
    for tlen in range(dht.TXID_MIN_BYTES, dht.TXID_MAX_BYTES + 1):
        for body in (
            dht.FindNode(bytes(32)),
            dht.GetProviders(bytes(32)),
            dht.FindValue(bytes(32)),
        ):
            datagram = dht.encode_request(dht.Request(bytes(tlen), nid, body), pad_to=pad)
            assert len(datagram) == pad
    datagram = dht.encode_request(dht.Request(bytes(8), nid, dht.FindNode(bytes(32))), pad_to=pad)
    held = re.search(r"for a `find_node` with an 8-byte `t`, `p`\s+holds (\d+) bytes", DOC)
    assert held
    padding = msgpack.unpackb(datagram)["p"]
    assert padding == bytes(int(held.group(1)))
    assert b"\xc5\x01\x5d" + padding in datagram


def test_dht_limits_are_the_codes() -> None:
    doc_says("| ≤ 1400 bytes | fits a 1500-byte MTU")
    assert dht.MAX_DATAGRAM_BYTES == 1400
    doc_says("| transaction ID `t` | 8-16 bytes, random (we send 8)")
    assert (dht.TXID_MIN_BYTES, dht.TXID_MAX_BYTES) == (8, 16)
    doc_says("| any msgpack `str`, map keys included | ≤ 512 bytes (UTF-8) |")
    doc_says("| error messages are cut to 128 characters |")
    assert (dht.MAX_STR_BYTES, dht.MAX_ERROR_MESSAGE_CHARS) == (512, 128)
    doc_says("| any array | ≤ 32 items |")
    doc_says("| any map | ≤ 16 keys |")
    assert (dht.MAX_LIST_ITEMS, dht.MAX_MAP_ITEMS) == (32, 16)
    doc_says("| write token | 4-32 bytes on the wire (we issue 16) |")
    assert (dht.TOKEN_MIN_BYTES, dht.TOKEN_MAX_BYTES, TOKEN_BYTES) == (4, 32, 16)
    doc_says("| value name | 0-64 bytes |")
    doc_says("| value payload | 0-512 bytes |")
    doc_says("| `seq` | 0 … 2⁶³-1 |")
    assert (DHT_NAME_BYTES, MAX_VALUE_BYTES, MAX_SEQ) == (64, 512, 2**63 - 1)
    doc_says(
        "Error codes: `200` generic, `203` invalid or expired write token (a `store` or "
        "`add_provider` whose token was not issued to its source IP), `204` record refused"
    )
    codes = dht.ErrorCode
    assert (codes.GENERIC, codes.BAD_TOKEN, codes.REFUSED) == (200, 203, 204)


# -- chunk protocol: framing, messages, limits -------------------------------------------------


def test_frame_limits_are_inclusive_and_exclude_the_prefix() -> None:
    doc_says("| the four handshake frames | `L` ≤ 1024 |")
    assert wire_config.HANDSHAKE_MAX_FRAME_BYTES == 1024
    doc_says("16 ≤ `L` ≤ 16,842,752 (largest chunk + 64 KiB = 16 MiB + 64 KiB)")
    limit = wire_config.WireConfig().max_frame_bytes
    assert limit == 16_842_752 == wire_config.MAX_CHUNK_BYTES + wire_config.FRAME_OVERHEAD_BYTES
    assert TAG_BYTES == 16

    at_limit = encode_frame(bytes(1024))
    assert len(at_limit) == 1028
    assert FrameDecoder(1024).feed(at_limit) == [bytes(1024)]
    with pytest.raises(ProtocolError):
        FrameDecoder(1024).feed(encode_frame(bytes(1025))[:4])
    FrameDecoder(limit).feed(limit.to_bytes(4, "big"))  # a header at the limit waits for its body
    with pytest.raises(ProtocolError):
        FrameDecoder(limit).feed((limit + 1).to_bytes(4, "big"))
    with pytest.raises(ProtocolError):
        Opener(bytes(32)).open(bytes(TAG_BYTES - 1))


def test_message_sizes_in_the_document() -> None:
    codec = wire.MessageCodec()
    zero = bytes(32)
    sizes = {
        "GET of one ID": codec.encode(wire.Get(1, (zero,))),
        "MISSING": codec.encode(wire.Missing(1, zero)),
        "HAVE": codec.encode(wire.Have(1, zero)),
        "ACK": codec.encode(wire.Ack(1, zero, True)),
        "ERROR": codec.encode(wire.Error(1, 1, "")),
        "CANCEL": codec.encode(wire.Cancel(1)),
        "BYE": codec.encode(wire.Bye()),
    }
    for label, encoded in sizes.items():
        doc_says(f"{label} {len(encoded)}")
    doc_says("BITMAP 58 + bin header + bitmap (59 for nil)")
    assert len(codec.encode(wire.Bitmap(1, zero, None))) == 59
    assert len(codec.encode(wire.Bitmap(1, zero, b"\x01"))) == 58 + 2 + 1
    doc_says("GET of one ID 50 bytes (+ 34 per extra ID, + 2 more from 16 IDs on")
    for n in (2, 15):
        assert len(codec.encode(wire.Get(1, (zero,) * n))) == 50 + 34 * (n - 1)
    assert len(codec.encode(wire.Get(1, (zero,) * 16))) == 50 + 34 * 15 + 2
    doc_says("CHUNK 56 and PUT 54 + bin header + data")
    doc_says("so a 1 MiB chunk's CHUNK is 1,048,637 bytes")
    for size, header in ((0, 2), (255, 2), (256, 3), (65_535, 3), (65_536, 5), (1 << 20, 5)):
        assert len(codec.encode(wire.Chunk(1, zero, bytes(size)))) == 56 + header + size
        assert len(codec.encode(wire.Put(1, zero, bytes(size)))) == 54 + header + size
    assert len(codec.encode(wire.Chunk(1, zero, bytes(1 << 20)))) == 1_048_637
    doc_says("`id`s up to 255, 65,535 and 2³²-1 take 2, 3 and 5")
    for rid, extra in ((127, 0), (128, 1), (255, 1), (256, 2), (65_535, 2), (65_536, 4)):
        assert len(codec.encode(wire.Get(rid, (zero,)))) == 50 + extra
    doc_says("BUSY 56 + `retry` (1, 2 or 3 bytes for up to 127, 255 and 60,000 ms: 57 to 59)")
    for retry, width in ((0, 1), (127, 1), (128, 2), (255, 2), (256, 3), (60_000, 3)):
        assert len(codec.encode(wire.Busy(1, zero, retry))) == 56 + width
    doc_says("WATCH 57 + `port` (1, 2 or 3 bytes: 58 to 60)")
    for port, width in ((0, 1), (200, 2), (4001, 3), (65_535, 3)):
        assert len(codec.encode(wire.Watch(1, zero, port))) == 57 + width
    doc_says(
        "HAVE_UPDATE 62 + array header (1 byte up to 15 indices, 3 from 16) + 1, 2, 3 or 5 bytes "
        "per index (below 128, 256, 65,536 and 2³²), so at most 1345 bytes"
    )
    for index, width in ((127, 1), (128, 2), (255, 2), (256, 3), (65_535, 3), (65_536, 5)):
        for count, header in ((1, 1), (15, 1), (16, 3), (256, 3)):
            update = wire.HaveUpdate(1, zero, (index,) * count)
            assert len(codec.encode(update)) == 62 + header + width * count
    assert len(codec.encode(wire.HaveUpdate(1, zero, (2**32 - 1,) * 256))) == 1345
    doc_says('`{"t": "CANCEL", "id": <the GET\'s id>}`')
    assert msgpack.unpackb(codec.encode(wire.Cancel(7))) == {"t": "CANCEL", "id": 7}
    doc_says('`{"t": "BYE", "id": 0}`')
    assert msgpack.unpackb(codec.encode(wire.Bye())) == {"t": "BYE", "id": 0}


def test_messages_need_exactly_their_keys() -> None:
    codec = wire.MessageCodec()
    good = {"t": "HAVE", "id": 1, "file": bytes(32)}
    assert codec.decode(msgpack.packb(good, use_bin_type=True)) == wire.Have(1, bytes(32))
    reordered = {"file": bytes(32), "id": 1, "t": "HAVE"}
    assert codec.decode(msgpack.packb(reordered, use_bin_type=True)) == wire.Have(1, bytes(32))
    for bad in (
        {**good, "extra": 1},
        {"t": "HAVE", "id": 1},
        {**good, "id": True},
        {**good, "id": 2**32},
        {**good, "file": bytes(31)},
    ):
        with pytest.raises(ProtocolError):
            codec.decode(msgpack.packb(bad, use_bin_type=True))
    with pytest.raises(ProtocolError):
        codec.decode(msgpack.packb(good, use_bin_type=True) + b"\xc0")


def test_wire_limits_are_the_codes() -> None:
    doc_says("any bin ≤ 16 MiB (the largest chunk, `WireConfig.max_chunk_bytes`), any str ≤ 4096")
    doc_says("bytes, any array ≤ 256 items, any map ≤ 16 keys")
    assert wire_config.MAX_CHUNK_BYTES == 16 * 2**20
    assert wire_config.MAX_TEXT_CHARS * 4 == 4096
    assert wire_config.MAX_GET_BATCH == 256
    assert wire.MAX_MAP_KEYS == 16
    doc_says("`ids`: array of 1-256 chunk IDs")
    doc_says("`versions`: array of 1-16 uint32; `features`: array of 0-32 str")
    assert (wire_config.MAX_VERSIONS, wire_config.MAX_FEATURES) == (16, 32)
    doc_says("str fields (`msg`, `features` items) at most 1024 characters")
    assert wire_config.MAX_TEXT_CHARS == 1024
    for name, code in (
        ("BAD_REQUEST", 1),
        ("UNSUPPORTED_VERSION", 2),
        ("QUOTA_EXCEEDED", 3),
        ("CORRUPT_CHUNK", 4),
        ("INTERNAL", 5),
        ("TOO_MANY_WATCHES", 6),
    ):
        doc_says(f"| {code} | `{name}` |")
        assert wire.ErrorCode[name] == code
    assert len(wire.ErrorCode) == 6


def _general_section() -> str:
    """The chunk protocol's general part: from its heading to the handshake."""
    start = DOC.index("## Chunk protocol over TCP")
    return DOC[start : DOC.index("### Handshake, byte by byte", start)]


def test_general_tables_list_every_message_feature_and_error_code() -> None:
    """A reader must not have to assemble the lists from the sections that added to them."""
    general = _general_section()
    for name in wire._SCHEMAS:
        assert f"| `{name}` |" in general, f"message {name} missing from the messages table"
    for feature in FEATURES:
        assert f"| `{feature}` |" in general, f"feature {feature} missing from the features table"
    for code in wire.ErrorCode:
        assert f"| {code.value} | `{code.name}` |" in general, f"error {code.name} missing"
    sizes = general[general.index("Size on the wire of the envelope") :]
    for name in wire._SCHEMAS:
        if name not in ("HELLO", "AUTH"):
            assert re.search(rf"\b{name}( of one ID)? \d", sizes), f"no size for {name}"


def test_swarm_limits_are_the_codes() -> None:
    doc_says("`retry`: uint 0-60,000 (milliseconds)")
    doc_says("`retry` is an int 0-60,000 and `port` an int 0-65,535")
    assert wire.MAX_RETRY_MS == 60_000
    doc_says("`idx`: array of 1-256 uint32")
    assert wire.MAX_UPDATE_INDICES == 256
    doc_says(
        "a WATCH beyond 8 open watches on this connection, or beyond 256 watches of that file "
        "over all connections, 2 from one node ID or 32 from one source address"
    )
    doc_says(
        "at most 8 open watches per connection, and per file at most 256 over all connections, "
        "2 from one node ID (over all its connections) and 32 from one source address"
    )
    assert wire_server.MAX_WATCHES_PER_CONNECTION == 8
    assert wire_holdings.DEFAULT_MAX_SUBSCRIBERS == 256
    assert wire_holdings.DEFAULT_MAX_PER_PEER == 2
    assert wire_holdings.DEFAULT_MAX_PER_HOST == 32
    doc_says("The server waits 50 ms after the first new chunk before sending")
    assert wire_server.UPDATE_BATCH_DELAY == 0.05
    doc_says("more than 1024 HAVE_UPDATEs of one watch unconsumed")
    assert wire_client.MAX_QUEUED_UPDATES == 1024

    codec = wire.MessageCodec()

    def decode(body: dict[str, object]) -> wire.Message:
        return codec.decode(msgpack.packb(body, use_bin_type=True))

    busy = {"t": "BUSY", "id": 1, "cid": bytes(32)}
    assert decode({**busy, "retry": 60_000}) == wire.Busy(1, bytes(32), 60_000)
    assert decode({**busy, "retry": 0}) == wire.Busy(1, bytes(32), 0)
    watch = {"t": "WATCH", "id": 1, "file": bytes(32)}
    assert decode({**watch, "port": 65_535}) == wire.Watch(1, bytes(32), 65_535)
    update = {"t": "HAVE_UPDATE", "id": 1, "file": bytes(32)}
    assert decode({**update, "idx": [2**32 - 1] * 256}).indices == (2**32 - 1,) * 256
    for bad in (
        {**busy, "retry": 60_001},
        {**busy, "retry": -1},
        {**busy, "retry": True},
        {**watch, "port": 65_536},
        {**watch, "port": -1},
        {**update, "idx": []},
        {**update, "idx": [0] * 257},
        {**update, "idx": [2**32]},
        {**update, "idx": [False]},
        {**update, "idx": [1], "port": 0},
    ):
        with pytest.raises(ProtocolError):
            decode(bad)


def test_swarm_message_examples() -> None:
    codec = wire.MessageCodec()
    doc_says("BUSY for chunk `00…00` of the GET with `id` 5, retry after 1,500 ms")
    doc_says("WATCH with `id` 6 of file `11…11` (32 bytes of `11`) naming port 4001")
    doc_says("the HAVE_UPDATE of that watch for chunks 3 and 300")
    examples = {
        "busy": wire.Busy(5, bytes(32), 1500),
        "watch": wire.Watch(6, b"\x11" * 32, 4001),
        "have_update": wire.HaveUpdate(6, b"\x11" * 32, (3, 300)),
    }
    for label, message in examples.items():
        raw = dump(label)
        assert codec.encode(message) == raw
        assert codec.decode(raw) == message
    assert msgpack.unpackb(dump("busy")) == {
        "t": "BUSY",
        "id": 5,
        "cid": bytes(32),
        "retry": 1500,
    }
    assert msgpack.unpackb(dump("watch")) == {
        "t": "WATCH",
        "id": 6,
        "file": b"\x11" * 32,
        "port": 4001,
    }
    assert msgpack.unpackb(dump("have_update")) == {
        "t": "HAVE_UPDATE",
        "id": 6,
        "file": b"\x11" * 32,
        "idx": [3, 300],
    }


# -- handshake test vector -------------------------------------------------------------------


DIALLER_KEY, LISTENER_KEY = bytes(range(0, 32)), bytes(range(32, 64))
DIALLER_EPHEMERAL, LISTENER_EPHEMERAL = bytes(range(64, 96)), bytes(range(96, 128))


def _handshake_parties() -> tuple[InitiatorHandshake, ResponderHandshake, Identity, Identity]:
    doc_says(
        "dialler identity `000102…1f`, listener identity `202122…3f`, dialler ephemeral "
        "`404142…5f`, listener ephemeral `606162…7f`"
    )
    dialler = Identity.from_private_bytes(DIALLER_KEY)
    listener = Identity.from_private_bytes(LISTENER_KEY)
    initiator = InitiatorHandshake(dialler, listener.node_id)
    responder = ResponderHandshake(listener)
    # The only randomness of a handshake: replaced by the vector's fixed ephemeral keys.
    initiator._ephemeral = X25519PrivateKey.from_private_bytes(DIALLER_EPHEMERAL)
    responder._ephemeral = X25519PrivateKey.from_private_bytes(LISTENER_EPHEMERAL)
    return initiator, responder, dialler, listener


def test_handshake_vector_is_what_our_code_sends() -> None:
    initiator, responder, dialler, listener = _handshake_parties()
    assert dialler.public_key == hex_value("dialler public_key")
    assert dialler.node_id == hex_value("dialler node_id")
    assert listener.public_key == hex_value("listener public_key")
    assert listener.node_id == hex_value("listener node_id")

    frame1 = initiator.initial_bytes()
    assert frame1 == dump("frame1")
    frames23 = responder.receive_data(frame1)
    assert frames23 == dump("frame2") + dump("frame3")
    frame4 = initiator.receive_data(frames23)
    assert frame4 == dump("frame4")
    assert responder.receive_data(frame4) == b""
    ours, theirs = initiator.result, responder.result
    assert ours is not None
    assert theirs is not None
    assert ours.authenticated_as_expected
    assert ours.transcript_hash == theirs.transcript_hash == hex_value("th")
    assert ours.send_key == theirs.receive_key == hex_value("k_i2r")
    assert ours.receive_key == theirs.send_key == hex_value("k_r2i")

    file_id = hashlib.sha256(dump("root")).digest()
    plaintext = wire.MessageCodec().encode(wire.Get(1, (file_id,)))
    assert plaintext == dump("get")
    assert bytes(Sealer(ours.send_key).seal(plaintext)) == dump("sealed frame")
    assert Opener(theirs.receive_key).open(dump("sealed frame")[4:]) == plaintext


def test_handshake_vector_follows_the_specified_rules() -> None:
    """Re-derive everything from the frames with nothing but the primitives the page names."""
    frame1, frame2, frame3, frame4 = (dump(f"frame{i}") for i in range(1, 5))
    for frame in (frame1, frame2, frame3, frame4):
        assert int.from_bytes(frame[:4], "big") == len(frame) - 4 <= 1024
    hello1, hello2 = msgpack.unpackb(frame1[4:]), msgpack.unpackb(frame2[4:])
    auth3, auth4 = msgpack.unpackb(frame3[4:]), msgpack.unpackb(frame4[4:])
    assert hello1["t"] == hello2["t"] == "HELLO"
    assert "version" not in hello1
    assert hello2["version"] == max(set(hello1["versions"]) & set(hello2["versions"]))
    assert hello1["features"] == hello2["features"] == list(FEATURES)
    assert list(FEATURES) == ["get", "have", "put", "cancel", "swarm"]
    doc_says('We list all five, in this order (`["get", "have", "put", "cancel", "swarm"]`)')
    doc_says("(195 bytes as we send it)")
    doc_says("Frames 2 and 3 are sent together (290 bytes as we send them)")
    assert (len(frame1), len(frame2) + len(frame3), len(frame4)) == (195, 290, 86)
    for hello in (hello1, hello2):
        assert hashlib.sha256(hello["public_key"]).digest() == hello["node_id"]
    assert auth3["t"] == auth4["t"] == "AUTH"
    assert auth3["id"] == auth4["id"] == 0

    th = hashlib.sha256(b"p2pstore-wire handshake\x00" + frame1 + frame2).digest()
    assert th == hex_value("th")
    listener = Ed25519PublicKey.from_public_bytes(hello2["public_key"])
    listener.verify(auth3["sig"], b"p2pstore-wire responder\x00" + th)
    dialler = Ed25519PublicKey.from_public_bytes(hello1["public_key"])
    dialler.verify(auth4["sig"], b"p2pstore-wire initiator\x00" + th)

    e_i = X25519PrivateKey.from_private_bytes(DIALLER_EPHEMERAL)
    e_r = X25519PrivateKey.from_private_bytes(LISTENER_EPHEMERAL)
    ikm = e_i.exchange(X25519PublicKey.from_public_bytes(hello2["ephemeral"]))
    assert ikm == e_r.exchange(X25519PublicKey.from_public_bytes(hello1["ephemeral"]))
    okm = HKDF(hashes.SHA256(), 64, salt=th, info=b"p2pstore-wire keys").derive(ikm)
    assert okm[:32] == hex_value("k_i2r")
    assert okm[32:] == hex_value("k_r2i")

    sealed, plaintext = dump("sealed frame"), dump("get")
    prefix = (len(plaintext) + 16).to_bytes(4, "big")
    doc_says("associated data `00000042`")
    assert prefix == bytes.fromhex("00000042") == sealed[:4]
    nonce = bytes(4) + (0).to_bytes(8, "big")
    assert ChaCha20Poly1305(okm[:32]).encrypt(nonce, plaintext, prefix) == sealed[4:]
    assert msgpack.unpackb(plaintext) == {
        "t": "GET",
        "id": 1,
        "ids": [hashlib.sha256(dump("root")).digest()],
    }


def test_bad_node_id_or_signature_closes_silently() -> None:
    """Only "no common version" is answered (ERROR 2, id 0); every other failure sends nothing."""
    codec = wire.MessageCodec()
    dialler = Identity.from_private_bytes(DIALLER_KEY)

    def hello(node_id: bytes, versions: tuple[int, ...] = (1,)) -> bytes:
        message = wire.Hello(0, versions, FEATURES, node_id, dialler.public_key, bytes(range(32)))
        return encode_frame(codec.encode(message))

    _, responder, _, _ = _handshake_parties()
    with pytest.raises(HandshakeError) as failure:
        responder.receive_data(hello(bytes(32)))
    assert not isinstance(failure.value, HandshakeRefused)

    _, responder, _, _ = _handshake_parties()
    with pytest.raises(HandshakeRefused) as refused:
        responder.receive_data(hello(dialler.node_id, versions=(2,)))
    (reply,) = FrameDecoder(1024).feed(refused.value.reply)
    error = codec.decode(reply)
    assert isinstance(error, wire.Error)
    assert (error.request_id, error.code) == (0, 2)

    forged_auth = encode_frame(codec.encode(wire.Auth(0, bytes(64))))
    initiator, responder, _, _ = _handshake_parties()
    responder.receive_data(initiator.initial_bytes())
    with pytest.raises(HandshakeError) as failure:
        responder.receive_data(forged_auth)
    assert not isinstance(failure.value, HandshakeRefused)

    initiator, _, _, _ = _handshake_parties()
    initiator.initial_bytes()
    with pytest.raises(HandshakeError) as failure:
        initiator.receive_data(dump("frame2") + forged_auth)
    assert not isinstance(failure.value, HandshakeRefused)


def test_signed_value_example() -> None:
    publisher = Identity.from_private_bytes(DIALLER_KEY)
    doc_says("signs name `n` (`6e`), `seq` 1, payload `hi` (`6869`)")
    name, seq, payload = b"n", 1, b"hi"
    expected_input = (
        b"p2pstore-dht-value-v1" + bytes([len(name)]) + name + seq.to_bytes(8, "big") + payload
    )
    assert dump("signature input") == expected_input == signature_input(name, seq, payload)
    key = hashlib.sha256(publisher.public_key + name).digest()
    assert hex_value("value key") == key == value_key(publisher.public_key, name)
    value = SignedValue.sign(publisher, name, seq, payload)
    assert value.signature == dump("sig")
    Ed25519PublicKey.from_public_bytes(publisher.public_key).verify(dump("sig"), expected_input)
    assert value.verify()


def test_provider_cap_exemption_is_only_the_default_loopback_addresses() -> None:
    doc_says("only the loopback addresses 127.0.0.1 and ::1 (also written `::ffff:127.0.0.1`) are")
    doc_says("Any other 127.0.0.0/8 address is capped like a remote one (its /24 is its subnet).")
    for exempt in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        assert subnet_of(exempt) is None
    assert subnet_of("127.0.0.2") == bytes([127, 0, 0])
    assert subnet_of("127.5.6.7") == bytes([127, 5, 6])
