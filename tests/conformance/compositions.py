"""Tenant filesystems composing mounts, as conformance targets.

The suite runs at a target's root, so a composition that tests *inside* a
mount is wrapped in :class:`Subtree`, which maps the suite's paths below a
prefix and strips it from the names it returns.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fsspec import AbstractFileSystem

from mosaic import providers
from mosaic.config.schema import Config
from mosaic.providers.base import Capabilities
from mosaic.vfs.permissions import PermissionView
from mosaic.vfs.storage import StorageRegistry
from mosaic.vfs.tenantfs import TenantFileSystem
from tests.conformance.targets import Target
from tests.support import azurite, fakegcs, moto, samba, swift

#: the TenantFileSystem methods the suite calls, and which arguments are paths
PATH_METHODS = {
    "ls": 1, "info": 1, "exists": 1, "isdir": 1, "isfile": 1, "mkdir": 1, "makedirs": 1,
    "rmdir": 1, "rm_file": 1, "rm": 1, "open": 1, "touch": 1, "set_mtime": 1, "cat_file": 1,
    "mv": 2, "cp_file": 2, "copy": 2,
}


class Subtree:
    """The suite's view of ``fs`` below ``prefix``."""

    cachable = False  # like every provider: never shared between builds

    def __init__(self, fs: AbstractFileSystem, prefix: str) -> None:
        self._fs, self._prefix = fs, prefix

    def _inner(self, path: str) -> str:
        path = path.strip("/")
        return f"{self._prefix}/{path}" if path else self._prefix

    def _outer(self, entry: dict[str, Any]) -> dict[str, Any]:
        name = entry["name"]
        return {**entry, "name": name[len(self._prefix) + 1:] if name != self._prefix else ""}

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._fs, name)
        count = PATH_METHODS.get(name)
        if count is None:
            return method

        @functools.wraps(method)
        def mapped(*args: Any, **kwargs: Any) -> Any:
            args = tuple(self._inner(a) for a in args[:count]) + args[count:]
            result = method(*args, **kwargs)
            if name == "ls" and kwargs.get("detail", True):
                return [self._outer(entry) for entry in result]
            if name == "ls":
                return [self._outer({"name": n})["name"] for n in result]
            if name == "info":
                return self._outer(result)
            return result

        return mapped


def _tenant_fs(tmp: Path, root: dict[str, Any], mounts: dict[str, Any]) -> TenantFileSystem:
    config = Config.model_validate({"tenants": {"t": {
        "root": root,
        "mounts": {path: {"provider": spec} for path, spec in mounts.items()},
    }}})
    table = StorageRegistry(tmp).mount_table(config, "t", "tester")
    return TenantFileSystem(table, PermissionView({}, "tester", (), "write"))


def _local(tmp: Path, name: str) -> dict[str, Any]:
    return {"type": "local", "root": str(tmp / name)}


def root_only(tmp: Path) -> Target:
    return Target(_tenant_fs(tmp, _local(tmp, "root"), {}), Capabilities())


def in_a_mount(tmp: Path) -> Target:
    fs = _tenant_fs(tmp, {"type": "memory"}, {"/data": _local(tmp, "mounted")})
    return Target(Subtree(fs, "data"), Capabilities())  # type: ignore[arg-type]


def in_a_nested_mount(tmp: Path) -> Target:
    fs = _tenant_fs(tmp, _local(tmp, "root"), {
        "/a": {"type": "memory"},
        "/a/b/c": _local(tmp, "nested"),
    })
    return Target(Subtree(fs, "a/b/c"), Capabilities())  # type: ignore[arg-type]


def in_an_s3_mount(tmp: Path) -> Target:
    """A local tenant root with /s3 on a fresh bucket of the test moto server."""
    fs = _tenant_fs(tmp, _local(tmp, "root"), {"/s3": moto.provider(moto.fresh_bucket())})
    return Target(Subtree(fs, "s3"), providers.load("s3").CAPABILITIES,  # type: ignore[arg-type]
                  listed_mtimes=False)


def in_a_gcs_mount(tmp: Path) -> Target:
    """A local tenant root with /gcs on a fresh bucket of the test fake-gcs-server."""
    fs = _tenant_fs(tmp, _local(tmp, "root"), {"/gcs": fakegcs.provider(fakegcs.fresh_bucket())})
    return Target(Subtree(fs, "gcs"), providers.load("gcs").CAPABILITIES)  # type: ignore[arg-type]


def in_a_swift_mount(tmp: Path) -> Target:
    """A local tenant root with /swift on a fresh container of the test Swift."""
    fs = _tenant_fs(tmp, _local(tmp, "root"), {"/swift": swift.provider(swift.fresh_container())})
    return Target(Subtree(fs, "swift"),  # type: ignore[arg-type]
                  providers.load("swift").CAPABILITIES, listed_mtimes=False)


def in_an_azure_mount(tmp: Path) -> Target:
    """A local tenant root with /azure on a fresh container of the test Azurite."""
    fs = _tenant_fs(tmp, _local(tmp, "root"),
                    {"/azure": azurite.provider(azurite.fresh_container())})
    return Target(Subtree(fs, "azure"),  # type: ignore[arg-type]
                  providers.load("azure_blob").CAPABILITIES, listed_mtimes=False)


def in_an_smb_mount(tmp: Path) -> Target:
    """A local tenant root with /smb on a fresh folder of the test smbd's share."""
    spec = samba.provider("conformance", path=samba.fresh_folder())
    fs = _tenant_fs(tmp, _local(tmp, "root"), {"/smb": spec})
    return Target(Subtree(fs, "smb"), providers.load("smb").CAPABILITIES)  # type: ignore[arg-type]


COMPOSITIONS: dict[str, Callable[[Path], Target]] = {
    "tenant-root-only": root_only,
    "tenant-in-a-mount": in_a_mount,
    "tenant-in-a-nested-mount": in_a_nested_mount,
    "tenant-in-an-s3-mount": in_an_s3_mount,
    "tenant-in-a-gcs-mount": in_a_gcs_mount,
    "tenant-in-a-swift-mount": in_a_swift_mount,
    "tenant-in-an-azure-mount": in_an_azure_mount,
    "tenant-in-an-smb-mount": in_an_smb_mount,
}
