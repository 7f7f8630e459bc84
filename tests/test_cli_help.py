"""The help of the whole `edgerun` parser tree follows one set of rules: every command's --help
exits 0, every option says what it does, shows its default and (for a time) its unit, and a flag
name means the same in every command that has it, but for the exceptions listed below."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator

import pytest

from edgerun import __version__, cli

# flag -> why its default (or type) may differ between the commands that have it
EXCEPTIONS = {
    "--batch-size": "train: 32, a device-side default; federated: B = 10 of FedAvg (McMahan et al.), where a "
                    "device holds few examples; make-trainable: the batch a --profile's memory budget is checked "
                    "at, 1 for the smallest train step",
    "--epochs": "train: passes over the data (1); federated: local epochs per round, E = 5 of FedAvg",
    "--key": "coordinator: its own key file coordinator.key; client: ID.key, named after --id",
    "--lr": "make-trainable stores the learning rate in the model (0.01); every other command defaults to that "
            "stored one (None)",
    "--metrics": "train: beside the trained model (derived from -o); simulate: rounds.json in this folder",
    "--seed": "make-trainable: the Dropout masks, None = new ones each session as Dropout means them; train: "
              "the shuffling, 0 = the same order every run",
    "--state": "simulate keeps its coordinator state in a temporary file unless told; the others name the "
               "coordinator's file, coordinator.db",
    "--version": "edgerun --version prints the program's version and takes no value; federated export "
                 "--version N is the older name of --model-version N",
}


Command = tuple[tuple[str, ...], argparse.ArgumentParser]


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[Command]:
    """(command path, parser) for the whole tree, the top-level parser first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name))


TREE = list(commands(cli.build_parser()))
IDS = [" ".join(path) or "edgerun" for path, _ in TREE]


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The arguments --help shows, but -h itself and the subcommand lists."""
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)
            and a.help != argparse.SUPPRESS]


def shown_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The help of one argument as --help prints it, on one line."""
    formatter = parser._get_formatter()
    formatter.add_argument(action)
    return " ".join(formatter.format_help().split())


def test_tree_has_every_command() -> None:
    assert {" ".join(p) for p, _ in TREE} >= {"", "inspect", "run", "bench", "convert", "make-trainable", "train",
                                              "serve", "federated", "federated coordinator", "federated client",
                                              "federated simulate", "federated status", "federated export"}


@pytest.mark.parametrize("path", [p for p, _ in TREE], ids=IDS)
def test_help_exits_0(path: tuple[str, ...], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*path, "--help"])
    assert exit_info.value.code == 0
    assert "usage: edgerun" in capsys.readouterr().out


def test_version(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"edgerun {__version__}"


@pytest.mark.parametrize("path, parser", TREE, ids=IDS)
def test_every_argument_has_help(path: tuple[str, ...], parser: argparse.ArgumentParser) -> None:
    missing = [a.option_strings or a.dest for a in options(parser) if not (a.help or "").strip()]
    assert not missing, f"edgerun {' '.join(path)}: no help for {missing}"


@pytest.mark.parametrize("path, parser", TREE, ids=IDS)
def test_every_default_is_shown(path: tuple[str, ...], parser: argparse.ArgumentParser) -> None:
    for action in options(parser):
        if action.default is None or action.default is False or action.default in ([], argparse.SUPPRESS):
            continue
        text = shown_help(parser, action)
        assert f"(default: {action.default})" in text or "(default " in text, \
            f"edgerun {' '.join(path)} {action.option_strings}: the default {action.default!r} is not shown: {text}"


@pytest.mark.parametrize("path, parser", TREE, ids=IDS)
def test_times_say_their_unit(path: tuple[str, ...], parser: argparse.ArgumentParser) -> None:
    """A flag named for a time (-timeout, -secs, -s) reads SECONDS (or MICROSECONDS: -us)."""
    for action in options(parser):
        for flag in action.option_strings:
            if re.search(r"(timeout|-secs|-seconds)$", flag):
                assert action.metavar == "SECONDS", f"edgerun {' '.join(path)} {flag}: metavar {action.metavar!r}"
            if flag.endswith("-us"):
                assert action.metavar == "MICROSECONDS", f"edgerun {' '.join(path)} {flag}"


def _meaning(action: argparse.Action) -> tuple:
    choices = None if action.choices is None else tuple(action.choices)
    return type(action).__name__, action.type, repr(action.default), choices, action.nargs


def test_a_flag_means_the_same_in_every_command() -> None:
    uses: dict[str, dict[tuple, list[str]]] = {}
    for path, parser in TREE:
        for action in options(parser):
            for flag in action.option_strings:
                uses.setdefault(flag, {}).setdefault(_meaning(action), []).append(" ".join(path) or "edgerun")
    differing = {flag: meanings for flag, meanings in uses.items() if len(meanings) > 1}
    assert set(differing) == set(EXCEPTIONS), (
        f"flags whose type or default differ between commands, not in EXCEPTIONS: "
        f"{ {f: m for f, m in differing.items() if f not in EXCEPTIONS} }; "
        f"EXCEPTIONS that no longer differ: {set(EXCEPTIONS) - set(differing)}")


def test_round_timeout_is_one_setting() -> None:
    found = [(path, a) for path, p in TREE for a in options(p) if "--round-timeout" in a.option_strings]
    assert [p for p, _ in found] == [("federated", "coordinator"), ("federated", "simulate")]
    assert {(a.default, a.metavar) for _, a in found} == {(60.0, "SECONDS")}


@pytest.mark.parametrize("command", ["run", "bench"])
def test_run_and_bench_share_device_threads_and_profile(command: str) -> None:
    parser = dict(TREE)[(command,)]
    flags = {f: a for a in options(parser) for f in a.option_strings}
    for flag in ("--device", "--threads", "--profile"):
        assert flag in flags and flags[flag].help, f"edgerun {command}: {flag}"
    assert "kernel threads" in flags["--threads"].help


def test_serve_names_its_blas_threads_apart_and_keeps_the_old_name(capsys: pytest.CaptureFixture) -> None:
    from edgerun.serving.cli import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args(["--model-repository", ".", "--blas-threads", "3"]).threads == 3
    assert parser.parse_args(["--model-repository", ".", "--threads", "2"]).threads == 2
    assert "--threads is deprecated; use --blas-threads" in capsys.readouterr().err
    assert "--threads" not in " ".join(shown_help(parser, a) for a in options(parser))
