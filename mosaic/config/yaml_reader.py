"""Reading a config file safely: its bytes, its text and its YAML, within limits.

A config is written by an admin, but it is also what a compromised account or
a careless copy-paste writes over a live server, which reloads it at once. So
no file may cost more than it is big:

* the file must be a regular file of at most ``MAX_FILE_BYTES`` (a FIFO or
  ``/dev/zero`` would block or fill memory) and valid UTF-8, else the line
  and column of the first bad byte is reported;
* YAML aliases share one node among many places. Expanded, nested anchors
  grow exponentially (a 250-byte "billion laughs" file holds 10^9 nodes) and
  an alias inside its own anchor never ends. While composing, every node is
  counted as often as it will be visited once aliases are expanded: aliases
  may add at most ``max(ALIAS_NODE_BUDGET, nodes written in the file)``
  nodes, and an alias to an anchor still being composed is refused;
* nesting deeper than ``MAX_DEPTH`` is refused before Python's recursion
  limit is near (PyYAML composes recursively).

Each refusal is a ``MarkedYAMLError`` at the alias or node at fault, so it is
reported like any syntax error: file, line, column, one line.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from yaml.composer import Composer, ComposerError
from yaml.constructor import SafeConstructor
from yaml.events import (
    AliasEvent,
    MappingEndEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner


class _PythonParser(Reader, Scanner, Parser):
    """PyYAML's own scanner and parser, for a PyYAML built without libyaml."""

    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)


try:  # libyaml scans and parses ~5x faster than the Python parser
    from yaml.cyaml import CParser as _Parser
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    _Parser = _PythonParser  # type: ignore[assignment,misc]

#: Far above any real config (1,000 tenants x 5 mounts, 3 users each: 1.25 MB), far below
#: trouble: a served config costs ~30 bytes of memory per byte of YAML (bench/tenants.py).
MAX_FILE_BYTES = 16 * 2**20
#: A real config is about 8 levels deep; Python's recursion limit is ~330 levels here.
MAX_DEPTH = 64
#: Nodes aliases may add (merge keys included) when the file itself is smaller.
ALIAS_NODE_BUDGET = 100_000


class FileProblem(Exception):
    """The file cannot be read as config text; ``line`` and ``column`` are 1-based, 0 if none."""

    def __init__(self, message: str, line: int = 0, column: int = 0) -> None:
        super().__init__(message)
        self.message, self.line, self.column = message, line, column


def read_text(path: Path) -> str:
    """The file's text, refusing what is not a regular, bounded, UTF-8 file."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise FileProblem(f"cannot read config: {exc.strerror}") from None
    try:
        _check_regular(os.fstat(fd))
    except FileProblem:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as file:
        try:
            raw = file.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise FileProblem(f"cannot read config: {exc.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:  # it grew after fstat
        raise FileProblem(_too_big(len(raw)))
    return decode(raw)


def _check_regular(info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise FileProblem("cannot read config: not a regular file")
    if info.st_size > MAX_FILE_BYTES:
        raise FileProblem(_too_big(info.st_size))


def _too_big(size: int) -> str:
    return (f"config file is {size:,} bytes; at most {MAX_FILE_BYTES:,} "
            f"({MAX_FILE_BYTES // 2**20} MiB) are read")


def decode(raw: bytes) -> str:
    """UTF-8 text (one leading BOM dropped), or a problem at the first bad byte."""
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        before = raw[:exc.start].decode("utf-8")
        line, column = position(before, len(before))
        raise FileProblem(f"not UTF-8 text: byte 0x{raw[exc.start]:02x} cannot start "
                          "or continue a character here", line, column) from None


def position(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of character ``index`` of ``text``."""
    before = text[:index]
    return before.count("\n") + 1, index - (before.rfind("\n") + 1) + 1


class LimitError(ComposerError):
    """The YAML is well-formed but exceeds a limit of this module."""

    def __init__(self, message: str, mark: yaml.Mark) -> None:
        super().__init__(None, None, message, mark)


class Marks(NamedTuple):
    key: yaml.Mark | None  # None for the document root
    value: yaml.Mark


class MarkedLoader(Composer, _Parser, SafeConstructor, Resolver):
    """A safe loader composing nodes within the limits above; see :class:`PlainData`.

    Events come from the parser (libyaml's when present); nodes are composed
    here in Python, because that is where aliases and depth are counted.
    """

    def __init__(self, stream: str) -> None:
        _Parser.__init__(self, stream)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._depth = 0
        self._written = 0  # nodes as written in the file
        self._aliased = 0  # nodes added by expanding aliases
        self._expanded_size: dict[str, int] = {}  # anchor -> its node count, aliases expanded

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        """PyYAML's composer, flattened (a fifth of the calls per node), plus the limits.

        No path resolvers are registered on a safe loader, so PyYAML's
        descend/ascend hooks are left out.
        """
        event = self.get_event()
        if isinstance(event, AliasEvent):
            return self._alias(event)
        if self._depth >= MAX_DEPTH:
            raise LimitError(f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
        anchor = event.anchor
        if anchor is not None and anchor in self.anchors:
            raise ComposerError(f"found duplicate anchor {anchor!r}; first occurrence",
                                self.anchors[anchor].start_mark, "second occurrence",
                                event.start_mark)
        visits_before = self._written + self._aliased
        if isinstance(event, ScalarEvent):
            node: Node = ScalarNode(self._tag(ScalarNode, event, event.value), event.value,
                                    event.start_mark, event.end_mark, style=event.style)
            if anchor is not None:
                self.anchors[anchor] = node
        else:
            node = self._collection(event, anchor)
        self._written += 1
        if anchor is not None:
            self._expanded_size[anchor] = self._written + self._aliased - visits_before
        return node

    def _tag(self, kind: type[Node], event: Any, value: str | None) -> str:
        tag = event.tag
        return self.resolve(kind, value, event.implicit) if tag is None or tag == "!" else tag

    def _collection(self, event: Any, anchor: str | None) -> Node:
        is_sequence = isinstance(event, SequenceStartEvent)
        kind = SequenceNode if is_sequence else MappingNode
        node = kind(self._tag(kind, event, None), [], event.start_mark, None,
                    flow_style=event.flow_style)
        if anchor is not None:
            self.anchors[anchor] = node  # before the children: an alias to it is recursive
        self._depth += 1
        try:
            if is_sequence:
                while not self.check_event(SequenceEndEvent):
                    node.value.append(self.compose_node(node, None))
            else:
                while not self.check_event(MappingEndEvent):
                    key = self.compose_node(node, None)
                    node.value.append((key, self.compose_node(node, key)))
        finally:
            self._depth -= 1
        node.end_mark = self.get_event().end_mark
        return node

    def _alias(self, event: AliasEvent) -> Node:
        if event.anchor not in self.anchors:
            raise ComposerError(None, None, f"found undefined alias {event.anchor!r}",
                                event.start_mark)
        self._count_alias(event)
        return self.anchors[event.anchor]

    def _count_alias(self, event: AliasEvent) -> None:
        size = self._expanded_size.get(event.anchor)
        if size is None:
            raise LimitError(f"alias *{event.anchor} refers to its own anchor "
                             "(a recursive structure)", event.start_mark)
        self._aliased += size
        budget = max(ALIAS_NODE_BUDGET, self._written)
        if self._aliased > budget:
            raise LimitError(f"aliases expand to more than {budget:,} nodes (at *{event.anchor}); "
                             "write the values out", event.start_mark)


Loc = tuple[Any, ...]
_MAP, _SEQ, _STR = (f"tag:yaml.org,2002:{name}" for name in ("map", "seq", "str"))
_MERGE = "tag:yaml.org,2002:merge"


class PlainData:
    """Plain dicts, lists and scalars from a composed node tree, in one pass.

    ``index`` maps every location (``("tenants", "acme", "root")``) to the
    marks of its key and value; ``duplicates`` lists keys written twice in
    one mapping (PyYAML would silently keep the last). An alias is copied at
    each place it is used, which the composer's budget has already bounded.
    """

    def __init__(self, loader: MarkedLoader) -> None:
        self._loader = loader
        self.index: dict[Loc, Marks] = {}
        self.duplicates: list[tuple[Loc, yaml.Mark]] = []

    def build(self, node: Node, loc: Loc, marks: Marks) -> Any:
        self.index[loc] = marks
        if node.tag == _STR:  # most values: skip the constructor's machinery
            return node.value
        if node.tag == _MAP and isinstance(node, MappingNode):
            return self._mapping(node, loc)
        if node.tag == _SEQ and isinstance(node, SequenceNode):
            return [self.build(child, (*loc, i), Marks(child.start_mark, child.start_mark))
                    for i, child in enumerate(node.value)]
        return self._loader.construct_object(node, deep=True)  # int, bool, null, !!set...

    def _mapping(self, node: MappingNode, loc: Loc) -> dict[Any, Any]:
        explicit = {id(k) for k, _ in node.value if k.tag != _MERGE}
        self._loader.flatten_mapping(node)  # resolves "<<" merge keys into node.value
        data: dict[Any, Any] = {}
        seen = set()  # keys written out in this mapping; merged ones may be overridden
        for key_node, value_node in node.value:
            key = self._key(key_node)
            if id(key_node) in explicit:
                if key in seen:
                    self.duplicates.append(((*loc, key), key_node.start_mark))
                seen.add(key)
            data[key] = self.build(value_node, (*loc, key),
                                   Marks(key_node.start_mark, value_node.start_mark))
        return data

    def _key(self, node: Node) -> Any:
        key = node.value if node.tag == _STR else self._loader.construct_object(node, deep=True)
        if not isinstance(key, str | int | float | bool | None):
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain scalar", node.start_mark)
        return key
