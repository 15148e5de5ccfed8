"""Issue 15, progress: units, rate and ETA on put and get bars; the bar leaves the screen
before an error (Ctrl-C) is printed."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import typer
from rich.console import Console
from rich.progress import Progress, ProgressColumn

from p2pstore import cli

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
    monkeypatch.setattr(cli, "_stderr_console", lambda: Console(file=out, force_terminal=True))
    events: list[str] = []
    with cli._ProgressBar(True, (cli._AmountColumn(),)) as bar:
        assert cli._STATE.bar is bar
        real_stop = bar.stop

        def stop() -> None:
            events.append("stop")
            real_stop()

        monkeypatch.setattr(bar, "stop", stop)
        monkeypatch.setattr(cli.typer, "echo", lambda *a, **k: events.append("echo"))
        with pytest.raises(typer.Exit) as info:
            cli._fail("interrupted", cli.EXIT_INTERRUPTED)
    assert info.value.exit_code == cli.EXIT_INTERRUPTED
    assert events[:2] == ["stop", "echo"], "the message is printed after the bar is gone"
    assert cli._STATE.bar is None


def test_a_phase_without_a_count_shows_no_amount_or_rate() -> None:
    assert render(cli._AmountColumn(), completed=0, total=None, unit="") == ""
    assert render(cli._RateColumn(), completed=0, total=None, unit="") == ""


def test_verify_shows_its_phase_in_bytes(
    daemon: FakeNode, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon.verify_delay = 0.5  # long enough for the daemon to send a progress event
    out = io.StringIO()
    monkeypatch.setattr(cli, "_stderr_console", lambda: Console(file=out, force_terminal=True))
    monkeypatch.setattr(cli, "_show_progress", lambda json_out: True)
    result = invoke("verify", "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    assert "re-hashing" in out.getvalue()
    assert "0 B / 7.0 MiB" in out.getvalue()
    assert result.stdout.startswith("checked 7 chunks")
    assert cli._STATE.bar is None
