"""Every target must pass every test here: the provider contract, executable.

Only the fsspec-level contract of ``mosaic.core.capabilities`` is used (relative
paths, "" is the root), so composed filesystems can be added as targets.
Error types are asserted exactly: the DAV layer maps them to status codes.

Behaviour fixed by this suite: ``ls`` of a file raises NotADirectoryError; a
tree ``copy`` needs a destination that does not exist yet.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mosaic.core.errors import DirectoryNotEmptyError, InvalidPathError
from tests.conformance.compositions import COMPOSITIONS
from tests.conformance.targets import TARGETS, Target

ALL_TARGETS = {**TARGETS, **COMPOSITIONS}

MIB = 1024 * 1024
REQUIRED_KEYS = {"name", "type", "size", "mtime"}


@pytest.fixture(params=list(ALL_TARGETS), ids=list(ALL_TARGETS))
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    made = ALL_TARGETS[request.param](tmp_path)
    yield made
    if made.cleanup is not None:
        made.cleanup()


@pytest.fixture
def fs(target: Target) -> Any:
    return target.fs


def write(fs: Any, path: str, data: bytes, chunk: int = 64 * 1024) -> None:
    with fs.open(path, "wb") as handle:
        for start in range(0, len(data), chunk):
            handle.write(data[start:start + chunk])


def read(fs: Any, path: str) -> bytes:
    with fs.open(path, "rb") as handle:
        return handle.read()


def names(fs: Any, path: str = "") -> set[str]:
    return {entry["name"] for entry in fs.ls(path, detail=True)}


def tree(fs: Any, path: str) -> set[str]:
    """Every name below ``path``, found with ``ls`` only."""
    found: set[str] = set()
    for entry in fs.ls(path, detail=True):
        found.add(entry["name"])
        if entry["type"] == "directory":
            found |= tree(fs, entry["name"])
    return found


def raises_exactly(expected: type[OSError], func: Callable[..., Any], *args: Any,
                   **kwargs: Any) -> OSError:
    with pytest.raises(expected) as caught:
        func(*args, **kwargs)
    assert type(caught.value) is expected, f"got {type(caught.value).__name__}"
    return caught.value


def pattern(size: int) -> bytes:
    """Bytes whose every MiB differs, so a misplaced block is caught."""
    block = bytes(range(256)) * 4096
    return b"".join(block[i % 256:] + block[:i % 256] for i in range(size // MIB + 1))[:size]


# -- directories ----------


def test_empty_root_lists_nothing(fs: Any) -> None:
    assert fs.ls("", detail=True) == []
    assert fs.ls("/", detail=False) == []
    assert fs.info("")["type"] == "directory"


def test_empty_directories_persist_and_are_listed(fs: Any) -> None:
    fs.mkdir("a")
    fs.mkdir("a/b")
    assert names(fs) == {"a"}
    (entry,) = fs.ls("a", detail=True)
    assert (entry["name"], entry["type"]) == ("a/b", "directory")
    assert fs.ls("a/b") == []
    assert fs.info("a/b")["name"] == "a/b"
    assert fs.isdir("a/b") and not fs.isfile("a/b") and fs.exists("a/b")


def test_mkdir_needs_parent_unless_asked(fs: Any) -> None:
    raises_exactly(FileNotFoundError, fs.mkdir, "x/y")
    assert not fs.exists("x")
    fs.mkdir("p/q/r", create_parents=True)
    assert fs.isdir("p") and fs.isdir("p/q/r")
    fs.makedirs("p/q/r", exist_ok=True)
    raises_exactly(FileExistsError, fs.makedirs, "p/q/r")


def test_mkdir_over_existing_dir_or_file(fs: Any) -> None:
    fs.mkdir("d")
    write(fs, "f", b"x")
    raises_exactly(FileExistsError, fs.mkdir, "d")
    raises_exactly(FileExistsError, fs.mkdir, "f")
    raises_exactly(NotADirectoryError, fs.mkdir, "f/sub")
    assert read(fs, "f") == b"x"


# -- writing and reading ----------


@pytest.mark.parametrize("size", [0, 11, 5 * MIB + 3], ids=["empty", "small", "5MiB"])
def test_write_then_read_back(fs: Any, size: int) -> None:
    data = pattern(size)
    fs.mkdir("d")
    write(fs, "d/blob.bin", data)
    assert read(fs, "d/blob.bin") == data
    assert fs.info("d/blob.bin")["size"] == size
    (entry,) = fs.ls("d", detail=True)
    assert (entry["name"], entry["type"], entry["size"]) == ("d/blob.bin", "file", size)


def test_rewrite_moves_mtime_and_etag(target: Target) -> None:
    fs = target.fs
    write(fs, "f", b"one")
    first = fs.info("f")
    assert fs.info("f")["etag"] == first["etag"]  # stable while unchanged
    # Beyond the kernel's coarse timestamp tick, or the store's (S3: whole seconds).
    time.sleep(max(0.05, target.capabilities.mtime_precision))
    write(fs, "f", b"second")
    second = fs.info("f")
    assert second["mtime"] > first["mtime"]
    assert second["etag"] != first["etag"]
    assert second["size"] == 6
    for etag in (first["etag"], second["etag"]):
        assert isinstance(etag, str) and etag
        assert '"' not in etag and not etag.startswith("W/")


def test_seek_and_read_ranges(fs: Any) -> None:
    data = pattern(2 * MIB)
    write(fs, "f", data)
    with fs.open("f", "rb") as handle:
        assert handle.seekable()
        handle.seek(MIB + 7)
        assert handle.read(10) == data[MIB + 7:MIB + 17]
        assert handle.tell() == MIB + 17
        handle.seek(-5, 2)
        assert handle.read() == data[-5:]
        handle.seek(0)
        assert handle.read(3) == data[:3]
    assert fs.cat_file("f", start=100, end=200) == data[100:200]


def test_ls_entries_are_complete_and_relative(fs: Any) -> None:
    fs.makedirs("d/e")
    write(fs, "d/g", b"abc")
    entries = fs.ls("d", detail=True)
    assert {e["name"] for e in entries} == {"d/e", "d/g"}
    for entry in entries:
        assert entry.keys() >= REQUIRED_KEYS
        assert entry["type"] in ("file", "directory")
        assert isinstance(entry["mtime"], float) and isinstance(entry["size"], int)
    assert set(fs.ls("d", detail=False)) == {"d/e", "d/g"}
    assert names(fs, "/d/") == {"d/e", "d/g"}


def test_touch_creates_and_refreshes(fs: Any) -> None:
    fs.touch("t")
    assert read(fs, "t") == b""
    write(fs, "t", b"kept")
    fs.set_mtime("t", 1_000_000_000.0)
    fs.touch("t", truncate=False)
    assert read(fs, "t") == b"kept"
    assert fs.info("t")["mtime"] > 1_000_000_000.0 + 1
    fs.mkdir("d")
    raises_exactly(IsADirectoryError, fs.touch, "d")


# -- uploads: atomic, invisible until committed ----------


def test_pending_upload_is_invisible_until_commit(fs: Any) -> None:
    fs.mkdir("d")
    write(fs, "d/keep", b"k")
    upload = fs.open("d/new", "wb", autocommit=False)
    upload.write(b"x" * 1000)
    assert names(fs, "d") == {"d/keep"}  # no temp name either
    assert not fs.exists("d/new")
    upload.close()
    assert names(fs, "d") == {"d/keep"}
    upload.commit()
    assert names(fs, "d") == {"d/keep", "d/new"}
    assert read(fs, "d/new") == b"x" * 1000


def test_overwrite_keeps_old_version_until_commit(fs: Any) -> None:
    write(fs, "f", b"old")
    upload = fs.open("f", "wb", autocommit=False)
    upload.write(b"new content")
    assert read(fs, "f") == b"old"
    upload.commit()
    assert read(fs, "f") == b"new content"


@pytest.mark.parametrize("existing", [None, b"previous"], ids=["new", "overwrite"])
def test_discarded_upload_leaves_nothing(fs: Any, existing: bytes | None) -> None:
    fs.mkdir("d")
    if existing is not None:
        write(fs, "d/f", existing)
    before = names(fs, "d")
    upload = fs.open("d/f", "wb", autocommit=False)
    upload.write(pattern(MIB))
    upload.discard()
    assert names(fs, "d") == before
    if existing is None:
        assert not fs.exists("d/f")
    else:
        assert read(fs, "d/f") == existing


@pytest.mark.parametrize("existing", [None, b"previous"], ids=["new", "overwrite"])
def test_exception_inside_with_keeps_old_content(fs: Any, existing: bytes | None) -> None:
    if existing is not None:
        write(fs, "f", existing)
    with pytest.raises(RuntimeError), fs.open("f", "wb") as handle:
        handle.write(b"partial")
        raise RuntimeError("client went away")
    assert names(fs) == ({"f"} if existing is not None else set())
    if existing is not None:
        assert read(fs, "f") == existing


def test_two_uploads_last_commit_wins(fs: Any) -> None:
    first = fs.open("f", "wb", autocommit=False)
    second = fs.open("f", "wb", autocommit=False)
    first.write(b"first")
    second.write(b"second")
    first.commit()
    second.commit()
    assert read(fs, "f") == b"second"
    assert names(fs) == {"f"}


def test_upload_lifecycle_is_final(fs: Any) -> None:
    upload = fs.open("f", "wb", autocommit=False)
    upload.write(b"v1")
    upload.close()
    with pytest.raises(ValueError):
        upload.write(b"late")
    upload.commit()
    upload.commit()  # idempotent: a retry must not fail or republish
    upload.discard()  # after commit: nothing left to discard
    assert read(fs, "f") == b"v1"
    dropped = fs.open("f", "wb", autocommit=False)
    dropped.write(b"v2")
    dropped.discard()
    with pytest.raises(ValueError):
        dropped.commit()
    assert read(fs, "f") == b"v1"
    assert names(fs) == {"f"}


# -- rename, copy, delete ----------


def test_rename_file(fs: Any) -> None:
    fs.mkdir("d")
    write(fs, "a", b"A")
    fs.mv("a", "d/b")
    assert not fs.exists("a")
    assert read(fs, "d/b") == b"A"


def test_rename_non_empty_directory(fs: Any) -> None:
    fs.makedirs("d/sub/empty")
    write(fs, "d/x", b"X")
    write(fs, "d/sub/y", b"Y")
    fs.mv("d", "e")
    assert not fs.exists("d")
    assert read(fs, "e/x") == b"X" and read(fs, "e/sub/y") == b"Y"
    assert fs.isdir("e/sub/empty")


def test_rename_onto_existing_file_replaces_it(fs: Any) -> None:
    write(fs, "a", b"A")
    write(fs, "b", b"B")
    fs.mv("a", "b")
    assert names(fs) == {"b"}
    assert read(fs, "b") == b"A"


def test_rename_errors(fs: Any) -> None:
    fs.makedirs("d/sub")
    raises_exactly(InvalidPathError, fs.mv, "d", "d/sub/d")
    raises_exactly(FileNotFoundError, fs.mv, "missing", "x")
    assert fs.isdir("d/sub")


def test_copy_file(fs: Any) -> None:
    write(fs, "a", b"A" * 100)
    fs.cp_file("a", "b")
    fs.copy("a", "c", recursive=False)
    write(fs, "b", b"changed")
    assert read(fs, "a") == b"A" * 100 and read(fs, "c") == b"A" * 100


def test_copy_tree(fs: Any) -> None:
    fs.makedirs("d/sub/empty")
    write(fs, "d/x", b"X")
    write(fs, "d/sub/y", b"Y")
    fs.copy("d", "e", recursive=True)
    assert tree(fs, "e") == {"e/x", "e/sub", "e/sub/y", "e/sub/empty"}
    assert read(fs, "e/sub/y") == b"Y" and read(fs, "d/sub/y") == b"Y"
    fs.copy("d", "shallow", recursive=False)
    assert fs.ls("shallow") == []
    raises_exactly(InvalidPathError, fs.copy, "d", "d/sub/again")


def test_delete(fs: Any) -> None:
    fs.makedirs("full/sub")
    write(fs, "full/sub/f", b"f")
    write(fs, "f", b"f")
    fs.mkdir("empty")
    raises_exactly(DirectoryNotEmptyError, fs.rmdir, "full")
    raises_exactly(DirectoryNotEmptyError, fs.rm, "full")
    raises_exactly(IsADirectoryError, fs.rm_file, "full")
    raises_exactly(NotADirectoryError, fs.rmdir, "f")
    fs.rm_file("f")
    fs.rmdir("empty")
    fs.rm("full", recursive=True)
    assert fs.ls("") == []


# -- errors ----------


def test_missing_paths(fs: Any) -> None:
    raises_exactly(FileNotFoundError, fs.info, "missing")
    raises_exactly(FileNotFoundError, fs.open, "missing", "rb")
    raises_exactly(FileNotFoundError, fs.ls, "missing")
    raises_exactly(FileNotFoundError, fs.open, "no/parent", "wb")
    raises_exactly(FileNotFoundError, fs.rm_file, "missing")
    assert not fs.exists("missing")


def test_wrong_kind_of_node(fs: Any) -> None:
    fs.mkdir("d")
    write(fs, "f", b"f")
    raises_exactly(IsADirectoryError, fs.open, "d", "rb")
    raises_exactly(IsADirectoryError, fs.open, "", "rb")
    raises_exactly(IsADirectoryError, fs.open, "d", "wb")
    raises_exactly(NotADirectoryError, fs.ls, "f")
    raises_exactly(NotADirectoryError, fs.info, "f/x")
    assert not fs.exists("f/x")


@pytest.mark.parametrize("path", ["..", "../x", "a/../../x", "a/..", "x\x00y", "a\\..\\x"])
def test_escaping_paths_are_refused(fs: Any, path: str) -> None:
    fs.mkdir("a")
    raises_exactly(InvalidPathError, fs.info, path)
    raises_exactly(InvalidPathError, fs.open, path, "wb")
    raises_exactly(InvalidPathError, fs.mkdir, path)


def test_errors_do_not_reveal_server_paths(fs: Any, tmp_path: Path) -> None:
    write(fs, "f", b"f")
    fs.makedirs("d/sub")
    failing = [(fs.info, "nope/x"), (fs.ls, "f"), (fs.open, "d", "rb"), (fs.rmdir, "d"),
               (fs.mkdir, "d"), (fs.rm_file, "d")]
    for func, *args in failing:
        with pytest.raises(OSError) as caught:
            func(*args)
        assert str(tmp_path) not in str(caught.value)
        assert str(tmp_path) not in repr(caught.value.args)


# -- metadata, names, isolation ----------


@pytest.mark.parametrize("mtime", [1_600_000_000.0, 1_600_000_000.25, 1_700_000_000.123456])
def test_set_mtime_reads_back(target: Target, mtime: float) -> None:
    fs = target.fs
    write(fs, "f", b"f")
    fs.mkdir("d")
    if not target.capabilities.settable_mtime:  # ignored cleanly, never an error
        kept = {path: fs.info(path)["mtime"] for path in ("f", "d")}
        for path in ("f", "d"):
            fs.set_mtime(path, mtime)
        assert {path: fs.info(path)["mtime"] for path in ("f", "d")} == kept
        raises_exactly(FileNotFoundError, fs.set_mtime, "missing", mtime)
        return
    for path in ("f", "d"):
        fs.set_mtime(path, mtime)
        assert abs(fs.info(path)["mtime"] - mtime) <= target.capabilities.mtime_precision
    if target.capabilities.listed_mtimes:
        assert {e["mtime"] for e in fs.ls("")} == {fs.info("f")["mtime"]}


UNICODE_NAMES = ["caf\u00e9", "emoji \U0001f600", "with space", "hash#name", "per%cent",
                 "question?mark", "100% done"]


#: characters Windows reserves in names: a target declaring ``reserved_names`` (SMB)
#: refuses them, as a file server would, instead of storing what Windows cannot open
WINDOWS_RESERVED_CHARS = re.compile(r'[<>:"|?*]')


@pytest.mark.parametrize("name", UNICODE_NAMES)
def test_unicode_and_reserved_character_names(target: Target, name: str) -> None:
    fs = target.fs
    if target.capabilities.reserved_names and WINDOWS_RESERVED_CHARS.search(name):
        raises_exactly(InvalidPathError, fs.mkdir, f"{name} dir")
        raises_exactly(InvalidPathError, fs.open, name, "wb")
        assert names(fs) == set()
        return
    fs.mkdir(f"{name} dir")
    write(fs, f"{name} dir/{name}", name.encode())
    assert names(fs) == {f"{name} dir"}  # exact: no NFD/NFC rewriting
    assert names(fs, f"{name} dir") == {f"{name} dir/{name}"}
    assert read(fs, f"{name} dir/{name}") == name.encode()
    fs.mv(f"{name} dir/{name}", f"{name} dir/{name} 2")
    assert fs.info(f"{name} dir/{name} 2")["size"] == len(name.encode())


WINDOWS_NAMES = ["CON", "aux.txt", "com1.log", "a:b", "star*", "pipe|d", "dot.", "space "]


@pytest.mark.parametrize("name", WINDOWS_NAMES)
def test_windows_reserved_names(target: Target, name: str) -> None:
    """Refused with the rule named (a 400, never a 500) where Windows' rules apply;
    stored as any other name elsewhere."""
    fs = target.fs
    if not target.capabilities.reserved_names:
        write(fs, name, b"kept")
        assert names(fs) == {name} and read(fs, name) == b"kept"
        return
    for call, *args in [(fs.open, name, "wb"), (fs.mkdir, name), (fs.info, name),
                        (fs.open, f"ok/{name}", "wb")]:
        error = raises_exactly(InvalidPathError, call, *args)
        assert "Windows" in str(error)
    write(fs, "ok", b"x")
    raises_exactly(InvalidPathError, fs.mv, "ok", name)
    raises_exactly(InvalidPathError, fs.cp_file, "ok", name)
    assert names(fs) == {"ok"}


def test_names_differing_only_in_case(target: Target) -> None:
    """One file where names are case-insensitive (the later write wins, the first
    spelling stays, as on Windows), two elsewhere."""
    fs = target.fs
    write(fs, "report.txt", b"lower")
    write(fs, "Report.TXT", b"upper")
    if target.capabilities.case_insensitive_names:
        assert names(fs) == {"report.txt"}
        assert read(fs, "REPORT.txt") == b"upper"
    else:
        assert names(fs) == {"report.txt", "Report.TXT"}
        assert read(fs, "report.txt") == b"lower"


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_case_only_rename(fs: Any, kind: str) -> None:
    """Explorer's rename of report.txt to Report.txt: one entry with the new spelling
    and the content kept, whether names are case-insensitive (the same file
    renamed) or not (a rename to another name)."""
    inner = "" if kind == "file" else "/inner"
    if kind == "folder":
        fs.mkdir("report.txt")
    write(fs, "report.txt" + inner, b"kept")
    fs.mv("report.txt", "Report.txt")
    assert names(fs) == {"Report.txt"}
    fs.mv("Report.txt", "REPORT.TXT")
    assert names(fs) == {"REPORT.TXT"}
    assert read(fs, "REPORT.TXT" + inner) == b"kept"


def test_builds_share_nothing(request: pytest.FixtureRequest, target: Target,
                              tmp_path: Path) -> None:
    name = request.node.callspec.params["target"]
    other = ALL_TARGETS[name](tmp_path / "other-build")
    try:
        write(target.fs, "private", b"secret")
        assert not other.fs.exists("private")
        assert other.fs is not target.fs and other.fs != target.fs
        assert type(target.fs).cachable is False
    finally:
        if other.cleanup is not None:
            other.cleanup()
