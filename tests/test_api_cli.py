"""`orch serve` and the CLI's `--api` refuse bad input before anything starts (in-process, no server)."""
from __future__ import annotations

import socket

from typer.testing import CliRunner

from orchestrator.cli import app

runner = CliRunner()


def test_serve_without_a_token_refuses_to_start(tmp_path):
    result = runner.invoke(app, ["serve", "--state-dir", str(tmp_path / "state")], env={"ORCH_API_TOKENS": ""})
    assert result.exit_code == 2 and "no API token" in result.stderr
    assert not (tmp_path / "state").exists()  # refused before anything was created


def test_serve_refuses_short_tokens_and_missing_data_roots(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("# a comment\nshort\n")
    result = runner.invoke(app, ["serve", "--tokens", str(tokens)], env={"ORCH_API_TOKENS": ""})
    assert result.exit_code == 2 and f"{tokens}:2" in result.stderr
    result = runner.invoke(app, ["serve", "--data-root", str(tmp_path / "absent")], env={"ORCH_API_TOKENS": "x" * 32})
    assert result.exit_code == 2 and "not a directory" in result.stderr


def test_submit_needs_exactly_one_of_address_and_api(tmp_path):
    f = tmp_path / "m.yaml"
    f.write_text("name: x\n")
    assert runner.invoke(app, ["submit", str(f)]).exit_code == 2
    both = runner.invoke(app, ["submit", str(f), "--address", "h:1", "--api", "http://h:1"])
    assert both.exit_code == 2 and "--address" in both.stderr


def test_api_commands_say_when_the_head_is_unreachable(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    result = runner.invoke(app, ["status", "--api", url], env={"ORCH_API_TOKEN": "t" * 32})
    assert result.exit_code == 1 and "cannot reach the head" in result.stderr
    f = tmp_path / "m.yaml"
    assert runner.invoke(app, ["submit", str(f), "--api", url]).exit_code == 2  # no such file: bad input
    assert runner.invoke(app, ["status", "--api", "ftp://x"]).exit_code == 2
    follow = runner.invoke(app, ["status", "--follow"])
    assert follow.exit_code == 2 and "--api" in follow.stderr
