"""The layers read top-down: no module imports a package above its own.

From the bottom up: the shared basics (``mosaic.core``), the storage
providers, the config schema, logging, the VFS, identity (``auth``), the
WebDAV layer, the HTTP front end, then what assembles and runs them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mosaic"
#: bottom first; a module may import its own part and any part before it
LAYERS = ["core", "providers", "config", "logs", "vfs", "auth", "dav", "front", "accesslog",
          "preflight", "app", "server", "cli", "__main__"]


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "mosaic":
                found.update(f"mosaic.{alias.name}" for alias in node.names)
            elif node.module.startswith("mosaic."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("mosaic."))
    return found


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.stat().st_size)


def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in _modules()}
    assert parts - {"__init__"} <= set(LAYERS), parts - set(LAYERS)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_reaches_up(path: Path) -> None:
    own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    if own == "__init__":
        return
    rank = LAYERS.index(own)
    upward = sorted(m for m in _imports(path)
                    if _part(m) in LAYERS and LAYERS.index(_part(m)) > rank)
    assert not upward, f"{path.relative_to(PACKAGE)} ({own}) imports a layer above it: {upward}"
