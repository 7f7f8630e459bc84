"""`edgerun completion SHELL`: a tab-completion script for bash, zsh or tcsh, made by shtab.

    edgerun completion bash > ~/.local/share/bash-completion/completions/edgerun
    edgerun completion zsh > ~/.zfunc/_edgerun        # a folder on $fpath

shtab writes the script from the whole parser tree once, so a TAB runs no Python (argcomplete
would start Python and import every command's module on each TAB). Options that take a path
complete file names. shtab is the optional `completion` extra.
"""

from __future__ import annotations

import argparse
from pathlib import PurePath
from typing import Any

from edgerun.runtime.extras import require

SHELLS = ("bash", "zsh", "tcsh")  # what shtab writes


def add_parser(subparsers: Any) -> None:
    """Register `edgerun completion`."""
    p = subparsers.add_parser("completion", help="print a shell tab-completion script (bash, zsh, tcsh)")
    p.add_argument("shell", choices=SHELLS, help="the shell the script is for")
    p.set_defaults(func=cmd_completion)


def cmd_completion(args: argparse.Namespace) -> int:
    """Print the script; MissingExtra (one line) without shtab."""
    print(script(args.shell), end="")
    return 0


def script(shell: str) -> str:
    """The completion script of the whole `edgerun` tree for `shell`."""
    shtab = require("shtab", extra="completion", feature="shell completion")
    from edgerun.cli import build_parser

    parser = build_parser()
    for action in _actions(parser):
        if action.choices is None and isinstance(action.type, type) and issubclass(action.type, PurePath):
            action.complete = shtab.FILE  # type: ignore[attr-defined]
    return shtab.complete(parser, shell=shell)


def _actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Every action of `parser` and of its subcommands, and theirs in turn."""
    found = list(parser._actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found += _actions(sub)
    return found
