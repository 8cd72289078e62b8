"""Per-folder permission rules, inherited downward.

A rule maps a virtual path to ``{principal: access}`` where a principal is a
user name, ``@group`` or ``*`` (every user of the tenant). For a path, the
deepest rule that names the user decides: the user's own entry first, else the
most permissive of the user's groups, else ``*``; a rule that names none of
them is passed over for its parent's. With no rule at all the tenant's
``default_access`` applies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from mosaic.core import paths

LEVEL = {"none": 0, "read": 1, "write": 2}


class PermissionView:
    """The rules of one tenant as seen by one user (cheap to build per request)."""

    def __init__(
        self,
        rules: Mapping[str, Mapping[str, str]],
        user: str,
        groups: Iterable[str],
        default: str,
    ) -> None:
        principals = {user.casefold()} | {"@" + g.casefold() for g in groups}
        self._default = default
        self._rules: dict[str, str] = {}
        for path, entries in rules.items():
            decided = _decide(entries, user.casefold(), principals)
            if decided is not None:
                self._rules[paths.match_key(paths.normalize(path))] = decided
        self._memo: dict[str, str] = {}

    MAX_MEMO = 10_000  # a view lives across requests: keep the memo bounded

    def access(self, path: str) -> str:
        key = paths.match_key(path)
        found = self._memo.get(key)
        if found is None:
            found = self._lookup(key)
            if len(self._memo) >= self.MAX_MEMO:
                self._memo.clear()
            self._memo[key] = found
        return found

    def _lookup(self, key: str) -> str:
        while True:
            if key in self._rules:
                return self._rules[key]
            if not key:
                return self._default
            key = paths.parent(key)

    def can_read(self, path: str) -> bool:
        return LEVEL[self.access(path)] >= LEVEL["read"]

    def can_write(self, path: str) -> bool:
        return self.access(path) == "write"

    def can_traverse(self, path: str) -> bool:
        """Visible as a folder: readable, or some rule below it grants access."""
        if self.can_read(path):
            return True
        key = paths.match_key(path)
        return any(
            level != "none" and paths.is_within(rule, key) and rule != key
            for rule, level in self._rules.items()
        )

    def rules_below(self, path: str) -> bool:
        """Some rule lies strictly below ``path``: its children may differ from it."""
        key = paths.match_key(path)
        return any(rule != key and paths.is_within(rule, key) for rule in self._rules)

    def weakest_below(self, path: str) -> str:
        """The lowest access anywhere in the subtree (for recursive delete/copy)."""
        key = paths.match_key(path)
        levels = [self.access(path)] + [
            level for rule, level in self._rules.items() if paths.is_within(rule, key)
        ]
        return min(levels, key=LEVEL.__getitem__)


def _decide(entries: Mapping[str, str], user: str, principals: set[str]) -> str | None:
    lowered = {name.casefold(): level for name, level in entries.items()}
    if user in lowered:
        return lowered[user]
    group_levels = [level for name, level in lowered.items() if name in principals]
    if group_levels:
        return max(group_levels, key=LEVEL.__getitem__)
    return lowered.get("*")
