"""The `edgerun` command line: one dispatcher over the commands each package defines.

    edgerun --version
    edgerun inspect model.erm                      # from edgerun.runtime.cli
    edgerun convert model.onnx -o model.erm        # from edgerun.converters.cli
    edgerun serve --model-repository models/      # from edgerun.serving.cli
    edgerun completion bash                        # from edgerun.completion

Every package keeps its commands in its own module, listed in `COMMANDS` and imported
only when its command is used (or for `--help`), so `edgerun inspect` never imports
onnx or grpc. Each such module has `add_parser(subparsers)`, which registers its
commands with `set_defaults(func=handler)`; a handler takes the parsed arguments and
returns an exit code (None means 0).

Expected failures (EdgerunError, OSError, ValueError) print one line,
`edgerun: error: <message>`, and exit 1; `--debug` shows the traceback too. A missing
optional package (MissingExtra: the line names the extra to install) exits 2.

Every parser of the tree (the commands' own, and theirs in turn) is a `Parser`, whose help
shows each option's default (`HelpFormatter`); the rules all help follows, and the flags
that may differ between commands, are checked by tests/test_cli_help.py.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from edgerun import __version__
from edgerun.runtime.errors import EdgerunError
from edgerun.runtime.extras import MissingExtra

# command name -> module exposing add_parser(subparsers)
COMMANDS: dict[str, str] = {
    "inspect": "edgerun.runtime.cli",
    "run": "edgerun.runtime.cli",
    "bench": "edgerun.runtime.cli",
    "convert": "edgerun.converters.cli",
    "make-trainable": "edgerun.converters.training.cli",
    "train": "edgerun.runtime.train_cli",
    "federated": "edgerun.federated.cli",
    "serve": "edgerun.serving.cli",
    "completion": "edgerun.completion",
}

EXPECTED_ERRORS = (EdgerunError, OSError, ValueError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one edgerun command; returns the exit code (0 ok, 1 error, 2 usage via SystemExit)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_of(argv))
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        code = args.func(args)
    except BrokenPipeError:  # `edgerun inspect m.erm | head`: the reader has what it wanted
        _quiet_stdout()
        return 0
    except EXPECTED_ERRORS as exc:
        if args.debug:
            traceback.print_exc()
        print(f"edgerun: error: {_describe(exc)}", file=sys.stderr)
        return 2 if isinstance(exc, MissingExtra) else 1
    return 0 if code is None else int(code)


def _quiet_stdout() -> None:
    """Point stdout at the null device, so Python's exit does not fail again flushing it into
    the closed pipe (the documented way: docs.python.org, signal, "Note on SIGPIPE")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help that ends each option's text with "(default: X)", unless the default is None, an
    empty list or a flag's False (the text then says what happens), or the text already says
    what the default is ("(default 64 MiB)", in a friendlier unit than the value's)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default is None or action.default is False or action.default == [] or "(default" in text:
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help shows defaults; `add_subparsers` makes more of its kind,
    so every command of the tree gets the same help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser. Plugin modules are imported only for `command`, or all of
    them when `command` is None (help); the others get a placeholder entry."""
    parser = Parser(prog="edgerun", description="edgerun edge ML runtime")
    parser.add_argument("--version", action="version", version=f"edgerun {__version__}",
                        help="print the version of edgerun and exit")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    wanted = set(COMMANDS.values()) if command is None else {COMMANDS.get(command)}
    for module in dict.fromkeys(COMMANDS.values()):
        if module in wanted:
            _add_commands(subparsers, module)
    for name in COMMANDS:
        if name not in subparsers.choices:
            subparsers.add_parser(name, help=f"(see 'edgerun {name} --help')")
    return parser


def _command_of(argv: list[str]) -> str | None:
    """The first argument that is not an option (global options take no values)."""
    return next((a for a in argv if not a.startswith("-")), None)


def _add_commands(subparsers: Any, module: str) -> None:
    """Let `module` register its commands; if it cannot be imported, register stubs for its
    commands that fail with the import error when run."""
    try:
        importlib.import_module(module).add_parser(subparsers)
    except ImportError as exc:
        for name in (n for n, m in COMMANDS.items() if m == module):
            stub = subparsers.add_parser(name, help=f"(unavailable: {exc})")
            stub.add_argument("rest", nargs=argparse.REMAINDER, help="(ignored)")
            stub.set_defaults(func=functools.partial(_unavailable, name, exc))


def _unavailable(name: str, error: ImportError, args: argparse.Namespace) -> int:
    if isinstance(error, MissingExtra):
        raise error
    raise EdgerunError(f"command {name!r} is unavailable: {error}")


def _describe(exc: BaseException) -> str:
    """One line for an error: OSErrors as 'reason: file', others as their message."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
