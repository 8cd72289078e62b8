"""What every storage provider declares and builds.

A provider module exposes three names:

* ``Options``: a pydantic model of its YAML section (``extra="forbid"``),
* ``CAPABILITIES``: a :class:`Capabilities` instance,
* ``build(options, context) -> fsspec.AbstractFileSystem``.

The filesystem it builds must:

* use paths relative to its own root ("" or "a/b", never leading "/"),
  and refuse anything that escapes that root with ``InvalidPathError``;
* raise only the errors of :mod:`mosaic.core.errors` and built-in OSErrors;
* return ``ls(path, detail=True)`` entries with ``name`` (relative path),
  ``type`` ("file" | "directory"), ``size`` and ``mtime`` (epoch float), and
  optionally ``etag`` (unquoted);
* support ``open(path, "wb", autocommit=False)`` returning a file whose
  ``close()`` does not publish, ``commit()`` (after close) publishes it
  atomically and ``discard()`` leaves nothing;
* set ``cachable = False`` so fsspec never shares an instance between tenants;
* if it declares ``volume_space``, implement ``space() -> (used, free)`` in bytes
  (what Finder and Explorer show as the drive's usage and free space).

A provider whose backend can be reached as the signed-in user (``smb`` with
``credentials: pass_through``) says so with a true ``signs_in_as_user`` property
of its options. The VFS then builds that mount for each signed-in user, with
``BuildContext.account`` set (never for a user without one: a local user, or one
signed in with Kerberos, is refused before), and the filesystem must implement
``close_if_idle() -> bool``: log off now unless a call is running or a file is open
(True when it did); a later call may sign in again. It is what ends a user's
session on the backend (:mod:`mosaic.auth.sessions`).

Behaviour fixed by the conformance suite (tests/conformance): ``ls`` of a file
raises NotADirectoryError; ``mkdir`` defaults to ``create_parents=False``; only
binary "rb"/"wb" modes; ``exists()`` raises InvalidPathError for a refused
path; a tree ``copy`` needs a destination that does not exist yet.
``mosaic.providers.common.ProviderFileSystem`` implements the composite
operations from a provider's primitives: start a new backend from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mosaic.core.credentials import SignedInAccount


@dataclass(frozen=True)
class Capabilities:
    """What a store can do, read by the VFS (mosaic/vfs/tenantfs.py) and the
    conformance suite instead of asking which backend it is: ``atomic_rename`` or
    ``server_side_copy`` make a move inside the mount the provider's ``mv``,
    ``server_side_copy`` a copy its ``copy``/``cp_file`` (else both stream through
    the VFS); ``settable_mtime`` False makes a client's time ignored; the naming
    flags are checked before the provider is asked and before a tree crosses in."""

    empty_directories: bool = True
    atomic_rename: bool = True
    server_side_copy: bool = True
    mtime_precision: float = 1e-6  # seconds
    settable_mtime: bool = True
    #: a listing shows each entry's time as set, folders' too (False: only ``info`` does,
    #: as in an object store's delimiter listing: no metadata, no time for a sub-folder)
    listed_mtimes: bool = True
    #: the filesystem has ``space() -> (used, free)``: bytes of the volume it lives on
    volume_space: bool = False
    #: names differing only in case are one file (SMB: case-preserving, case-insensitive)
    case_insensitive_names: bool = False
    #: Windows' naming rules apply: ``<>:"|?*``, trailing dots and spaces and device
    #: names (``CON``, ``aux.txt``) are refused with InvalidPathError
    reserved_names: bool = False


@dataclass(frozen=True)
class BuildContext:
    """What a provider may know about where it is mounted (for messages), and for a
    mount reached as the signed-in user, whose account to use."""

    tenant: str
    mount: str
    data_dir: Path
    user: str | None = None
    #: set only for options whose ``signs_in_as_user`` is true
    account: SignedInAccount | None = None
