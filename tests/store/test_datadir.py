"""Issue 13 item 1: a node never trusts a data directory another local user could control."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from p2pstore import datadir
from p2pstore.cli import app
from p2pstore.datadir import UnsafeDataDirError, check_data_dir
from p2pstore.errors import ConfigError
from p2pstore.identity import KEY_FILE_NAME, Identity
from p2pstore.node import open_node
from p2pstore.store import ChunkStore


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A directory with a file in it that a planted link must never let the node touch."""
    target = tmp_path / "victim"
    target.mkdir()
    (target / "precious").write_bytes(b"keep me")
    return target


def test_world_writable_data_dir_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "shared"
    d.mkdir()
    d.chmod(0o777)
    with pytest.raises(UnsafeDataDirError, match="writable by other users"):
        ChunkStore.open(d)
    assert list(d.iterdir()) == [], "nothing was created in it"


def test_group_writable_file_inside_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "node"
    d.mkdir(mode=0o700)
    (d / "index.sqlite3").touch()
    (d / "index.sqlite3").chmod(0o666)
    with pytest.raises(UnsafeDataDirError, match=r"index\.sqlite3 is writable by other users"):
        ChunkStore.open(d)


def test_tmp_symlink_is_refused_and_its_target_untouched(tmp_path: Path, victim: Path) -> None:
    """The reported attack: ``tmp`` planted as a link; opening the store emptied its target."""
    d = tmp_path / "node"
    d.mkdir(mode=0o700)
    (d / "tmp").symlink_to(victim)
    with pytest.raises(UnsafeDataDirError, match="symbolic link"):
        ChunkStore.open(d)
    assert (victim / "precious").read_bytes() == b"keep me"


def test_symlink_in_a_shard_directory_is_refused(tmp_path: Path, victim: Path) -> None:
    d = tmp_path / "node"
    ChunkStore.open(d).close()
    shard = d / "chunks" / "ab"
    shard.rmdir()
    shard.symlink_to(victim)
    with pytest.raises(UnsafeDataDirError, match="symbolic link"):
        ChunkStore.open(d)


def test_directory_owned_by_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "node"
    ChunkStore.open(d).close()
    monkeypatch.setattr(datadir, "_euid", lambda: os.geteuid() + 4242)
    with pytest.raises(UnsafeDataDirError, match="is owned by uid"):
        ChunkStore.open(d)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_root_refuses_a_directory_planted_by_another_user(tmp_path: Path) -> None:
    """As reported: another user plants a data dir with their own identity key; root refuses."""
    d = tmp_path / "planted"
    d.mkdir(mode=0o755)
    (d / KEY_FILE_NAME).write_bytes(os.urandom(32))
    os.chown(d / KEY_FILE_NAME, 65534, 65534)
    os.chown(d, 65534, 65534)
    with pytest.raises(UnsafeDataDirError, match="owned by uid 65534"):
        check_data_dir(d)
    os.chown(d, 0, 0)  # even in a directory of ours, a key of someone else's is refused
    with pytest.raises(UnsafeDataDirError, match=r"identity\.key is owned by uid 65534"):
        check_data_dir(d)


def test_identity_key_symlink_is_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "their.key"
    elsewhere.write_bytes(bytes(32))
    elsewhere.chmod(0o600)
    d = tmp_path / "node"
    d.mkdir(mode=0o700)
    (d / KEY_FILE_NAME).symlink_to(elsewhere)
    with pytest.raises(ConfigError, match="symbolic link"):
        Identity.load_or_create(d)


def test_identity_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    Identity.load_or_create(tmp_path)
    (tmp_path / KEY_FILE_NAME).chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        Identity.load_or_create(tmp_path)


def test_identity_temp_file_is_exclusive_and_never_follows_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flags_seen: list[int] = []
    real_open = os.open

    def spy(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if str(path).endswith(".tmp"):
            flags_seen.append(flags)
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", spy)
    identity = Identity.load_or_create(tmp_path)
    assert flags_seen
    assert all(f & os.O_EXCL and f & os.O_NOFOLLOW for f in flags_seen)
    assert Identity.load_or_create(tmp_path).node_id == identity.node_id
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE_NAME], "no temp file left"


async def test_open_node_creates_every_directory_0700(tmp_path: Path) -> None:
    d = tmp_path / "a" / "b" / "node"
    async with open_node(d, host="127.0.0.1", udp_port=0, tcp_port=0) as node:
        assert node.data_dir == d
    for path in (tmp_path / "a", tmp_path / "a" / "b", d, d / "chunks", d / "tmp"):
        assert _mode(path) == 0o700, path
    assert _mode(d / "quarantine") == 0o700
    assert {_mode(p) for p in (d / "chunks").iterdir()} == {0o700}
    assert _mode(d / KEY_FILE_NAME) == 0o600


def test_daemon_refuses_an_unsafe_data_dir_with_exit_2(tmp_path: Path, victim: Path) -> None:
    d = tmp_path / "node"
    d.mkdir(mode=0o700)
    (d / "p2pstore.toml").symlink_to(victim / "precious")
    result = CliRunner().invoke(app, ["daemon", "--data-dir", str(d), "--udp-port", "0"])
    assert result.exit_code == 2, result.output
    assert "p2pstore.toml is a symbolic link" in result.output
    d.chmod(0o777)
    (d / "p2pstore.toml").unlink()
    result = CliRunner().invoke(app, ["daemon", "--data-dir", str(d), "--udp-port", "0"])
    assert result.exit_code == 2, result.output
    assert "writable by other users" in result.output


def test_data_dir_under_a_directory_others_may_write_is_refused(tmp_path: Path) -> None:
    """Our own 0700 directory is no safer than its parents: in a directory writable by others
    without the sticky bit, another user can rename it away and put theirs in its place."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    d = shared / "node"
    d.mkdir(mode=0o700)
    with pytest.raises(UnsafeDataDirError, match=r"the directory above it, .*shared, is writable"):
        ChunkStore.open(d)
    with pytest.raises(UnsafeDataDirError, match="sticky"):
        ChunkStore.open(shared / "deeper" / "node")  # nothing is created under it either
    assert not (shared / "deeper").exists()
    shared.chmod(0o1777)  # sticky, like /tmp: others cannot rename what is not theirs
    ChunkStore.open(d).close()


def test_link_to_a_data_dir_is_checked_where_it_points_and_where_it_is(tmp_path: Path) -> None:
    safe = tmp_path / "safe"
    safe.mkdir(mode=0o700)
    (safe / "node").mkdir(mode=0o700)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    link = shared / "link"
    link.symlink_to(safe / "node")
    with pytest.raises(UnsafeDataDirError, match="shared"):
        check_data_dir(link)  # the link itself could be swapped
    (safe / "link").symlink_to(safe / "node")
    check_data_dir(safe / "link")
    (shared / "node").mkdir(mode=0o700)
    (safe / "elsewhere").symlink_to(shared / "node")
    with pytest.raises(UnsafeDataDirError, match="shared"):
        check_data_dir(safe / "elsewhere")  # what it points to could be swapped


def test_parent_owned_by_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "node"
    d.mkdir(mode=0o700)
    real = os.stat
    fake_uid = os.geteuid() + 4242

    def stat_as_if_another_user_owned_tmp_path(path: object, *args: object, **kw: object) -> object:
        st = real(path, *args, **kw)  # type: ignore[arg-type]
        if Path(str(path)) == tmp_path:
            fields = list(st)
            fields[stat.ST_UID] = fake_uid
            return os.stat_result(fields)
        return st

    monkeypatch.setattr(datadir.os, "stat", stat_as_if_another_user_owned_tmp_path)
    with pytest.raises(UnsafeDataDirError, match=f"owned by uid {fake_uid}, neither"):
        check_data_dir(d)
