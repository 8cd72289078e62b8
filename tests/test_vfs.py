"""The tenant filesystem: mount composition, cross-mount operations, rules, keys."""

from __future__ import annotations

import pytest

from mosaic.config.schema import Config
from mosaic.core.errors import (
    AccessDeniedError,
    InvalidPathError,
    MountUnavailableError,
    ReadOnlyError,
)
from mosaic.vfs.mounts import path_from_ref_key
from mosaic.vfs.permissions import PermissionView
from mosaic.vfs.storage import StorageRegistry
from mosaic.vfs.tenantfs import TenantFileSystem


def build(tmp_path, user="alice", groups=(), permissions=None, default="write"):
    (tmp_path / "blocker").write_bytes(b"")
    config = Config.model_validate({"tenants": {"acme": {
        "root": {"type": "local", "root": str(tmp_path / "root")},
        "mounts": {
            "/m": {"provider": {"type": "memory"}},
            "/deep/er/mount": {"provider": {"type": "local", "root": str(tmp_path / "deep")}},
            "/homes": {"provider": {"type": "local", "root": str(tmp_path / "h" / "{user}")}},
            "/ro": {"provider": {"type": "local", "root": str(tmp_path / "ro")},
                    "read_only": True},
            "/broken": {"provider": {"type": "local", "root": str(tmp_path / "blocker" / "x")}},
        },
        "groups": ["staff"],
        "users": {name: {"password_hash": "$argon2id$x"} for name in ("alice", "bob")},
        "permissions": permissions or {},
    }}})
    registry = StorageRegistry(tmp_path)
    table = registry.mount_table(config, "acme", user)
    return TenantFileSystem(table, PermissionView(config.tenants["acme"].permissions, user,
                                                  groups, default))


def write(fs, path, data):
    with fs.open(path, "wb") as handle:
        handle.write(data)


def test_mount_points_and_the_folders_leading_to_them_are_listed(tmp_path):
    fs = build(tmp_path)
    assert {"m", "deep", "homes", "ro", "broken"} <= set(fs.ls("", detail=False))
    assert fs.ls("deep", detail=False) == ["deep/er"]
    assert fs.ls("deep/er", detail=False) == ["deep/er/mount"]
    assert fs.info("deep/er")["type"] == "directory"


def test_a_backend_entry_named_like_a_mount_point_is_shadowed(tmp_path):
    fs = build(tmp_path)
    (tmp_path / "root" / "m").mkdir()
    (tmp_path / "root" / "m" / "hidden.txt").write_bytes(b"root backend")
    assert fs.ls("", detail=False).count("m") == 1
    assert fs.ls("m", detail=False) == []


def test_cross_mount_move_streams_and_removes_the_source(tmp_path):
    fs = build(tmp_path)
    fs.mkdir("m/tree")
    write(fs, "m/tree/a.txt", b"a" * 3_000_000)
    fs.mkdir("m/tree/sub")
    write(fs, "m/tree/sub/b.txt", b"b")
    fs.mv("m/tree", "deep/er/mount/tree")
    assert not fs.exists("m/tree")
    assert (tmp_path / "deep" / "tree" / "a.txt").read_bytes() == b"a" * 3_000_000
    assert (tmp_path / "deep" / "tree" / "sub" / "b.txt").read_bytes() == b"b"


def test_cross_mount_copy_keeps_the_source(tmp_path):
    fs = build(tmp_path)
    write(fs, "file.txt", b"root file")
    fs.copy("file.txt", "m/file.txt")
    assert fs.cat_file("m/file.txt") == b"root file" and fs.exists("file.txt")


def test_failed_cross_mount_copy_leaves_no_partial_target(tmp_path, monkeypatch):
    fs = build(tmp_path)
    write(fs, "m/big.bin", b"x" * 5_000_000)

    class Boom(OSError):
        pass

    import shutil as shutil_module

    def failing_copy(src, dst, length=0):
        dst.write(src.read(1000))
        raise Boom("backend went away")

    monkeypatch.setattr(shutil_module, "copyfileobj", failing_copy)
    with pytest.raises(Boom):
        fs.copy("m/big.bin", "big.bin")
    assert not fs.exists("big.bin")
    assert not [p for p in (tmp_path / "root").iterdir() if "big" in p.name or "upload" in p.name]


def test_mount_points_cannot_be_removed_moved_or_replaced(tmp_path):
    fs = build(tmp_path)
    for operation in (lambda: fs.rm("m", recursive=True), lambda: fs.rmdir("deep"),
                      lambda: fs.mv("m", "elsewhere"), lambda: write(fs, "m", b"x"),
                      lambda: fs.mv("", "x")):
        with pytest.raises(AccessDeniedError):
            operation()
    with pytest.raises(FileExistsError):
        fs.mkdir("deep")


def test_read_only_mount(tmp_path):
    fs = build(tmp_path)
    (tmp_path / "ro" / "book.txt").write_bytes(b"book")
    assert fs.cat_file("ro/book.txt") == b"book"
    for operation in (lambda: write(fs, "ro/new.txt", b"x"), lambda: fs.rm_file("ro/book.txt"),
                      lambda: fs.mkdir("ro/dir"), lambda: fs.mv("ro/book.txt", "book.txt")):
        with pytest.raises(ReadOnlyError):
            operation()


def test_a_broken_mount_fails_for_its_subtree_only(tmp_path):
    fs = build(tmp_path)
    assert "broken" in fs.ls("", detail=False)
    assert fs.info("broken")["type"] == "directory"
    with pytest.raises(MountUnavailableError) as caught:
        fs.ls("broken")
    assert str(tmp_path) not in str(caught.value)
    with pytest.raises(MountUnavailableError):
        write(fs, "broken/x.txt", b"x")
    write(fs, "fine.txt", b"the rest works")
    assert not (tmp_path / "root" / "broken").exists()


def test_per_user_mounts_are_separate_and_keyed_apart(tmp_path):
    alice, bob = build(tmp_path, "alice"), build(tmp_path, "bob")
    write(alice, "homes/doc.txt", b"alice")
    write(bob, "homes/doc.txt", b"bob")
    assert alice.cat_file("homes/doc.txt") == b"alice"
    assert (tmp_path / "h" / "bob" / "doc.txt").read_bytes() == b"bob"
    assert alice.ref_key("homes/doc.txt") != bob.ref_key("homes/doc.txt")
    assert alice.ref_key("m/doc.txt") == bob.ref_key("m/doc.txt")


@pytest.mark.parametrize("path", ["", "a.txt", "m/x y/Ünï~code.txt", "homes/doc.txt",
                                  "deep/er/mount/a/b", "deep/er"])
def test_ref_keys_invert_to_the_virtual_path(tmp_path, path):
    fs = build(tmp_path)
    tenant, virtual = path_from_ref_key(fs.ref_key(path))
    assert tenant == "acme" and virtual == "/" + path


@pytest.mark.parametrize("parent", ["", "deep/er", "m", "homes"])
def test_child_ref_keys_of_a_listing_are_each_childs_own_key(tmp_path, parent):
    fs = build(tmp_path)
    names = ["a.txt", "x y", "Ünï~code.txt", "M", "mount", "homes", "100%"]
    expected = [fs.ref_key(f"{parent}/{name}".lstrip("/")) for name in names]
    assert fs.table.child_ref_keys(fs.ref_key(parent), parent, names) == expected


@pytest.mark.parametrize("path", ["../x", "a/../../x", "a\\b", "a\x00b", "./a", "m/../.."])
def test_bad_paths_are_refused(tmp_path, path):
    fs = build(tmp_path)
    with pytest.raises(InvalidPathError):
        fs.info(path)


def test_permission_rules(tmp_path):
    rules = {"/": {"*": "read"}, "/team": {"@staff": "write"}, "/team/secret": {"*": "none",
                                                                             "alice": "read"}}
    admin = build(tmp_path, "bob", permissions=rules, groups=["staff"])
    (tmp_path / "root" / "team" / "secret").mkdir(parents=True)
    with pytest.raises(AccessDeniedError):
        admin.mkdir("team/secret/sub")
    with pytest.raises(AccessDeniedError):
        write(admin, "team/secret/x.txt", b"x")  # "*": none beats the parent's group rule
    with pytest.raises(AccessDeniedError):
        write(admin, "top.txt", b"x")
    write(admin, "team/plan.txt", b"plan")
    reader = build(tmp_path, "alice", permissions=rules)
    assert reader.cat_file("team/plan.txt") == b"plan"
    assert "team/secret" in reader.ls("team", detail=False)
    with pytest.raises(AccessDeniedError):
        reader.rm_file("team/plan.txt")
    with pytest.raises(AccessDeniedError):
        admin.rm("team", recursive=True)  # a subtree it may not write
    assert "team/secret" not in build(tmp_path, "bob", permissions=rules).ls("team",
                                                                          detail=False)


def test_a_listing_obeys_rules_at_any_depth_and_spelling_below_it(tmp_path):
    rules = {"/team": {"*": "none"}, "/TEAM/Open/deeper": {"alice": "read"},
             "/plain/Hidden": {"*": "none"}}
    owner = build(tmp_path, "bob")
    for folder in ("team/open/deeper", "team/closed", "plain/hidden", "plain/shown"):
        owner.mkdir(folder, create_parents=True)
    alice = build(tmp_path, "alice", permissions=rules)
    assert alice.ls("team", detail=False) == ["team/open"]  # only the way to her rule
    assert sorted(alice.ls("plain", detail=False)) == ["plain/shown"]
    assert alice.ls("plain/shown", detail=False) == []
    with pytest.raises(FileNotFoundError):
        alice.ls("team/closed")


def test_hidden_paths_look_absent(tmp_path):
    rules = {"/private": {"*": "none"}}
    owner = build(tmp_path, "bob", permissions={"/private": {"bob": "write", "*": "none"}})
    owner.mkdir("private")
    write(owner, "private/p.txt", b"p")
    other = build(tmp_path, "alice", permissions=rules)
    for spelling in ("private/p.txt", "PRIVATE/p.txt", "Private"):
        with pytest.raises(FileNotFoundError):
            other.info(spelling)
    assert "private" not in other.ls("", detail=False)


def test_failed_cross_mount_tree_move_leaves_source_whole_and_no_partial_target(
        tmp_path, monkeypatch):
    fs = build(tmp_path)
    fs.mkdir("m/tree")
    for name in ("a.txt", "b.txt", "c.txt"):
        write(fs, f"m/tree/{name}", name.encode())
    real_stream, copied = TenantFileSystem._stream_file, []

    def fail_on_third(self, src, dst):
        if len(copied) == 2:
            raise OSError(5, "backend went away")
        real_stream(self, src, dst)
        copied.append(dst)

    monkeypatch.setattr(TenantFileSystem, "_stream_file", fail_on_third)
    with pytest.raises(OSError):
        fs.mv("m/tree", "tree")
    assert sorted(fs.ls("m/tree", detail=False)) == ["m/tree/a.txt", "m/tree/b.txt",
                                                     "m/tree/c.txt"]
    assert not fs.exists("tree") and not (tmp_path / "root" / "tree").exists()
