"""Issue 15, progress: units, rate and ETA on put and get bars; the bar leaves the screen
before an error (Ctrl-C) is printed."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
import typer
from rich.console import Console
from rich.progress import Progress, ProgressColumn

from p2pstore import cli, clibar, cliget, cliview

from .fakes import FakeNode, invoke


def render(column: ProgressColumn, **fields: object) -> str:
    progress = Progress(column, console=Console(file=io.StringIO()), auto_refresh=False)
    task = progress.add_task("", total=None, unit="bytes")
    progress.update(task, **fields)  # type: ignore[arg-type]
    return column.render(progress.tasks[0]).plain


def test_byte_amounts_use_binary_units() -> None:
    text = render(cli._AmountColumn(), completed=5 * (1 << 20), total=20 * (1 << 20), unit="bytes")
    assert "5.0 MiB / 20.0 MiB" in text


def test_chunk_amounts_are_labelled() -> None:
    text = render(cli._AmountColumn(), completed=229, total=1536, unit="chunks")
    assert "229/1536 chunks" in text


def test_rate_column_uses_the_results_units() -> None:
    column = cli._RateColumn()
    progress = Progress(column, console=Console(file=io.StringIO()), auto_refresh=False)
    task_id = progress.add_task("", total=100 << 20, unit="bytes")
    task = progress.tasks[0]
    assert column.render(task).plain == ""  # no speed yet
    task.finished_speed = 3 * (1 << 20)
    assert column.render(task).plain == "3.0 MiB/s"
    progress.update(task_id, unit="chunks")
    task.finished_speed = 12.0
    assert column.render(progress.tasks[0]).plain == "12 chunks/s"


def test_an_error_takes_the_bar_off_the_screen_first(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(clibar, "stderr_console", lambda: Console(file=out, force_terminal=True))
    events: list[str] = []
    with cli._ProgressBar(True, (cli._AmountColumn(),)) as bar:
        assert clibar.active() is bar
        real_stop = bar.stop

        def stop() -> None:
            events.append("stop")
            real_stop()

        monkeypatch.setattr(bar, "stop", stop)
        monkeypatch.setattr(cli.cliview, "echo_err", lambda *a, **k: events.append("echo"))
        with pytest.raises(typer.Exit) as info:
            cli._fail("interrupted", cli.EXIT_INTERRUPTED)
    assert info.value.exit_code == cli.EXIT_INTERRUPTED
    assert events[:2] == ["stop", "echo"], "the message is printed after the bar is gone"
    assert clibar.active() is None


def test_a_phase_without_a_count_shows_no_amount_or_rate() -> None:
    assert render(cli._AmountColumn(), completed=0, total=None, unit="") == ""
    assert render(cli._RateColumn(), completed=0, total=None, unit="") == ""


def test_verify_shows_its_phase_in_bytes(
    daemon: FakeNode, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon.verify_delay = 0.5  # long enough for the daemon to send a progress event
    out = io.StringIO()
    monkeypatch.setattr(clibar, "stderr_console", lambda: Console(file=out, force_terminal=True))
    monkeypatch.setattr(cliget.Invocation, "show_progress", lambda self: True)
    result = invoke("verify", "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    assert "re-hashing" in out.getvalue()
    assert "0 B / 7.0 MiB" in out.getvalue()
    assert result.stdout.startswith("checked 7 chunks")
    assert clibar.active() is None


# Issue 15, the new-user trial's leftovers: the first frame had no label; put went "announcing
# 1/1" then "0/1"; the last frame seen was "23/30 chunks"; a local get said "from 0 peers".


def _frames(text: str) -> list[str]:
    plain = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", text)
    return [f.strip() for f in plain.replace("\r", "\n").splitlines() if f.strip()]


def _run_put_bar(monkeypatch: pytest.MonkeyPatch, events: list[dict[str, object]]) -> list[str]:
    out = io.StringIO()
    monkeypatch.setattr(
        clibar, "stderr_console", lambda: Console(file=out, force_terminal=True, width=100)
    )
    monkeypatch.setattr(cliget.Invocation, "show_progress", lambda self: True)
    seen: list[list[str]] = []

    def fake_call(
        data_dir: object, op: str, args: object, progress: Any, **_: object
    ) -> dict[str, object]:
        seen.append(_frames(out.getvalue()))  # what is on screen before any event
        for event in events:
            progress(event)
        return {"file_id": "00" * 32}

    monkeypatch.setattr(cliview, "call_daemon", fake_call)
    cli._phased_call(None, "put", {}, False, cli._PUT_PHASES, {"store": "bytes"})
    return [*seen[0], "|", *_frames(out.getvalue())[len(seen[0]) :]]


def test_the_first_frame_is_labelled(monkeypatch: pytest.MonkeyPatch) -> None:
    frames = _run_put_bar(monkeypatch, [])
    before = frames[: frames.index("|")]
    assert before
    assert all(f.startswith("storing") for f in before)


def test_announcing_shows_no_count_and_no_stale_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[dict[str, object]] = [
        {"phase": "store", "done": 5, "total": 10},
        {"phase": "publish", "done": 1, "total": 1},
        {"phase": "publish", "done": 0, "total": 1},
        {"phase": "disperse", "done": 23, "total": 30, "unit": "chunks"},
    ]
    frames = _run_put_bar(monkeypatch, events)
    announcing = [f for f in frames if f.startswith("announcing")]
    assert announcing
    assert not any(re.search(r"\d+/\d+", f) for f in announcing), announcing
    # A new phase's first frame already has its own label: never the old label at 0.
    assert not any(f.startswith("storing") and "0 B / 10 B" in f for f in frames), frames


def test_the_last_frame_shows_the_finished_state(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[dict[str, object]] = [
        {"phase": "disperse", "done": 23, "total": 30, "unit": "chunks"}
    ]
    frames = _run_put_bar(monkeypatch, events)
    assert "30/30 chunks" in frames[-1]


def test_the_daemon_sends_the_final_progress_before_the_result(
    daemon: FakeNode, data_dir: Path
) -> None:
    from p2pstore import control

    (data_dir / "f.txt").write_bytes(b"x")
    daemon.put_delay = 0.0  # all events within one progress interval: only the last can go out
    seen: list[dict[str, Any]] = []
    control.call_blocking(
        data_dir,
        "put",
        {"path": str(data_dir / "f.txt"), "disperse": False},
        on_progress=seen.append,
    )
    assert seen[-1] == {"phase": "store", "done": 3, "total": 3}


def test_a_get_served_from_the_local_store_says_so() -> None:
    from p2pstore.cliget import saved_line

    local = {"path": "/x/a.bin", "size": 100000, "seconds": 0.01, "bytes_from_peers": {}}
    assert saved_line(local) == "saved /x/a.bin (97.7 KiB, from the local store)"
    fetched = {**local, "bytes_from_peers": {"h:1": 60000, "h:2": 40000}, "seconds": 0.5}
    assert saved_line(fetched) == "saved /x/a.bin (97.7 KiB in 0.50 s, 195.3 KiB/s, from 2 peers)"
    one = {**fetched, "bytes_from_peers": {"h:1": 100000}}
    assert saved_line(one).endswith(", from 1 peer)")


@pytest.mark.parametrize(("peers", "text"), [(0, "0 peers"), (1, "1 peer"), (3, "3 peers")])
def test_the_peers_column_counts_in_words(peers: int, text: str) -> None:
    assert render(clibar.peers_column(), peers=peers) == text


def test_put_shows_the_file_size_from_the_first_frame(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    out = io.StringIO()
    monkeypatch.setattr(
        clibar, "stderr_console", lambda: Console(file=out, force_terminal=True, width=100)
    )
    monkeypatch.setattr(cliget.Invocation, "show_progress", lambda self: True)
    seen: list[list[str]] = []

    def fake_call(data_dir: object, op: str, args: object, progress: Any, **_: object) -> Any:
        seen.append(_frames(out.getvalue()))  # the daemon has sent nothing yet
        return {"file_id": "00" * 32}

    monkeypatch.setattr(cliview, "call_daemon", fake_call)
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 3072)
    from p2pstore import cliput

    cliput.put_path(cliget.Invocation(None, command="put"), path, False, None)
    assert seen[0]
    assert all(f.startswith("storing") and "0 B / 3.0 KiB" in f for f in seen[0]), seen[0]
