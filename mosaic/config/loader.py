"""Load a YAML config file into a validated :class:`Config`, or explain why not.

Every problem is reported at once, each with the file, line and column of the
key or value at fault and its key path (``tenants.acme.mounts./p.provider.root``).
The YAML is read by a loader that remembers the mark of every key and value,
refuses duplicate keys (PyYAML would silently keep the last), and hands the
data to pydantic; each pydantic error's ``loc`` is then mapped back to a mark.
Error messages never contain input values, so a secret cannot leak through
them.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from pydantic import ValidationError
from yaml.nodes import MappingNode, Node, SequenceNode

from mosaic.config import secrets
from mosaic.config.schema import Config

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


class _Marks(NamedTuple):
    key: yaml.Mark | None  # None for the document root
    value: yaml.Mark


class _MarkedDict(dict[Any, Any]):
    """A mapping as read from YAML, with the marks of its keys and values."""

    def __init__(self) -> None:
        super().__init__()
        self.marks: dict[Any, _Marks] = {}
        self.duplicates: list[tuple[Any, yaml.Mark]] = []


class _MarkedList(list[Any]):
    def __init__(self) -> None:
        super().__init__()
        self.marks: list[yaml.Mark] = []


class _MarkedLoader(yaml.SafeLoader):
    """SafeLoader whose mappings and sequences record marks and duplicate keys."""

    def construct_marked_map(self, node: MappingNode) -> Any:
        data = _MarkedDict()
        yield data
        explicit = {id(k) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"}
        self.flatten_mapping(node)  # resolves "<<" merge keys into node.value
        seen = set()  # keys written out in this mapping; merged ones may be overridden
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=False)
            if not isinstance(key, str | int | float | bool | None):
                raise yaml.constructor.ConstructorError(
                    None, None, "a mapping key must be a plain scalar", key_node.start_mark)
            if id(key_node) in explicit:
                if key in seen:
                    data.duplicates.append((key, key_node.start_mark))
                seen.add(key)
            data[key] = self.construct_object(value_node, deep=False)
            data.marks[key] = _Marks(key_node.start_mark, value_node.start_mark)

    def construct_marked_seq(self, node: SequenceNode) -> Any:
        data = _MarkedList()
        yield data
        for child in node.value:
            data.append(self.construct_object(child, deep=False))
            data.marks.append(child.start_mark)


_MarkedLoader.add_constructor("tag:yaml.org,2002:map", _MarkedLoader.construct_marked_map)
_MarkedLoader.add_constructor("tag:yaml.org,2002:seq", _MarkedLoader.construct_marked_seq)


class _Source:
    """One parsed file: plain data, the marks of every location, problems so far."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.index: dict[Loc, _Marks] = {}
        self.problems: list[Problem] = []
        self.data: Any = None

    def problem(self, mark: yaml.Mark | None, loc: Loc, message: str) -> None:
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        self.problems.append(Problem(str(self.path), line, column, key_path(loc), message))

    def parse(self, text: str) -> None:
        loader = _MarkedLoader(text)
        try:
            root_node: Node | None = loader.get_single_node()
            raw = loader.construct_document(root_node) if root_node is not None else None
        except yaml.MarkedYAMLError as exc:
            self.problem(exc.problem_mark or exc.context_mark, (), _yaml_message(exc))
            return
        finally:
            loader.dispose()
        if not isinstance(raw, dict):
            mark = root_node.start_mark if root_node is not None else None
            self.problem(mark, (), "expected a mapping with at least `tenants`")
            return
        self.data = self._plain(raw, (), _Marks(None, root_node.start_mark))

    def _plain(self, value: Any, loc: Loc, marks: _Marks) -> Any:
        """Copy ``value`` into plain dicts and lists, filling the mark index."""
        self.index[loc] = marks
        if isinstance(value, _MarkedDict):
            for key, mark in value.duplicates:
                self.problem(mark, (*loc, key), "duplicate key (an earlier line sets it too)")
            return {k: self._plain(v, (*loc, k), value.marks[k]) for k, v in value.items()}
        if isinstance(value, _MarkedList):
            return [self._plain(v, (*loc, i), _Marks(m, m))
                    for i, (v, m) in enumerate(zip(value, value.marks, strict=True))]
        return value

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
    return "YAML syntax error: " + "; ".join(p for p in parts if p)


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
    source = _Source(Path(path))
    try:
        text = source.path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        source.problem(None, (), f"cannot read config: {getattr(exc, 'strerror', None) or exc}")
        raise ConfigError(source.problems) from None
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
        raise ConfigError([_scrub(p, resolution.secrets) for p in problems])
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


def _scrub(problem: Problem, secret_values: set[str]) -> Problem:
    """Belt and braces: mask any secret that a validator put into a message."""
    message = problem.message
    for secret in sorted(secret_values, key=len, reverse=True):
        if len(secret) >= 3:
            message = message.replace(secret, "***")
    if message == problem.message:
        return problem
    return Problem(problem.file, problem.line, problem.column, problem.key, message)
