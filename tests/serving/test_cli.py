"""`edgerun serve`: its options and the errors for bad ones (one line, exit 1)."""

from __future__ import annotations

import argparse

import pytest

from edgerun import cli


def test_help_lists_the_options(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["serve", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--model-repository", "--grpc-port", "--http-port", "--metrics-port", "--workers",
                 "--model-control-mode", "--tls-cert", "--tls-key", "--tls-client-ca", "--auth-token-file",
                 "--max-message-size", "--busy-poll-us", "--token-file", "EDGERUN_SERVE_TOKEN",
                 "--http-max-connections-per-client", "--http-body-budget BYTES",
                 "--http-min-body-rate BYTES_PER_SEC"):
        assert flag in out


@pytest.mark.parametrize("extra,words", [
    (["--tls-cert", "c.pem"], "TLS needs both --tls-cert and --tls-key"),
    (["--tls-client-ca", "ca.pem"], "--tls-client-ca needs --tls-cert"),
    (["--workers", "0"], "--workers must be >= 1"),
    (["--max-message-size", "10"], "at least 1024 bytes"),
    (["--busy-poll-us", "-1"], "--busy-poll-us must be within 0..1000000"),
    (["--http-max-connections-per-client", "0"], "--http-max-connections-per-client must be >= 1"),
    (["--max-message-size", "4096", "--http-body-budget", "4095"], "--http-body-budget (4095 bytes) must be at least"),
    (["--http-min-body-rate", "-1"], "--http-min-body-rate must be >= 0"),
])
def test_bad_options(tmp_path, capsys, extra, words) -> None:
    assert cli.main(["serve", "--model-repository", str(tmp_path), *extra]) == 1
    assert words in capsys.readouterr().err


def test_missing_repository_and_empty_token(tmp_path, capsys) -> None:
    assert cli.main(["serve", "--model-repository", str(tmp_path / "none")]) == 1
    assert "is not a directory" in capsys.readouterr().err
    token = tmp_path / "token"
    token.write_text("  \n")
    assert cli.main(["serve", "--model-repository", str(tmp_path), "--auth-token-file", str(token)]) == 1
    assert "token file is empty" in capsys.readouterr().err


def test_token_from_the_environment_but_not_from_two_places(tmp_path, capsys, monkeypatch) -> None:
    from edgerun.serving.cli import add_arguments, options_from

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    token = tmp_path / "token"
    token.write_text("from-file\n")
    monkeypatch.setenv("EDGERUN_SERVE_TOKEN", " from-env ")
    assert options_from(parser.parse_args(["--model-repository", str(tmp_path)])).token == "from-env"
    assert cli.main(["serve", "--model-repository", str(tmp_path), "--token-file", str(token)]) == 1
    assert "not both" in capsys.readouterr().err
    monkeypatch.setenv("EDGERUN_SERVE_TOKEN", "  ")
    assert cli.main(["serve", "--model-repository", str(tmp_path)]) == 1
    assert "EDGERUN_SERVE_TOKEN is empty" in capsys.readouterr().err
    monkeypatch.delenv("EDGERUN_SERVE_TOKEN")
    assert options_from(parser.parse_args(["--model-repository", str(tmp_path), "--token-file", str(token)])).token \
        == "from-file"
