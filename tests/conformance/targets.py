"""Filesystems the conformance suite runs against.

A target factory receives a fresh temporary directory and returns a
:class:`Target`: the filesystem and the Capabilities its provider declares (the
suite reads those flags; it keeps no per-backend flags of its own). Every target
speaks the provider contract of :mod:`mosaic.core.capabilities`: relative paths, ""
is the root. Add a target (e.g. a tenant filesystem composing mounts) with one
entry in ``TARGETS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fsspec import AbstractFileSystem

from mosaic import providers
from mosaic.core.capabilities import BuildContext, Capabilities
from tests.support import azurite, fakegcs, moto, samba, swift


@dataclass
class Target:
    fs: AbstractFileSystem
    capabilities: Capabilities
    cleanup: Callable[[], None] | None = None


def _context(tmp: Path) -> BuildContext:
    return BuildContext(tenant="conformance", mount="/", data_dir=tmp)


def local_target(tmp: Path) -> Target:
    module = providers.load("local")
    options = module.Options(root=str(tmp / "local-root"))
    return Target(module.build(options, _context(tmp)), module.CAPABILITIES)


def memory_target(tmp: Path) -> Target:
    module = providers.load("memory")
    return Target(module.build(module.Options(), _context(tmp)), module.CAPABILITIES)


def s3_target(tmp: Path) -> Target:
    """A fresh bucket of the test moto server, rooted below a prefix."""
    module = providers.load("s3")
    spec = moto.provider(moto.fresh_bucket(), prefix="tenant/root")
    options = module.Options.model_validate({k: v for k, v in spec.items() if k != "type"})
    return Target(module.build(options, _context(tmp)), module.CAPABILITIES)


def gcs_target(tmp: Path) -> Target:
    """A fresh bucket of the test fake-gcs-server, rooted below a prefix."""
    module = providers.load("gcs")
    spec = fakegcs.provider(fakegcs.fresh_bucket(), prefix="tenant/root")
    options = module.Options.model_validate({k: v for k, v in spec.items() if k != "type"})
    return Target(module.build(options, _context(tmp)), module.CAPABILITIES)


def swift_target(tmp: Path) -> Target:
    """A fresh container of the test Swift (auth v1), rooted below a prefix."""
    module = providers.load("swift")
    spec = swift.provider(swift.fresh_container(), prefix="tenant/root")
    options = module.Options.model_validate({k: v for k, v in spec.items() if k != "type"})
    return Target(module.build(options, _context(tmp)), module.CAPABILITIES)


def swift_keystone_target(tmp: Path) -> Target:
    """The same through Keystone v3 auth (the fixture's identity endpoint)."""
    module = providers.load("swift")
    spec = swift.keystone_provider(swift.fresh_container(), prefix="tenant/root")
    options = module.Options.model_validate({k: v for k, v in spec.items() if k != "type"})
    return Target(module.build(options, _context(tmp)), module.CAPABILITIES)


def azure_target(tmp: Path) -> Target:
    """A fresh container of the test Azurite, rooted below a prefix."""
    module = providers.load("azure_blob")
    spec = azurite.provider(azurite.fresh_container(), prefix="tenant/root")
    options = module.Options.model_validate({k: v for k, v in spec.items() if k != "type"})
    return Target(module.build(options, _context(tmp)), module.CAPABILITIES)


def smb_target(tmp: Path) -> Target:
    """A fresh folder of the test smbd's ``conformance`` share, as the mount's ``path``."""
    module = providers.load("smb")
    spec = samba.provider("conformance", path=samba.fresh_folder())
    options = module.Options.model_validate({k: v for k, v in spec.items() if k != "type"})
    fs = module.build(options, _context(tmp))
    return Target(fs, module.CAPABILITIES, cleanup=fs.close)


def azure_files_target(tmp: Path) -> Target:
    """A fresh folder of the test smbd's Azure-like share (SMB 3, encryption required,
    the account's 88-character key as password), as the mount's ``path``."""
    module = providers.load("azure_files")
    spec = samba.azure_files_provider(path=samba.fresh_folder("azurefiles", samba.AZURE))
    options = module.Options.model_validate({k: v for k, v in spec.items() if k != "type"})
    fs = module.build(options, _context(tmp))
    return Target(fs, module.CAPABILITIES, cleanup=fs.close)


TARGETS: dict[str, Callable[[Path], Target]] = {
    "local": local_target,
    "memory": memory_target,
    "s3": s3_target,
    "gcs": gcs_target,
    "swift": swift_target,
    "swift-keystone": swift_keystone_target,
    "azure": azure_target,
    "smb": smb_target,
    "azure_files": azure_files_target,
}
