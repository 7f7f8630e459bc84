"""`--config FILE.toml` of `edgerun serve` and `edgerun federated coordinator` (edgerun/config_file.py),
and `edgerun completion` (edgerun/completion.py): a file parses to the namespace its flags parse to,
the command line overrides it, and every bad file is one line and exit code 2."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from edgerun import cli
from edgerun.config_file import add_config_option

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"

SERVE_TOML = """\
model-repository = "models"
host = "127.0.0.1"
grpc-port = 9001
http_port = 9000
metrics-port = 0
workers = 3
blas-threads = 2
model-control-mode = "explicit"
load-model = ["mlp", "cnn"]
repository-poll-secs = 5
max-message-size = 1048576
http-body-timeout-secs = 30.5
auth-token-file = "secrets/token"
log-level = "debug"
"""
SERVE_FLAGS = ["--model-repository", "models", "--host", "127.0.0.1", "--grpc-port", "9001", "--http-port", "9000",
               "--metrics-port", "0", "--workers", "3", "--blas-threads", "2", "--model-control-mode", "explicit",
               "--load-model", "mlp", "--load-model", "cnn", "--repository-poll-secs", "5",
               "--max-message-size", "1048576", "--http-body-timeout-secs", "30.5",
               "--auth-token-file", "secrets/token", "--log-level", "debug"]

COORDINATOR_TOML = """\
model = "mlp.trainable.erm"
port = 0
state = "state/coordinator.db"
token-file = "enrol.token"
rounds = 7
round-timeout = 90
min-clients = 3
fraction-fit = 0.25
secure-aggregation = "on"
secagg-bits = 24
secagg-neighbours = 8
secagg-stage-timeout = 2.5
secagg_max_cohort = 0
dp-noise = 1.1
dp-mode = "distributed"
dp-epsilon = inf
compression = "topk:0.1"
"""
COORDINATOR_FLAGS = ["--model", "mlp.trainable.erm", "--port", "0", "--state", "state/coordinator.db",
                     "--token-file", "enrol.token", "--rounds", "7", "--round-timeout", "90", "--min-clients", "3",
                     "--fraction-fit", "0.25", "--secure-aggregation", "on", "--secagg-bits", "24",
                     "--secagg-neighbours", "8", "--secagg-stage-timeout", "2.5", "--secagg-max-cohort", "0",
                     "--dp-noise", "1.1", "--dp-mode", "distributed", "--dp-epsilon", "inf",
                     "--compression", "topk:0.1"]

SERVE, COORDINATOR = ("serve",), ("federated", "coordinator")


def parse(command: tuple[str, ...], args: list[str]) -> dict:
    """The parsed namespace of `edgerun COMMAND ARGS` as a dict, without --config itself."""
    namespace = vars(cli.build_parser(command[0]).parse_args([*command, *args]))
    namespace.pop("config", None)
    return namespace


def error_line(capsys: pytest.CaptureFixture, command: tuple[str, ...], args: list[str]) -> str:
    """The one stderr line of a parse that must fail with exit code 2."""
    with pytest.raises(SystemExit) as exit_info:
        parse(command, args)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"edgerun {' '.join(command)}: error: "), lines
    return lines[0]


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- a file parses as its flags do -------------------------------------------------------------

@pytest.mark.parametrize("command, text, flags", [(SERVE, SERVE_TOML, SERVE_FLAGS),
                                                  (COORDINATOR, COORDINATOR_TOML, COORDINATOR_FLAGS)],
                         ids=["serve", "coordinator"])
def test_file_parses_as_its_flags(in_tmp: Path, command: tuple[str, ...], text: str, flags: list[str]) -> None:
    (in_tmp / "settings.toml").write_text(text)

    from_file = parse(command, ["--config", "settings.toml"])

    assert from_file == parse(command, flags)


def test_serve_values_have_the_flags_types(in_tmp: Path) -> None:
    (in_tmp / "serve.toml").write_text(SERVE_TOML)

    args = parse(SERVE, ["--config=serve.toml"])

    assert args["model_repository"] == Path("models") and args["threads"] == 2
    assert args["repository_poll_secs"] == 5.0 and isinstance(args["repository_poll_secs"], float)
    assert args["load_model"] == ["mlp", "cnn"] and args["log_level"] == "DEBUG"


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "serve.toml").write_text('model-repository = "models"\ntls-cert = "/abs/cert.pem"\n')

    args = parse(SERVE, ["--config", str(tmp_path / "etc" / "serve.toml")])

    assert args["model_repository"] == tmp_path / "etc" / "models"
    assert args["tls_cert"] == Path("/abs/cert.pem")


def test_flags_override_the_file(in_tmp: Path) -> None:
    (in_tmp / "serve.toml").write_text(SERVE_TOML)

    args = parse(SERVE, ["--http-port", "7000", "--config", "serve.toml", "--load-model", "other",
                         "--model-repository", "elsewhere", "--blas-threads", "1"])

    assert args["http_port"] == 7000 and args["grpc_port"] == 9001
    assert args["load_model"] == ["other"], "a list on the command line replaces the file's"
    assert args["model_repository"] == Path("elsewhere") and args["threads"] == 1


def test_the_file_may_hold_a_required_option(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    (in_tmp / "serve.toml").write_text("workers = 2\n")
    with pytest.raises(SystemExit) as exit_info:
        parse(SERVE, ["--config", "serve.toml"])
    assert exit_info.value.code == 2
    assert "the following arguments are required: --model-repository" in capsys.readouterr().err

    (in_tmp / "serve.toml").write_text('model-repository = "m"\n')
    assert parse(SERVE, ["--config", "serve.toml"])["model_repository"] == Path("m")


def test_the_old_threads_key_works_with_a_warning(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    (in_tmp / "serve.toml").write_text('model-repository = "m"\nthreads = 4\n')

    assert parse(SERVE, ["--config", "serve.toml"])["threads"] == 4
    assert "serve.toml: key 'threads' is deprecated; use 'blas-threads'" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted(DOCS.glob("*.example.toml")), ids=lambda p: p.name)
def test_docs_examples_parse_cleanly(path: Path, capsys: pytest.CaptureFixture) -> None:
    command = {"serve.example.toml": SERVE, "coordinator.example.toml": COORDINATOR}[path.name]

    args = parse(command, ["--config", str(path)])

    assert capsys.readouterr().err == ""
    assert args["func"].__name__ == {SERVE: "cmd_serve", COORDINATOR: "cmd_coordinator"}[command]


def test_both_docs_examples_exist() -> None:
    assert {p.name for p in DOCS.glob("*.example.toml")} >= {"serve.example.toml", "coordinator.example.toml"}


# --- a bad file is one line, exit code 2 -------------------------------------------------------

BAD_FILES = [
    (SERVE, 'model-repository = "m"\ngrpc-prot = 1\n',
     ["settings.toml: unknown key 'grpc-prot' (did you mean 'grpc-port'?); valid keys: model-repository, host,",
      "blas-threads", "log-level"]),
    (SERVE, 'model-repository = "m"\ngrpc-port = "8001"\n',
     ["settings.toml: key 'grpc-port': expected an integer, got '8001' (a string)"]),
    (SERVE, 'model-repository = "m"\nworkers = true\n', ["key 'workers': expected an integer, got True (a boolean)"]),
    (SERVE, 'model-repository = 3\n', ["key 'model-repository': expected a path (a string), got 3 (an integer)"]),
    (SERVE, 'model-repository = "m"\nmodel-control-mode = "sometimes"\n',
     ["key 'model-control-mode': expected one of 'none', 'poll', 'explicit', got 'sometimes'"]),
    (SERVE, 'model-repository = "m"\nload-model = "mlp"\n',
     ["key 'load-model': expected an array of a string, got 'mlp' (a string)"]),
    (SERVE, 'model-repository = "m"\nload-model = ["a", 2]\n', ["key 'load-model': expected a string, got 2"]),
    (SERVE, 'model-repository = "m"\nthreads = 1\nblas-threads = 2\n',
     ["keys 'threads' and 'blas-threads' set the same option"]),
    (SERVE, 'model-repository = "m"\ngrpc_port = 1\ngrpc-port = 2\n',
     ["keys 'grpc_port' and 'grpc-port' set the same option"]),
    (SERVE, '[serve]\nmodel-repository = "m"\n', ["unknown key 'serve'"]),
    (SERVE, 'model-repository = "m"\nconfig = "other.toml"\n', ["unknown key 'config'"]),
    (SERVE, "model-repository = \n", ["settings.toml: not a valid TOML file: ", "(at line 1, column 20)"]),
    (COORDINATOR, 'model = "m.erm"\nround-timeout = "60s"\n',
     ["key 'round-timeout': expected a number, got '60s' (a string)"]),
    (COORDINATOR, 'model = "m.erm"\nsecure_aggregation = true\n',
     ["key 'secure_aggregation': expected one of 'on', 'off', got True (a boolean)"]),
    (COORDINATOR, 'model = "m.erm"\nrounds = 1.5\n', ["key 'rounds': expected an integer, got 1.5 (a float)"]),
    (COORDINATOR, 'model = "m.erm"\nsecagg-neigbours = 3\n',
     ["unknown key 'secagg-neigbours' (did you mean 'secagg-neighbours'?); valid keys: model, port,"]),
]


@pytest.mark.parametrize("command, text, wanted", BAD_FILES, ids=[w[0].split(":")[-1][:40] for *_, w in BAD_FILES])
def test_bad_file_is_one_line(in_tmp: Path, capsys: pytest.CaptureFixture, command: tuple[str, ...], text: str,
                              wanted: list[str]) -> None:
    (in_tmp / "settings.toml").write_text(text)

    line = error_line(capsys, command, ["--config", "settings.toml"])

    assert all(part in line for part in wanted), line


def test_unreadable_files(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    assert "missing.toml: cannot read the config file: No such file or directory" in \
        error_line(capsys, SERVE, ["--config", "missing.toml"])
    (in_tmp / "folder.toml").mkdir()
    assert "folder.toml: cannot read the config file: Is a directory" in \
        error_line(capsys, SERVE, ["--config", "folder.toml"])
    (in_tmp / "binary.toml").write_bytes(b"host = '\xff'\n")
    assert "binary.toml: not a valid TOML file" in error_line(capsys, SERVE, ["--config", "binary.toml"])


def test_abbreviated_config_is_read(in_tmp: Path) -> None:
    """An abbreviation argparse accepts reads the file too (argparse would store it and nothing else)."""
    (in_tmp / "serve.toml").write_text('model-repository = "m"\nworkers = 5\n')

    assert parse(SERVE, ["--conf", "serve.toml"])["workers"] == 5
    assert parse(SERVE, ["--con=serve.toml"])["workers"] == 5


def test_bad_file_through_the_edgerun_command(in_tmp: Path) -> None:
    (in_tmp / "serve.toml").write_text("grpc-port = 'x'\n")

    done = subprocess.run([sys.executable, "-m", "edgerun", "serve", "--config", "serve.toml"], cwd=in_tmp,
                          capture_output=True, text=True, timeout=120)

    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == ["edgerun serve: error: serve.toml: key 'grpc-port': expected an integer, "
                                        "got 'x' (a string)"]


def test_any_argparse_parser(tmp_path: Path) -> None:
    """The generic part: flags (store_true/store_false), nargs lists, a custom type, a plain parser."""
    parser = argparse.ArgumentParser(prog="tool")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--no-cache", dest="cache", action="store_false")
    parser.add_argument("--sizes", type=int, nargs="+")
    parser.add_argument("--ratio", type=lambda s: tuple(map(int, s.split(":"))))
    add_config_option(parser)
    (tmp_path / "t.toml").write_text('verbose = true\nno-cache = true\nsizes = [1, 2]\nratio = "3:4"\n')

    args = parser.parse_args(["--config", str(tmp_path / "t.toml"), "--sizes", "5"])

    assert (args.verbose, args.cache, args.sizes, args.ratio) == (True, False, [5], (3, 4))
    assert parser.parse_args([]).verbose is False


# --- shell completion --------------------------------------------------------------------------

def completion(shell: str, capsys: pytest.CaptureFixture) -> str:
    assert cli.main(["completion", shell]) == 0
    return capsys.readouterr().out


def tree_names(parser: argparse.ArgumentParser) -> set[str]:
    names: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                names |= {name} | tree_names(sub)
    return names


def test_bash_completion_names_every_command(capsys: pytest.CaptureFixture) -> None:
    script = completion("bash", capsys)

    words = set(script.replace("(", " ").replace(")", " ").split())
    missing = tree_names(cli.build_parser()) - words
    assert not missing and {"--config", "--blas-threads", "--secagg-neighbours"} <= words, missing


def test_bash_completion_completes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """bash accepts the script, and its completion function answers as a TAB would."""
    script = tmp_path / "edgerun.bash"
    script.write_text(completion("bash", capsys))
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    probe = ('source "$1"; complete_words() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMPREPLY=(); '
             '_shtab_edgerun; echo "${COMPREPLY[*]}"; }; '
             'complete_words edgerun fed; complete_words edgerun federated co; '
             'complete_words edgerun serve --bl; complete_words edgerun serve --model-control-mode ""; '
             'complete_words edgerun completion ""')

    done = subprocess.run(["bash", "-c", probe, "probe", str(script)], capture_output=True, text=True, timeout=60)

    assert done.stdout.splitlines() == ["federated", "coordinator", "--blas-threads", "none poll explicit",
                                        "bash zsh tcsh"], done.stderr


def test_zsh_completion_is_a_zsh_completion_function_naming_every_command(capsys: pytest.CaptureFixture) -> None:
    # (zsh itself is not installed everywhere the suite runs: the script's shape is checked instead)
    script = completion("zsh", capsys)
    assert script.startswith("#compdef edgerun") and "_shtab_edgerun" in script
    missing = {name for name in tree_names(cli.build_parser()) if name not in script}
    assert not missing and "--blas-threads" in script, missing


def test_completion_without_shtab_names_the_extra(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "shtab", None)  # import shtab now raises ImportError

    assert cli.main(["completion", "bash"]) == 2
    assert capsys.readouterr().err.strip() == \
        "edgerun: error: shell completion needs shtab: pip install 'edgerun[completion]'"
