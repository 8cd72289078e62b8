"""YAML text -> plain dicts, lists and scalars with the marks of every value, within limits.

Built straight from the parser's events (libyaml's when present), without
PyYAML's node graph: a config of 1,000 tenants is ~90,000 values, and the
node layer and a second pass over it took more time than parsing.

Aliases share one value among many places. Expanded, nested anchors grow
exponentially (a 250-byte "billion laughs" file holds 10^9 values) and an
alias inside its own anchor never ends. So every value is counted as often as
it is copied: aliases may add at most ``max(ALIAS_NODE_BUDGET, values written
in the file)`` values, an alias to an anchor still being read is refused, and
so is nesting deeper than ``MAX_DEPTH`` (the reader recurses per level).
Each refusal is a ``LimitError`` at the alias or value at fault.

Merge keys (``<<: *defaults``) follow YAML 1.1 as PyYAML does: keys written
in the mapping win over merged ones, and of several merged mappings the
earlier one wins.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import MappingNode, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

#: A real config is about 8 levels deep; Python's recursion limit is ~330 levels here.
MAX_DEPTH = 64
#: Values aliases may add (merge keys included) when the file itself holds fewer.
ALIAS_NODE_BUDGET = 100_000

Loc = tuple[Any, ...]
_TAG = "tag:yaml.org,2002:"
_STR, _MAP, _SEQ, _MERGE = (_TAG + name for name in ("str", "map", "seq", "merge"))


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


class LimitError(ComposerError):
    """The YAML is well-formed but exceeds a limit of this module."""

    def __init__(self, message: str, mark: yaml.Mark) -> None:
        super().__init__(None, None, message, mark)


class Marks(NamedTuple):
    key: yaml.Mark | None  # None for the document root
    value: yaml.Mark


Entries = list[tuple[Loc, Marks]]


class _Anchored(NamedTuple):
    value: Any
    #: its own entry and those below it, locations relative to it
    entries: Entries


class Document(NamedTuple):
    data: Any
    #: every location (``("tenants", "acme", "root")``) -> marks of its key and value
    index: dict[Loc, Marks]
    #: keys written twice in one mapping (PyYAML would silently keep the last)
    duplicates: list[tuple[Loc, yaml.Mark]]


class PlainLoader(_Parser, SafeConstructor, Resolver):
    """Reads one YAML document into a :class:`Document`; see the module's docstring."""

    def __init__(self, stream: str) -> None:
        _Parser.__init__(self, stream)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._entries: Entries = []  # in document order: a later entry for a loc wins
        self._duplicates: list[tuple[Loc, yaml.Mark]] = []
        self._anchors: dict[str, _Anchored | None] = {}  # None: still being read
        self._depth = 0
        self._written = 0  # values as written in the file
        self._aliased = 0  # values added by copying anchored ones

    def load(self) -> Document | None:
        """The single document of the stream, None if it holds none."""
        self.get_event()  # stream start
        if self.check_event(StreamEndEvent):
            return None
        start: DocumentStartEvent = self.get_event()
        data = self._value((), None)
        self.get_event()  # document end
        if not self.check_event(StreamEndEvent):
            raise ComposerError("expected a single document in the stream", start.start_mark,
                                "but found another document", self.get_event().start_mark)
        return Document(data, dict(self._entries), self._duplicates)

    def _value(self, loc: Loc, key_mark: yaml.Mark | None) -> Any:
        event = self.get_event()
        if isinstance(event, AliasEvent):
            return self._alias(event, loc, key_mark)
        if self._depth >= MAX_DEPTH:
            raise LimitError(f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
        anchor = event.anchor
        if anchor is not None:
            if anchor in self._anchors:
                raise ComposerError(None, None, f"found duplicate anchor {anchor!r}",
                                    event.start_mark)
            self._anchors[anchor] = None  # an alias to it from inside is recursive
        first = len(self._entries)
        self._entries.append((loc, Marks(key_mark, event.start_mark)))
        self._written += 1
        if isinstance(event, ScalarEvent):
            value = self._scalar(event)
        else:
            self._depth += 1
            try:
                value = self._collection(event, loc)
            finally:
                self._depth -= 1
        if anchor is not None:
            cut = len(loc)
            self._anchors[anchor] = _Anchored(
                value, [(entry_loc[cut:], marks) for entry_loc, marks in self._entries[first:]])
        return value

    def _scalar(self, event: ScalarEvent) -> Any:
        tag = self._tag(ScalarNode, event, event.value)
        if tag == _STR:  # most values: no constructor needed
            return event.value
        node = ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        return self.construct_object(node, deep=True)  # int, bool, null, float, timestamp...

    def _tag(self, kind: type, event: Any, value: str | None) -> str:
        tag = event.tag
        return self.resolve(kind, value, event.implicit) if tag is None or tag == "!" else tag

    def _collection(self, event: Any, loc: Loc) -> Any:
        is_sequence = isinstance(event, SequenceStartEvent)
        kind = SequenceNode if is_sequence else MappingNode
        if self._tag(kind, event, None) != (_SEQ if is_sequence else _MAP):
            raise ConstructorError(None, None, f"the tag {event.tag} has no place in a config",
                                   event.start_mark)
        if is_sequence:
            return self._sequence(loc)
        return self._mapping(loc, event.start_mark)

    def _sequence(self, loc: Loc) -> list[Any]:
        items: list[Any] = []
        while not self.check_event(SequenceEndEvent):
            items.append(self._value((*loc, len(items)), None))
        self.get_event()
        return items

    def _mapping(self, loc: Loc, start_mark: yaml.Mark) -> dict[Any, Any]:
        data: dict[Any, Any] = {}
        merged: list[tuple[Any, Any, Entries]] = []  # (key, value, entries) in YAML 1.1 order
        while not self.check_event(MappingEndEvent):
            key_event = self.get_event()
            if isinstance(key_event, ScalarEvent) and \
                    self._tag(ScalarNode, key_event, key_event.value) == _MERGE:
                merged.extend(self._merge_value(loc, start_mark))
                continue
            key = self._key(key_event)
            if key in data:
                self._duplicates.append(((*loc, key), key_event.start_mark))
            data[key] = self._value((*loc, key), key_event.start_mark)
        self.get_event()
        return self._merged(data, merged, loc) if merged else data

    def _key(self, event: Any) -> Any:
        if isinstance(event, ScalarEvent):
            key = self._scalar(event)
            if event.anchor is not None:
                self._anchors[event.anchor] = _Anchored(key, [((), Marks(None, event.start_mark))])
        elif isinstance(event, AliasEvent) and self._anchors.get(event.anchor) is not None:
            key = self._anchors[event.anchor].value  # type: ignore[union-attr]
        else:
            key = event  # a collection: refused below
        if not isinstance(key, str | int | float | bool | None):
            raise ConstructorError(None, None, "a mapping key must be a plain scalar",
                                   event.start_mark)
        return key

    def _merge_value(self, loc: Loc, start_mark: yaml.Mark) -> list[tuple[Any, Any, Entries]]:
        """The pairs ``<<: value`` brings, each with its entries relative to the mapping."""
        first = len(self._entries)
        value = self._value((*loc, "<<"), None)
        entries, self._entries[first:] = self._entries[first:], []
        is_list = isinstance(value, list)
        sources = value if is_list else [value]
        if not all(isinstance(source, dict) for source in sources):
            raise ConstructorError("while constructing a mapping", start_mark,
                                   "expected a mapping or list of mappings for merging",
                                   entries[0][1].value)
        # Group the entries by item: (index, key) in a list of mappings, (key,) in one.
        item_at = len(loc) + (2 if is_list else 1)
        by_item: dict[Loc, Entries] = {}
        for entry_loc, marks in entries:
            if len(entry_loc) > item_at:
                by_item.setdefault(entry_loc[len(loc) + 1:item_at + 1], []).append(
                    (entry_loc[item_at:], marks))
        pairs = []
        for index, source in reversed(list(enumerate(sources))):  # the earlier source wins
            for key, item in source.items():
                pairs.append((key, item, by_item[(index, key) if is_list else (key,)]))
        return pairs

    def _merged(self, data: dict[Any, Any], merged: list[tuple[Any, Any, Entries]],
                loc: Loc) -> dict[Any, Any]:
        """Merged pairs first, later ones winning; then the keys written here, which win."""
        result: dict[Any, Any] = {}
        winners: dict[Any, Entries] = {}
        for key, value, entries in merged:
            result[key] = value
            winners[key] = entries
        for key, entries in winners.items():
            if key not in data:  # a written key's own entries are already recorded
                self._entries.extend(((*loc, *entry_loc), marks) for entry_loc, marks in entries)
        result.update(data)
        return result

    def _alias(self, event: AliasEvent, loc: Loc, key_mark: yaml.Mark | None) -> Any:
        if event.anchor not in self._anchors:
            raise ComposerError(None, None, f"found undefined alias {event.anchor!r}",
                                event.start_mark)
        anchored = self._anchors[event.anchor]
        if anchored is None:
            raise LimitError(f"alias *{event.anchor} refers to its own anchor "
                             "(a recursive structure)", event.start_mark)
        self._aliased += len(anchored.entries)
        budget = max(ALIAS_NODE_BUDGET, self._written)
        if self._aliased > budget:
            raise LimitError(f"aliases expand to more than {budget:,} nodes (at *{event.anchor}); "
                             "write the values out", event.start_mark)
        (_, own_marks), *below = anchored.entries
        self._entries.append((loc, Marks(key_mark, own_marks.value)))
        self._entries.extend(((*loc, *entry_loc), marks) for entry_loc, marks in below)
        return _copy(anchored.value)


def _copy(value: Any) -> Any:
    """A copy of the containers (each place gets its own); scalars are immutable."""
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value
