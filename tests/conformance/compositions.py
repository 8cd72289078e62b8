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

from mosaic.config.schema import Config
from mosaic.core.capabilities import Capabilities
from mosaic.providers.memory import MemoryFileSystem
from mosaic.vfs.mounts import MountEntry, MountTable
from mosaic.vfs.permissions import PermissionView
from mosaic.vfs.quota import Usage
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


def _config(root: dict[str, Any], mounts: dict[str, Any]) -> Config:
    return Config.model_validate({"tenants": {"t": {
        "root": root,
        "mounts": {path: {"provider": spec} for path, spec in mounts.items()},
    }}})


def user_fs(registry: StorageRegistry, config: Config, user: str) -> TenantFileSystem:
    """Tenant ``t`` of ``config`` as ``user`` sees it (a ``{user}`` mount is theirs)."""
    table = registry.mount_table(config, "t", user)
    return TenantFileSystem(table, PermissionView({}, user, (), "write"))


def _tenant_fs(tmp: Path, root: dict[str, Any], mounts: dict[str, Any]) -> TenantFileSystem:
    return user_fs(StorageRegistry(tmp), _config(root, mounts), "tester")


def _local(tmp: Path, name: str) -> dict[str, Any]:
    return {"type": "local", "root": str(tmp / name)}


def _composed(fs: TenantFileSystem, mount: str = "") -> Target:
    """The suite inside ``mount`` of ``fs``, with the capabilities the VFS reads there."""
    capabilities = fs.mount_of(mount).capabilities
    return Target(Subtree(fs, mount) if mount else fs, capabilities)  # type: ignore[arg-type]


def root_only(tmp: Path) -> Target:
    return _composed(_tenant_fs(tmp, _local(tmp, "root"), {}))


def in_a_mount(tmp: Path) -> Target:
    return _composed(_tenant_fs(tmp, {"type": "memory"}, {"/data": _local(tmp, "mounted")}),
                     "data")


def in_a_nested_mount(tmp: Path) -> Target:
    fs = _tenant_fs(tmp, _local(tmp, "root"), {
        "/a": {"type": "memory"},
        "/a/b/c": _local(tmp, "nested"),
    })
    return _composed(fs, "a/b/c")


def in_an_s3_mount(tmp: Path) -> Target:
    """A local tenant root with /s3 on a fresh bucket of the test moto server."""
    return _composed(_tenant_fs(tmp, _local(tmp, "root"),
                                {"/s3": moto.provider(moto.fresh_bucket())}), "s3")


def in_a_gcs_mount(tmp: Path) -> Target:
    """A local tenant root with /gcs on a fresh bucket of the test fake-gcs-server."""
    return _composed(_tenant_fs(tmp, _local(tmp, "root"),
                                {"/gcs": fakegcs.provider(fakegcs.fresh_bucket())}), "gcs")


def in_a_swift_mount(tmp: Path) -> Target:
    """A local tenant root with /swift on a fresh container of the test Swift."""
    return _composed(_tenant_fs(tmp, _local(tmp, "root"),
                                {"/swift": swift.provider(swift.fresh_container())}), "swift")


def in_an_azure_mount(tmp: Path) -> Target:
    """A local tenant root with /azure on a fresh container of the test Azurite."""
    return _composed(_tenant_fs(tmp, _local(tmp, "root"),
                                {"/azure": azurite.provider(azurite.fresh_container())}), "azure")


def in_an_smb_mount(tmp: Path) -> Target:
    """A local tenant root with /smb on a fresh folder of the test smbd's share."""
    spec = samba.provider("conformance", path=samba.fresh_folder())
    return _composed(_tenant_fs(tmp, _local(tmp, "root"), {"/smb": spec}), "smb")


def smb_homes(tmp: Path) -> Config:
    """A local tenant root with /home on the test smbd: ``path: <fresh folder>/{user}``,
    every user's own folder (made on first use)."""
    spec = samba.provider("conformance", path=samba.fresh_folder() + "/{user}")
    return _config(_local(tmp, "root"), {"/home": spec})


def in_a_per_user_smb_mount(tmp: Path) -> Target:
    """The suite in the /home of :func:`smb_homes` as its user ``tester``."""
    return _composed(user_fs(StorageRegistry(tmp), smb_homes(tmp), "tester"), "home")


class PlainStore(MemoryFileSystem):
    """A store with none of the optional operations (as FTP or a plain WebDAV server
    would be): no rename, no copy on its side, no settable time. It declares so, and
    the VFS must stream moves and copies and ignore a client's time instead of asking."""

    def mv(self, path1: str, path2: str, **kwargs: Any) -> None:
        raise NotImplementedError("this store cannot rename")

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        raise NotImplementedError("this store cannot copy on its side")

    def copy(self, path1: str, path2: str, recursive: bool = True, **kwargs: Any) -> None:
        raise NotImplementedError("this store cannot copy on its side")

    def set_mtime(self, path: str, mtime: float) -> None:
        raise NotImplementedError("this store keeps its own times")


PLAIN = Capabilities(atomic_rename=False, server_side_copy=False, settable_mtime=False)
#: Windows' rules on a store that would take any name: the VFS alone enforces them
WINDOWS_RULES = Capabilities(reserved_names=True)


def _declared(fs: AbstractFileSystem, capabilities: Capabilities) -> Target:
    """A tenant whose root is ``fs``, declared with ``capabilities``."""
    entry = MountEntry("", False, capabilities, fs, usage=Usage(fs, 60.0))
    table = MountTable("t", [entry])
    return Target(TenantFileSystem(table, PermissionView({}, "tester", (), "write")),
                  capabilities)


def on_a_plain_store(tmp: Path) -> Target:
    return _declared(PlainStore(), PLAIN)


def under_windows_rules(tmp: Path) -> Target:
    return _declared(MemoryFileSystem(), WINDOWS_RULES)


COMPOSITIONS: dict[str, Callable[[Path], Target]] = {
    "tenant-root-only": root_only,
    "tenant-in-a-mount": in_a_mount,
    "tenant-in-a-nested-mount": in_a_nested_mount,
    "tenant-in-an-s3-mount": in_an_s3_mount,
    "tenant-in-a-gcs-mount": in_a_gcs_mount,
    "tenant-in-a-swift-mount": in_a_swift_mount,
    "tenant-in-an-azure-mount": in_an_azure_mount,
    "tenant-in-an-smb-mount": in_an_smb_mount,
    "tenant-in-a-per-user-smb-mount": in_a_per_user_smb_mount,
    "tenant-on-a-plain-store": on_a_plain_store,
    "tenant-under-windows-rules": under_windows_rules,
}
