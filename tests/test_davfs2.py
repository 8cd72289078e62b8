"""A kernel-mounted drive (davfs2) used the way a person uses a mapped drive.

Copy a tree in, edit a file, rename, delete, copy out, compare checksums -
with an unmount/remount in between so nothing is served from davfs2's cache.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import moto, samba, samba_ad, tenants
from tests.support.live import live_server, two_tenant_server

pytestmark = pytest.mark.davfs


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*")) if path.is_file()
    }


def make_tree(root: Path) -> None:
    (root / "docs" / "deep" / "deeper").mkdir(parents=True)
    (root / "empty-folder").mkdir()
    (root / "docs" / "notes.txt").write_text("first line\n")
    (root / "docs" / "deep" / "data.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    (root / "docs" / "deep" / "deeper" / "tiny").write_bytes(b"x")
    (root / "Résumé — final (2) ü.txt").write_text("unicode name\n")
    for index in range(40):
        (root / "docs" / f"file-{index:02}.txt").write_text(f"content {index}\n" * index)


def _escaped(value: str) -> str:
    """A value for davfs2's config files, where \\ escapes (CORP\\\\alice)."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


class Drive:
    def __init__(self, url: str, mountpoint: Path, workdir: Path, login: str, password: str):
        self.url, self.mountpoint = url, mountpoint
        self.conf = workdir / "davfs2.conf"
        secrets = workdir / "davfs2.secrets"
        secrets.write_text(f'{mountpoint} "{_escaped(login)}" "{_escaped(password)}"\n')
        secrets.chmod(0o600)
        # davfs2 1.7 on this kernel needs buf_size 64, or listings fail (EINVAL).
        self.conf.write_text(f"secrets {secrets}\nbuf_size 64\nuse_locks 1\n"
                             "delay_upload 0\n")
        mountpoint.mkdir(exist_ok=True)

    def mount(self) -> None:
        result = subprocess.run(["mount", "-t", "davfs", self.url, str(self.mountpoint),
                                 "-o", f"conf={self.conf}"], timeout=60,
                                stdin=subprocess.DEVNULL, capture_output=True, text=True)
        assert result.returncode == 0, f"mount.davfs failed: {result.stderr}"

    def unmount(self) -> None:
        # umount waits for davfs2 to upload everything it still holds.
        subprocess.run(["umount", str(self.mountpoint)], check=True, timeout=300,
                       capture_output=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    assert shutil.which("mount.davfs"), "davfs2 is not installed: run scripts/test.sh"
    assert os.geteuid() == 0, "the davfs2 test mounts a drive and needs root"
    base = tmp_path_factory.mktemp("davfs")
    with two_tenant_server(base) as live:
        yield live


@pytest.fixture(scope="module")
def s3_root_server(tmp_path_factory):
    """globex's whole drive on a bucket of moto's S3 (acme stays local)."""
    assert shutil.which("mount.davfs"), "davfs2 is not installed: run scripts/test.sh"
    base = tmp_path_factory.mktemp("davfs-s3")
    data = tenants.two_tenants(base)
    bucket = moto.fresh_bucket()
    data["tenants"]["globex"]["root"] = moto.provider(bucket, prefix="drive")
    with live_server(tenants.build(data)) as live:
        yield live, bucket


@pytest.fixture(scope="module")
def smb_root_server(tmp_path_factory):
    """globex's whole drive on a folder of the test smbd's share (acme stays local)."""
    assert shutil.which("mount.davfs"), "davfs2 is not installed: run scripts/test.sh"
    data = tenants.two_tenants(tmp_path_factory.mktemp("davfs-smb"))
    folder = samba.fresh_folder()
    data["tenants"]["globex"]["root"] = samba.provider("conformance", path=folder)
    with live_server(tenants.build(data)) as live:
        yield live, samba.server().share_dir("conformance") / folder


def round_trip(drive: Drive, source: Path, tmp_path: Path) -> Path:
    """Copy ``source`` in, edit it through the drive, copy it out after a remount;
    ``source`` is changed the same way. Returns the copy made after the remount."""
    make_tree(source)
    drive.mount()
    try:
        shutil.copytree(source, drive.mountpoint / "tree")
        with open(drive.mountpoint / "tree" / "docs" / "notes.txt", "a") as handle:
            handle.write("second line\n")
        (drive.mountpoint / "tree" / "docs" / "file-07.txt").rename(
            drive.mountpoint / "tree" / "docs" / "renamed-07.txt")
        (drive.mountpoint / "tree" / "docs" / "file-08.txt").unlink()
        shutil.rmtree(drive.mountpoint / "tree" / "docs" / "deep" / "deeper")
    finally:
        drive.unmount()

    # What the user expects the drive to hold now.
    (source / "docs" / "notes.txt").write_text("first line\nsecond line\n")
    (source / "docs" / "file-07.txt").rename(source / "docs" / "renamed-07.txt")
    (source / "docs" / "file-08.txt").unlink()
    shutil.rmtree(source / "docs" / "deep" / "deeper")

    drive.mount()
    try:
        copied_out = tmp_path / "copied-out"
        shutil.copytree(drive.mountpoint / "tree", copied_out)
        assert (drive.mountpoint / "tree" / "empty-folder").is_dir()
    finally:
        drive.unmount()
    return copied_out


@pytest.mark.parametrize("folder", ["", "projects/"])
def test_mapped_drive_round_trip(server, tmp_path, folder):
    drive = Drive(f"{server.url}/{folder}", tmp_path / "drive", tmp_path,
                  "alice@acme.example", "alice-secret")
    source = tmp_path / "source"
    copied_out = round_trip(drive, source, tmp_path)
    assert tree_digest(copied_out) == tree_digest(source)
    backend = server.base / ("acme-projects" if folder else "acme-root") / "tree"
    assert tree_digest(backend) == tree_digest(source)


def test_mapped_drive_on_an_s3_root(s3_root_server, tmp_path):
    live, bucket = s3_root_server
    drive = Drive(f"{live.url}/", tmp_path / "drive", tmp_path, "dave@globex.example",
                  "dave-secret")
    source = tmp_path / "source"
    copied_out = round_trip(drive, source, tmp_path)
    assert tree_digest(copied_out) == tree_digest(source)
    s3 = moto.client()
    stored = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                             Prefix="drive/tree/"):
        for item in page.get("Contents", []):
            key = item["Key"][len("drive/tree/"):]
            if key and not key.endswith("/"):  # not a folder marker
                body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                stored[key] = hashlib.sha256(body).hexdigest()
    assert stored == tree_digest(source)
    assert s3.head_object(Bucket=bucket, Key="drive/tree/empty-folder/")  # kept by a marker


def test_mapped_drive_on_an_smb_root(smb_root_server, tmp_path):
    live, share_folder = smb_root_server
    drive = Drive(f"{live.url}/", tmp_path / "drive", tmp_path, "dave@globex.example",
                  "dave-secret")
    source = tmp_path / "source"
    copied_out = round_trip(drive, source, tmp_path)
    assert tree_digest(copied_out) == tree_digest(source)
    assert tree_digest(share_folder / "tree") == tree_digest(source)  # as the file server has it
    assert (share_folder / "tree" / "empty-folder").is_dir()


@pytest.fixture(scope="module")
def directory_server(tmp_path_factory):
    """acme with its accounts in CORP (tests/support/samba_ad.py): /finance for @Finance,
    /engineering readable by all and writable by @Engineering."""
    assert shutil.which("mount.davfs"), "davfs2 is not installed: run scripts/test.sh"
    corp = samba_ad.domain()
    base = tmp_path_factory.mktemp("davfs-ad")
    data = tenants.two_tenants(base)
    acme = data["tenants"]["acme"]
    acme["active_directory"] = [tenants.active_directory(corp)]
    acme["permissions"]["/engineering"] = {"@Engineering": "write", "*": "read"}
    (base / "acme-root" / "finance").mkdir(parents=True)
    (base / "acme-root" / "engineering").mkdir()
    (base / "acme-root" / "engineering" / "build.txt").write_text("how to build\n")
    with live_server(tenants.build(data)) as live:
        live.base = base
        yield live, corp


def test_mapped_drive_signed_in_as_a_directory_user(directory_server, tmp_path):
    """CORP\\alice: Accounting, so Finance through nesting; not Engineering."""
    live, corp = directory_server
    drive = Drive(f"{live.url}/", tmp_path / "drive", tmp_path, f"CORP\\{corp.alice.user}",
                  corp.alice.password)
    payload = os.urandom(2 * 1024 * 1024 + 5)
    drive.mount()
    try:
        finance, engineering = drive.mountpoint / "finance", drive.mountpoint / "engineering"
        (finance / "q1").mkdir()
        (finance / "q1" / "report.txt").write_text("numbers\n")
        (finance / "q1" / "data.bin").write_bytes(payload)
        (finance / "q1" / "report.txt").rename(finance / "q1" / "final.txt")
        assert sorted(os.listdir(finance / "q1")) == ["data.bin", "final.txt"]
        # /engineering: she reads it, and every write is refused (davfs2 turns the
        # server's 403 to a LOCK or MKCOL into EINVAL, to a PUT into EACCES)
        assert (engineering / "build.txt").read_text() == "how to build\n"
        for write in (lambda: (engineering / "alice.txt").write_text("x"),
                      lambda: (engineering / "sub").mkdir(),
                      lambda: (engineering / "build.txt").write_text("overwritten")):
            with pytest.raises(OSError) as refused:
                write()
            assert refused.value.errno in (errno.EACCES, errno.EINVAL)
        assert sorted(os.listdir(engineering)) == ["build.txt"]
    finally:
        drive.unmount()
    acme = live.base / "acme-root"
    assert (acme / "finance" / "q1" / "final.txt").read_text() == "numbers\n"
    assert (acme / "finance" / "q1" / "data.bin").read_bytes() == payload
    assert sorted(p.name for p in (acme / "engineering").iterdir()) == ["build.txt"]
    assert (acme / "engineering" / "build.txt").read_text() == "how to build\n"
    drive.mount()  # nothing from davfs2's cache now
    try:
        assert (drive.mountpoint / "finance" / "q1" / "data.bin").read_bytes() == payload
        assert sorted(os.listdir(drive.mountpoint / "engineering")) == ["build.txt"]
    finally:
        drive.unmount()
