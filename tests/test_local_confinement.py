"""The local provider as an attacker sees it: nothing outside its root is reachable.

Every test runs with a sentinel tree next to the root; the ``fs`` fixture
asserts afterwards that nothing outside the root changed or appeared. Policy
under test: every symlink is refused (also one pointing inside the root) and
hidden from listings, like FIFOs.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from mosaic.core.capabilities import BuildContext
from mosaic.core.errors import InvalidPathError, MountUnavailableError
from mosaic.providers import local

SECRET = b"TOP SECRET - outside the root"
CONTEXT = BuildContext(tenant="acme", mount="/home", data_dir=Path("/nonexistent"))


def snapshot(top: Path, skip: Path) -> dict[str, tuple[Any, ...]]:
    """Everything below ``top`` except ``skip``: kind, bytes, mtime - links not followed."""
    seen: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if Path(dirpath, d) != skip]
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            content = path.read_bytes() if path.is_file() and not path.is_symlink() else None
            seen[str(path.relative_to(top))] = (st.st_mode, st.st_mtime_ns, content)
    return seen


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    sentinel = tmp_path / "outside"
    (sentinel / "sub").mkdir(parents=True)
    (sentinel / "secret.txt").write_bytes(SECRET)
    (sentinel / "sub" / "inner.txt").write_bytes(SECRET)
    return sentinel


@pytest.fixture
def fs(tmp_path: Path, root: Path, outside: Path) -> Iterator[local.LocalFileSystem]:
    built = local.build(local.Options(root=str(root)), CONTEXT)
    (root / "a").mkdir()
    (root / "a" / "file.txt").write_bytes(b"inside")
    os.symlink(outside / "secret.txt", root / "link-file")
    os.symlink(outside, root / "link-dir")
    os.symlink(outside / "created-by-attack", root / "dangling")
    os.symlink(root / "a", root / "link-inside")
    before = snapshot(tmp_path, skip=root)
    yield built
    assert snapshot(tmp_path, skip=root) == before, "data outside the root changed"


def refused(fs: Any, calls: list[tuple[Callable[..., Any], tuple[Any, ...]]]) -> None:
    """Each call must raise exactly InvalidPathError; report all that do not."""
    wrong = []
    for func, args in calls:
        try:
            result = func(*args)
        except InvalidPathError:
            continue
        except Exception as exc:  # reported below, all at once
            wrong.append(f"{func.__name__}{args!r} raised {type(exc).__name__}: {exc}")
        else:
            wrong.append(f"{func.__name__}{args!r} returned {result!r}")
    assert not wrong, "\n".join(wrong)


def every_operation(fs: Any, path: str) -> list[tuple[Callable[..., Any], tuple[Any, ...]]]:
    return [
        (fs.info, (path,)), (fs.exists, (path,)), (fs.ls, (path,)), (fs.open, (path, "rb")),
        (fs.open, (path, "wb")), (fs.mkdir, (path,)), (fs.makedirs, (path,)), (fs.rm, (path,)),
        (fs.rm_file, (path,)), (fs.rmdir, (path,)), (fs.touch, (path,)),
        (fs.set_mtime, (path, 0.0)), (fs.mv, ("a/file.txt", path)), (fs.mv, (path, "moved")),
        (fs.cp_file, (path, "copied")), (fs.cp_file, ("a/file.txt", path)),
        (fs.copy, (path, "copied")), (fs.copy, ("a", path)),
    ]


BAD_PATHS = [
    "..", "../outside/secret.txt", "a/../../outside/secret.txt", "a/..", ".", "a/./file.txt",
    "%2e%2e/outside/secret.txt", "%2E%2E/x", "a/%2e%2e", "..%2foutside%2fsecret.txt",
    "a%2F..%2F..%2Fx", "a%5c..%5c..%5cx", "a\\..\\..\\outside\\secret.txt", "C:\\x", "C:/x",
    "c:", "x\x00y", "a/%00", ".~mosaic-upload-0123456789abcdef",
]


@pytest.mark.parametrize("path", BAD_PATHS)
def test_malformed_paths_are_refused_by_every_operation(fs: Any, root: Path, path: str) -> None:
    refused(fs, every_operation(fs, path))
    assert sorted(os.listdir(root)) == ["a", "dangling", "link-dir", "link-file", "link-inside"]
    assert (root / "a" / "file.txt").read_bytes() == b"inside"


@pytest.mark.parametrize("path", ["link-file", "link-dir", "dangling", "link-inside",
                                  "link-dir/secret.txt", "link-dir/sub", "link-dir/new",
                                  "link-inside/file.txt", "link-dir/sub/inner.txt"])
def test_symlinks_are_refused_by_every_operation(fs: Any, root: Path, path: str) -> None:
    refused(fs, every_operation(fs, path))
    assert sorted(os.listdir(root)) == ["a", "dangling", "link-dir", "link-file", "link-inside"]
    assert (root / "a" / "file.txt").read_bytes() == b"inside"


def test_deep_paths_through_links_are_refused(fs: Any) -> None:
    refused(fs, [(fs.makedirs, ("link-dir/x/y",)), (fs.mkdir, ("link-dir/x/y", True)),
                 (fs.copy, ("a", "link-dir/a")), (fs.mv, ("a", "link-dir/a"))])


def test_listing_hides_links_fifos_and_temp_files(fs: Any, root: Path) -> None:
    os.mkfifo(root / "pipe")
    (root / ".~mosaic-upload-deadbeef").write_bytes(b"left by a crash")
    assert fs.ls("", detail=False) == ["a"]


def test_names_that_are_not_utf8_are_not_listed(fs: Any, root: Path) -> None:
    os.close(os.open(os.fsencode(root) + b"/latin1-\xe9.txt", os.O_CREAT | os.O_WRONLY))
    assert fs.ls("", detail=False) == ["a"]


def test_fifo_is_refused_without_blocking(fs: Any, root: Path) -> None:
    os.mkfifo(root / "pipe")
    started = time.monotonic()
    refused(fs, [(fs.open, ("pipe", "rb")), (fs.info, ("pipe",)), (fs.open, ("pipe", "wb"))])
    assert time.monotonic() - started < 1


def test_leading_slash_stays_inside(fs: Any, root: Path) -> None:
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_bytes(b"tenant file")
    for path in ("/etc/passwd", "//etc/passwd", "etc/passwd/"):
        with fs.open(path, "rb") as handle:
            assert handle.read() == b"tenant file"
    assert fs.info("/")["name"] == ""


def test_recursive_delete_unlinks_links_without_following(fs: Any, root: Path,
                                                          outside: Path) -> None:
    (root / "tree").mkdir()
    os.symlink(outside, root / "tree" / "to-outside")
    os.symlink(outside / "secret.txt", root / "tree" / "secret-link")
    fs.rm("tree", recursive=True)
    assert not (root / "tree").exists()
    assert (outside / "secret.txt").read_bytes() == SECRET


def test_copying_a_tree_skips_links(fs: Any, root: Path) -> None:
    os.symlink(root.parent / "outside", root / "a" / "to-outside")
    fs.copy("a", "b")
    assert sorted(p.name for p in (root / "b").iterdir()) == ["file.txt"]


def test_upload_publishes_where_it_was_opened(fs: Any, root: Path, outside: Path) -> None:
    fs.mkdir("d")
    upload = fs.open("d/new.txt", "wb", autocommit=False)
    upload.write(b"data")
    # Swap the directory for a link to the outside while the upload is open.
    os.rename(root / "d", root / "d-moved")
    os.symlink(outside, root / "d")
    upload.commit()
    assert (root / "d-moved" / "new.txt").read_bytes() == b"data"
    assert not (outside / "new.txt").exists()


def test_dangling_link_is_never_written_through(fs: Any, outside: Path) -> None:
    refused(fs, [(fs.open, ("dangling", "wb")), (fs.touch, ("dangling",))])
    assert not (outside / "created-by-attack").exists()


def test_errors_never_name_the_server_directory(fs: Any, tmp_path: Path) -> None:
    calls = [(fs.info, ("a/missing",)), (fs.open, ("a", "rb")), (fs.ls, ("a/file.txt",)),
             (fs.mkdir, ("a",)), (fs.rmdir, ("a",)), (fs.info, ("link-dir/secret.txt",)),
             (fs.info, ("a/file.txt/x",))]
    for func, args in calls:
        with pytest.raises(OSError) as caught:
            func(*args)
        assert str(tmp_path) not in str(caught.value), caught.value


def test_vanished_root_fails_closed(fs: Any, root: Path) -> None:
    shutil.rmtree(root)
    with pytest.raises(MountUnavailableError) as caught:
        fs.ls("")
    assert str(root) not in str(caught.value) and "/home" in str(caught.value)
    assert not root.exists()  # no operation silently re-creates it


def test_build_without_create_needs_the_root(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(MountUnavailableError) as caught:
        local.build(local.Options(root=str(missing), create=False), CONTEXT)
    assert str(missing) not in str(caught.value)
    assert not missing.exists()
    local.build(local.Options(root=str(missing)), CONTEXT)
    assert missing.is_dir()
    (tmp_path / "a-file").write_bytes(b"")
    uncreatable = tmp_path / "a-file" / "root"
    with pytest.raises(MountUnavailableError) as caught:
        local.build(local.Options(root=str(uncreatable)), CONTEXT)
    assert str(tmp_path) not in str(caught.value)


@pytest.mark.parametrize("options", [{"root": "relative/dir"}, {"root": "/x\x00y"},
                                     {"root": "/srv", "unknown": 1}, {}])
def test_options_are_strict(options: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        local.Options(**options)


def test_stale_upload_temp_files_are_swept_fresh_ones_kept(tmp_path: Path) -> None:
    root = tmp_path / "sweep-root"
    fs = local.build(local.Options(root=str(root)),
                     BuildContext(tenant="t", mount="/", data_dir=tmp_path))
    stale, fresh = root / (local.TEMP_PREFIX + "old"), root / (local.TEMP_PREFIX + "new")
    stale.write_bytes(b"left by a crash")
    fresh.write_bytes(b"upload in progress")
    day_and_more = time.time() - local.STALE_UPLOAD_S - 60
    os.utime(stale, (day_and_more, day_and_more))
    assert fs.ls("", detail=False) == []
    assert not stale.exists() and fresh.exists()
