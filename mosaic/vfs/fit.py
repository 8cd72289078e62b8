"""Whether names fit the store they go to: what the VFS reads from a mount's
Capabilities before it asks the provider, and before a tree crosses mounts.

A path into a mount with ``reserved_names`` is refused when a segment breaks
Windows' rules; a tree moved or copied into a mount whose rules the source does
not share is checked whole first (every name, and every pair of siblings that
``case_insensitive_names`` would make one), so nothing is half done.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from mosaic.core import names, paths
from mosaic.core.capabilities import Capabilities
from mosaic.core.errors import InvalidPathError, NameCollisionError

#: (folder, its member names) for every folder of a tree, the top one first
Walk = Iterable[tuple[str, list[str]]]


def check_path(rel: str, capabilities: Capabilities, mount: str) -> None:
    """Refuse a path of a mount with Windows' rules if a segment breaks them."""
    if not capabilities.reserved_names or not rel:
        return
    for segment in rel.split("/"):
        _check_name(segment, mount)


def _check_name(name: str, mount: str, where: str = "") -> None:
    problem = names.windows_name_problem(name)
    if problem:
        place = f"{where} cannot go to" if where else "refused by the store of"
        raise InvalidPathError(f"{problem}: {place} {mount or '/'}")


def rules_hold(source: Capabilities, target: Capabilities) -> bool:
    """Every tree stored under ``source``'s naming rules fits ``target``'s."""
    return ((source.reserved_names or not target.reserved_names)
            and (source.case_insensitive_names or not target.case_insensitive_names))


def check_tree(walk: Callable[[], Walk], target: Capabilities, mount: str) -> None:
    """Refuse a tree (``walk`` lists it) that cannot be stored whole in ``mount``."""
    if not (target.reserved_names or target.case_insensitive_names):
        return
    for folder, members in walk():
        if target.reserved_names:
            for name in members:
                _check_name(name, mount, "/" + paths.join(folder, name))
        clash = names.case_collision(members) if target.case_insensitive_names else None
        if clash:
            raise NameCollisionError("/" + folder, *clash, mount)
