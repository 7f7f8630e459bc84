"""`--config FILE.toml`: a command's settings from a TOML file, the command line overriding it.

    edgerun serve --config serve.toml --http-port 9000

The keys are the command's long option names without the leading `--` (`grpc-port` or
`grpc_port`), the values of the option's type: a TOML integer for an int option, a number for a
float, a string for the others (passed through the option's own type and choices, as on the
command line), a boolean for a flag that takes no value, an array for an option given more than
once (`load-model = ["a", "b"]`). Relative paths in the file are relative to the file's folder.
An option on the command line replaces the file's value (an array too; it does not add to it).

`add_config_option(parser)` gives any argparse parser this option; the file is read while the
parser parses (before it checks for required options, so the file may hold those too). A file that
cannot be read, is not TOML, or holds an unknown key or a value of the wrong type ends the parse
with one line, `<prog>: error: <file>: ...`, and exit code 2, as argparse's own errors do.
"""

from __future__ import annotations

import argparse
import difflib
import sys
import tomllib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import Any

OPTION = "--config"
_TOML_TYPES = {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array",
               dict: "a table"}


class ConfigError(ValueError):
    """A config file that cannot be used; the message is one line naming the file (and the key)."""


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """Give `parser` a `--config FILE` option whose TOML file sets the parser's other options (see the
    module's docstring). The parser's `parse_known_args` (hence `parse_args`, and argparse's own call
    when `parser` is a subcommand) reads the file first."""
    parser.add_argument(OPTION, type=Path, metavar="FILE",
                        help="TOML file of settings: this command's long option names without '--' as keys "
                             "(e.g. grpc-port = 8001), paths relative to the file's folder; options given on "
                             "the command line override it")
    parse = parser.parse_known_args

    def parse_known_args(args: Sequence[str] | None = None,
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        return _parse_with_config(parser, parse, args, namespace)

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


def _parse_with_config(parser: argparse.ArgumentParser, parse: Callable, args: Sequence[str] | None,
                       namespace: argparse.Namespace | None) -> tuple[argparse.Namespace, list[str]]:
    """`parse(args, namespace)` with the options the config file in `args` sets as defaults."""
    arg_list = list(sys.argv[1:] if args is None else args)
    path = config_path(parser, arg_list)
    settings: dict[str, Any] = {}
    if path is not None:
        try:
            settings = read_settings(parser, path)
        except ConfigError as exc:
            _fail(parser, str(exc))
    with _set_by_file(parser, settings):
        namespace, extras = parse(arg_list, namespace)
    given = getattr(namespace, _dest(parser), None)
    if given is not None and given != path:  # not found by config_path: a case it does not know
        _fail(parser, f"{OPTION} {given} was not read: write it as {OPTION} FILE")
    for dest, value in settings.items():
        if not hasattr(namespace, dest):  # not given on the command line
            setattr(namespace, dest, value)
    return namespace, extras


def config_path(parser: argparse.ArgumentParser, args: Sequence[str]) -> Path | None:
    """The FILE of the last `--config FILE` or `--config=FILE` in `args` (before a `--`), or None. An
    abbreviation argparse accepts (`--conf`: a prefix of no other option) counts too."""
    names = [flag for a in parser._actions for flag in a.option_strings if flag.startswith("--")]
    found = None
    for i, arg in enumerate(args):
        name, equals, value = arg.partition("=")
        if arg == "--":
            break
        if name != OPTION and not (parser.allow_abbrev and len(name) > 2 and
                                   [n for n in names if n.startswith(name)] == [OPTION]):
            continue
        if equals:
            found = value
        elif i + 1 < len(args):
            found = args[i + 1]
    return None if found is None else Path(found)


@contextmanager
def _set_by_file(parser: argparse.ArgumentParser, settings: dict[str, Any]) -> Iterator[None]:
    """While the parser parses, the options the file sets are neither required nor defaulted: an option
    absent from the parsed namespace afterwards was not on the command line."""
    actions = [a for a in parser._actions if a.dest in settings]
    saved = [(a, a.default, a.required) for a in actions]
    for action in actions:
        action.default, action.required = argparse.SUPPRESS, False
    try:
        yield
    finally:
        for action, default, required in saved:
            action.default, action.required = default, required


def read_settings(parser: argparse.ArgumentParser, path: Path) -> dict[str, Any]:
    """The file's settings as {dest: value}, each value what the command line would have parsed.
    ConfigError (one line) for an unreadable or malformed file, an unknown key, a key set twice, or a
    value of the wrong type."""
    try:
        with open(path, "rb") as file:
            table = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a valid TOML file: {exc}") from None
    keys = settable_options(parser)
    settings: dict[str, Any] = {}
    named: dict[str, str] = {}  # dest -> the key that set it
    for key, raw in table.items():
        action = keys.get(key.replace("_", "-"))
        if action is None:
            raise ConfigError(f"{path}: {_unknown(key, keys)}")
        if action.dest in named:
            raise ConfigError(f"{path}: keys {named[action.dest]!r} and {key!r} set the same option")
        named[action.dest] = key
        settings[action.dest] = _value(action, raw, path, key)
    for key in named.values():
        _warn_if_hidden(parser, keys[key.replace("_", "-")], path, key)
    return settings


def _fail(parser: argparse.ArgumentParser, message: str) -> None:
    """End the parse as argparse's errors do (exit code 2), with one line and no usage."""
    parser.exit(2, f"{parser.prog}: error: {message}\n")


def _dest(parser: argparse.ArgumentParser) -> str:
    return next(a.dest for a in parser._actions if OPTION in a.option_strings)


def settable_options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """{key: action} of the options a file may set: every long option name without `--`, but --help,
    --version and --config."""
    keys: dict[str, argparse.Action] = {}
    for action in parser._actions:
        if OPTION in action.option_strings or isinstance(action, argparse._HelpAction | argparse._VersionAction):
            continue
        if not _kind(action):
            continue
        for flag in action.option_strings:
            if flag.startswith("--"):
                keys[flag[2:]] = action
    return keys


def _kind(action: argparse.Action) -> str | None:
    """How a file gives the action's value: 'flag' (a boolean), 'list' (an array), 'value' (one
    value), or None when a file cannot set it (a count, an option given more than once with several
    values each...)."""
    if isinstance(action, argparse._StoreConstAction):  # store_const, store_true, store_false
        return "flag"
    if action.nargs == 0 or isinstance(action, argparse._SubParsersAction):
        return None
    if isinstance(action, argparse._AppendAction) and not isinstance(action, argparse._ExtendAction):
        return "list" if action.nargs is None else None
    return "list" if action.nargs in ("*", "+") or isinstance(action.nargs, int) else "value"


def _value(action: argparse.Action, raw: Any, path: Path, key: str) -> Any:
    """What the command line would have stored for `raw`; ConfigError naming what is expected."""
    kind = _kind(action)
    if kind == "flag":
        if not isinstance(raw, bool):
            raise ConfigError(f"{path}: key {key!r}: expected a boolean (true: as if given), got {_shown(raw)}")
        return action.const if raw else action.default
    if kind == "list":
        if not isinstance(raw, list):
            raise ConfigError(f"{path}: key {key!r}: expected an array of {_expected(action)}, got {_shown(raw)}")
        return [_scalar(action, item, path, key) for item in raw]
    return _scalar(action, raw, path, key)


def _scalar(action: argparse.Action, raw: Any, path: Path, key: str) -> Any:
    """One value converted as the command line converts it (the action's type, then its choices)."""
    expected = _expected(action)
    if action.type is int:
        ok = isinstance(raw, int) and not isinstance(raw, bool)
    elif action.type is float:
        ok = isinstance(raw, int | float) and not isinstance(raw, bool)
    else:
        ok = isinstance(raw, str)
    if not ok:
        raise ConfigError(f"{path}: key {key!r}: expected {expected}, got {_shown(raw)}")
    try:
        value = action.type(raw) if action.type is not None else raw
    except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
        raise ConfigError(f"{path}: key {key!r}: expected {expected}, got {raw!r} ({exc})") from None
    if action.choices is not None and value not in action.choices:
        raise ConfigError(f"{path}: key {key!r}: expected {expected}, got {raw!r}")
    if isinstance(value, PurePath) and not value.is_absolute():
        value = type(value)(path.parent / value)
    return value


def _expected(action: argparse.Action) -> str:
    if action.choices is not None:
        return "one of " + ", ".join(repr(c) for c in action.choices)
    if action.type is int:
        return "an integer"
    if action.type is float:
        return "a number"
    return "a path (a string)" if action.type is Path else "a string"


def _shown(raw: Any) -> str:
    """A TOML value and its type, e.g. "'8001' (a string)"."""
    kind = next((name for t, name in _TOML_TYPES.items() if isinstance(raw, t)), type(raw).__name__)
    return f"{raw!r} ({kind})" if not isinstance(raw, dict | list) else kind


def _unknown(key: str, keys: dict[str, argparse.Action]) -> str:
    """An unknown key's line: the closest valid key, and the valid (shown) keys."""
    visible = [k for k, a in keys.items() if a.help != argparse.SUPPRESS]
    close = difflib.get_close_matches(key.replace("_", "-"), visible, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key {key!r}{hint}; valid keys: {', '.join(visible)}"


def _warn_if_hidden(parser: argparse.ArgumentParser, action: argparse.Action, path: Path, key: str) -> None:
    """A key of an option --help hides (an old name) works, with a warning naming the shown one."""
    if action.help != argparse.SUPPRESS:
        return
    shown = next((flag[2:] for a in parser._actions if a.dest == action.dest and a.help != argparse.SUPPRESS
                  for flag in a.option_strings if flag.startswith("--")), None)
    instead = f"; use {shown!r}" if shown else ""
    print(f"edgerun: warning: {path}: key {key!r} is deprecated{instead}", file=sys.stderr)
