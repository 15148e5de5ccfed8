"""Issue 15, help and habits: honest help, global options before the command, JSON errors,
``-q``, ``log_level`` in the settings file."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from p2pstore.cli import app
from p2pstore.config import CONFIG_FILE_NAME, load_settings
from p2pstore.errors import ConfigError

from .fakes import FILE_ID, FakeNode, short_tmp_dir

runner = CliRunner()
HEX = FILE_ID.hex()
COMMANDS = [
    "daemon", "put", "get", "ls", "status", "peers", "providers", "pin", "unpin", "gc", "verify",
    "check", "demo",
]  # fmt: skip


def invoke(*args: str) -> Result:
    return runner.invoke(app, list(args), env={"COLUMNS": "100"})


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_has_plain_metavars_and_visible_defaults(command: str | None) -> None:
    result = invoke(*([command] if command else []), "--help")
    assert result.exit_code == 0, result.output
    text = result.output
    for noise in ("<bool>", "<int>", "<list[", "int range", "{file}"):
        assert noise not in text, (noise, text)
    assert not re.search(r"--[a-z-]+ <", text), text  # every option's metavar is a plain word
    assert " ." not in text, "a [default: ...] eaten as markup leaves 'text .'"
    if command == "daemon":
        flat = " ".join(text.split())
        assert "--host HOST" in text
        assert "[default: 0.0.0.0]" in flat
        assert "--udp-port PORT" in text
        assert "--bootstrap HOST:PORT" in text
        assert "--upload-limit RATE" in text
        assert "[default: 8468]" in flat
    if command == "get":
        assert "get [OPTIONS] FILE_ID\n" in text
        assert "-o, --output PATH" in text
    if command == "put":
        assert "put [OPTIONS] FILE...\n" in text


def test_global_options_before_the_command(daemon: FakeNode, data_dir: Path) -> None:
    before = invoke("--data-dir", str(data_dir), "status")
    after = invoke("status", "--data-dir", str(data_dir))
    assert before.exit_code == 0, before.output
    assert before.stdout == after.stdout
    as_json = invoke("--json", "--data-dir", str(data_dir), "status")
    assert json.loads(as_json.stdout)["routing_table_size"] == 3
    # the option after the command wins
    with short_tmp_dir() as other:
        result = invoke("--data-dir", str(other), "status", "--data-dir", str(data_dir))
        assert result.exit_code == 0, result.output
        result = invoke("--data-dir", str(data_dir), "status", "--data-dir", str(other))
        assert result.exit_code == 1
        assert str(other) in result.stderr


@pytest.mark.parametrize("where", ["before", "after"])
def test_errors_under_json_are_json_with_the_same_exit_codes(where: str, data_dir: Path) -> None:
    def run(*args: str) -> Result:
        if where == "before":
            return invoke("--json", "--data-dir", str(data_dir), *args)
        return invoke(*args, "--json", "--data-dir", str(data_dir))

    no_daemon = run("status")
    assert no_daemon.exit_code == 1
    assert no_daemon.stdout == ""
    error = json.loads(no_daemon.stderr)
    assert error["exit_code"] == 1
    assert "no p2pstore daemon is running" in error["error"]
    missing = run("put", str(data_dir / "nope"))
    assert missing.exit_code == 2
    assert json.loads(missing.stderr) == {
        "error": f"no such file: {data_dir / 'nope'}",
        "exit_code": 2,
    }
    bad_id = run("get", "xyz")
    assert bad_id.exit_code == 2
    assert "64 hexadecimal" in json.loads(bad_id.stderr)["error"]
    (data_dir / CONFIG_FILE_NAME).write_text("udp_port = 'eighty'\n")
    bad_file = run("daemon")
    assert bad_file.exit_code == 2
    assert "udp_port" in json.loads(bad_file.stderr)["error"]


def test_without_json_errors_stay_one_plain_line(data_dir: Path) -> None:
    result = invoke("status", "--data-dir", str(data_dir))
    assert result.stderr.startswith("error: no p2pstore daemon")


def test_quiet_get_prints_nothing_but_errors(daemon: FakeNode, data_dir: Path) -> None:
    target = data_dir / "x.bin"
    result = invoke("-q", "get", HEX, "-o", str(target), "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    assert result.output == ""
    assert target.read_bytes() == b"hello world\n"
    again = invoke("get", HEX, "-q", "-o", str(target), "--data-dir", str(data_dir))
    assert again.exit_code == 1
    assert again.stderr.startswith("error: ")


def test_log_level_setting_is_validated(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE_NAME).write_text('log_level = "INFO"\n')
    assert load_settings(tmp_path).log_level == "info"
    (tmp_path / CONFIG_FILE_NAME).write_text('log_level = "loud"\n')
    with pytest.raises(ConfigError, match="log_level"):
        load_settings(tmp_path)


def _daemon_in_use_port(data_dir: Path, *flags: str) -> Result:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        return invoke(
            "daemon", *flags, "--host", "127.0.0.1", "--udp-port", str(port),
            "--data-dir", str(data_dir),
        )  # fmt: skip


def test_log_level_from_the_settings_file_and_quiet_wins(data_dir: Path) -> None:
    pytest.importorskip("p2pstore.node")
    (data_dir / CONFIG_FILE_NAME).write_text('log_level = "info"\n')
    result = _daemon_in_use_port(data_dir)
    assert result.exit_code == 1
    assert f"starting a node for {data_dir}" in result.stderr  # an INFO record
    result = _daemon_in_use_port(data_dir, "-q")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        line for line in result.stderr.strip().splitlines() if line.startswith("error: ")
    ]
    (data_dir / CONFIG_FILE_NAME).write_text('log_level = "error"\n')
    result = _daemon_in_use_port(data_dir)
    assert "starting a node" not in result.stderr
    result = _daemon_in_use_port(data_dir, "-v")
    assert "starting a node" in result.stderr, "-v wins over the file"


def test_shell_completion_is_offered_and_completes_commands() -> None:
    root = invoke("--help")
    assert "--install-completion" in root.output
    assert "--show-completion" in root.output
    env = {"_P2PSTORE_COMPLETE": "complete_bash", "COMP_WORDS": "p2pstore sta", "COMP_CWORD": "1"}
    result = runner.invoke(app, [], prog_name="p2pstore", env=env)
    assert result.exit_code == 0
    assert result.output.split() == ["status"]
    env["COMP_WORDS"] = "p2pstore get --da"
    env["COMP_CWORD"] = "2"
    assert "--data-dir" in runner.invoke(app, [], prog_name="p2pstore", env=env).output.split()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--json", "ls", "--bogus"], "no such option: --bogus"),
        (["ls", "--bogus", "--json"], "no such option: --bogus"),
        (["--json", "get"], "missing argument 'FILE_ID'"),
    ],
)
def test_command_line_errors_under_json_are_json_too(argv: list[str], message: str) -> None:
    # Through the console script's entry point (CliRunner bypasses it).
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", "from p2pstore.cli import main; main()", *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    error = json.loads(done.stderr)
    assert error["exit_code"] == 2
    assert message in error["error"]
