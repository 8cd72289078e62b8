"""Load a YAML config file into a validated :class:`Config`, or explain why not.

Every problem is reported at once, each with the file, line and column of the
key or value at fault and its key path (``tenants.acme.mounts./p.provider.root``).
The YAML is read by a loader that remembers the mark of every key and value,
refuses duplicate keys (PyYAML would silently keep the last), and hands the
data to pydantic; each pydantic error's ``loc`` is then mapped back to a mark.
A message may quote a value it refuses (``unknown provider 'ftp'``), but never
one that an environment variable or a secret gave: those are shown as their
reference (``${NAME}``) or ``***`` (see ``secrets.Resolution.redact``).
"""

from __future__ import annotations

import contextlib
import difflib
import gc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mosaic.config import secrets, yaml_reader
from mosaic.config.schema import Config
from mosaic.config.yaml_plain import LimitError, Marks, PlainLoader

Loc = tuple[Any, ...]
KEY = "[key]"  # pydantic's loc marker for an error in a mapping key


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config file; ``line`` and ``column`` are 1-based, 0 if unknown."""

    file: str
    line: int
    column: int
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(Exception):
    """A config file could not be loaded; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))

    def __reduce__(self) -> tuple[type[ConfigError], tuple[list[Problem]]]:
        return ConfigError, (self.problems,)  # survives pickling between processes


class _Source:
    """One parsed file: plain data, the marks of every location, problems so far."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.index: dict[Loc, Marks] = {}
        self.problems: list[Problem] = []
        self.data: Any = None

    def problem(self, mark: yaml.Mark | None, loc: Loc, message: str) -> None:
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        self.problems.append(Problem(str(self.path), line, column, key_path(loc), message))

    def problem_at(self, line: int, column: int, message: str) -> None:
        self.problems.append(Problem(str(self.path), line, column, "", message))

    def parse(self, text: str) -> None:
        loader = PlainLoader(text)  # the depth and alias limits live there
        try:
            document = loader.load()
        except yaml.MarkedYAMLError as exc:
            self.problem(exc.problem_mark or exc.context_mark, (), _yaml_message(exc))
            return
        finally:
            loader.dispose()
        if document is None or not isinstance(document.data, dict):
            self._not_a_mapping(document.index[()].value if document else None)
            return
        self.data, self.index = document.data, document.index
        for loc, mark in document.duplicates:
            self.problem(mark, loc, "duplicate key (an earlier line sets it too)")

    def _not_a_mapping(self, mark: yaml.Mark | None) -> None:
        empty = "" if mark else "the file is empty (or only comments): "
        self.problem(mark, (), f"{empty}expected a mapping with at least `tenants`")

    def read(self) -> str | None:
        """The file's text; None (and a problem noted) if it cannot be config text."""
        try:
            text = yaml_reader.read_text(self.path)
            # PyYAML refuses control characters with a bare position: give the line.
            bad = yaml.reader.Reader.NON_PRINTABLE.search(text)
        except yaml_reader.FileProblem as exc:
            self.problem_at(exc.line, exc.column, exc.message)
            return None
        if bad:
            line, column = yaml_reader.position(text, bad.start())
            self.problem_at(line, column, f"character U+{ord(bad.group()):04X} is not allowed "
                            "in YAML (a control character)")
            return None
        return text

    def locate(self, loc: Loc, on_key: bool = False) -> yaml.Mark | None:
        """The mark for an error at ``loc``: the key for keys and collections, else the value."""
        if loc and loc[-1] == KEY:
            loc, on_key = loc[:-1], True
        while loc not in self.index:  # a missing key: point at its parent
            loc, on_key = loc[:-1], True
        marks = self.index[loc]
        return marks.key if (on_key and marks.key) else marks.value


def _yaml_message(exc: yaml.MarkedYAMLError) -> str:
    parts = [exc.context, exc.problem]
    kind = "YAML refused" if isinstance(exc, LimitError) else "YAML syntax error"
    return f"{kind}: " + "; ".join(p for p in parts if p)


def key_path(loc: Loc) -> str:
    """``("tenants", "acme", "users", "bob", "groups", 0)`` -> ``tenants.acme.users.bob.groups[0]``.

    ``[key]`` markers are dropped: the key itself is what the path names.
    """
    text = ""
    for part in loc:
        if part == KEY:
            continue
        text += f"[{part}]" if isinstance(part, int) else f"{'.' if text else ''}{part}"
    return text


def load_config(path: Path | str, read_files: set[Path] | None = None) -> Config:
    """Read, resolve and validate the config at ``path``.

    Raises ConfigError listing every problem, sorted by line. ``read_files``,
    if given, receives the secret files the config names (also on failure).
    """
    with _collector_paused():
        return _load(path, read_files)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Loading makes several objects per YAML value and no reference cycles (recursive
    aliases are refused), yet each of them counts towards the collector's next
    full pass: reading 1,000 tenants took about twice as long with it."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _load(path: Path | str, read_files: set[Path] | None) -> Config:
    source = _Source(Path(path))
    text = source.read()
    if text is None:
        raise ConfigError(source.problems)
    source.parse(text)
    if source.data is None:
        raise ConfigError(source.problems)
    resolution = secrets.resolve(source.data, source.path.parent)
    if read_files is not None:
        read_files.update(resolution.files)
    for target, origin in resolution.moved.items():
        source.index[target] = source.index.pop(origin)
    for loc, message in resolution.problems:
        source.problem(source.locate(loc), loc, message)
    config = _validate(source, {loc for loc, _ in resolution.problems})
    if source.problems or config is None:
        problems = sorted(source.problems, key=lambda p: (p.line, p.column))
        raise ConfigError([_scrub(p, resolution) for p in problems])
    return config


def _validate(source: _Source, unresolved: set[Loc]) -> Config | None:
    try:
        return Config.model_validate(source.data)
    except ValidationError as exc:
        for error in exc.errors(include_input=True, include_url=False):
            loc = tuple(error["loc"])
            if any(loc[:len(bad)] == bad for bad in unresolved):
                continue  # already reported as the missing variable or file
            on_key = error["type"] == "extra_forbidden"
            source.problem(source.locate(loc, on_key), loc, _message(error, source.data))
    return None


def _message(error: Any, data: Any) -> str:
    """A message saying what was expected, built without the input value."""
    kind, loc = error["type"], tuple(error["loc"])
    if kind == "extra_forbidden":
        return _unknown_key(loc, data)
    if kind == "missing":
        return f"missing required key {loc[-1]!r}"
    if kind == "value_error":
        return str(error["ctx"]["error"])
    if kind.endswith(("_type", "_parsing")):
        return f"{error['msg']} (got {_yaml_type(error.get('input'))})"
    return str(error["msg"])


def _unknown_key(loc: Loc, data: Any) -> str:
    shape = secrets.shape_at(loc[:-1], data)
    if shape is None:
        return "unknown key"
    allowed = sorted([*shape.fields, *(s + secrets.FILE_SUFFIX for s in shape.secrets)])
    hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
    suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
    return f"unknown key {loc[-1]!r}{suggestion}; expected one of: {', '.join(allowed)}"


_YAML_TYPES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
               type(None): "null", dict: "a mapping", list: "a list"}


def _yaml_type(value: Any) -> str:
    return _YAML_TYPES.get(type(value), type(value).__name__)


def _scrub(problem: Problem, resolution: secrets.Resolution) -> Problem:
    """Belt and braces: no value from the environment or a secret in a message."""
    message = resolution.redact(problem.message)
    if message == problem.message:
        return problem
    return Problem(problem.file, problem.line, problem.column, problem.key, message)
