"""A move on an object store killed halfway is finished by the mount's next start.

The move runs in a child process (a worker) that is killed with SIGKILL while
it copies, or while it deletes the sources; then the mount is built again, as
a restarted or another worker would, on the same data directory.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mosaic import providers
from mosaic.core.capabilities import BuildContext
from tests.support import moto

FILES = 40
CHILD = r"""
import json, sys, time
from pathlib import Path
from mosaic import providers
from mosaic.core.capabilities import BuildContext

spec, data_dir, phase, source, target = json.loads(sys.argv[1])
module = providers.load("s3")
fs = module.build(module.Options.model_validate(spec), BuildContext("acme", "/cloud",
                                                                   Path(data_dir)))
store = fs._store
copy_object, delete = store.copy_object, store.delete
copied = []

def slow_copy(obj, dst, metadata=None):
    copy_object(obj, dst, metadata)
    copied.append(dst)
    if len(copied) == 10 and phase == "copying":
        print("copying", flush=True)
        go = Path(data_dir) / "go"
        while not go.exists():  # hold still mid-move until the test says go
            time.sleep(0.01)

def half_delete(keys):
    keys = list(keys)
    delete(keys[: len(keys) // 2])
    print("deleting", flush=True)
    time.sleep(600)

store.copy_object = slow_copy
if phase == "deleting":
    store.delete = half_delete
fs.mv(source, target)
print("done", flush=True)
"""


def _spec(bucket: str) -> dict:
    return {k: v for k, v in moto.provider(bucket, prefix="t").items() if k != "type"}


def _build(spec: dict, data_dir: Path):
    module = providers.load("s3")
    return module.build(module.Options.model_validate(spec),
                        BuildContext("acme", "/cloud", data_dir))


def _start_move(spec: dict, data_dir: Path, phase: str, source: str, target: str):
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps([spec, str(data_dir), phase, source, target])],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])


def _wait_for(child: subprocess.Popen, word: str) -> None:
    line = child.stdout.readline().strip()  # type: ignore[union-attr]
    assert line == word, f"the moving process said {line!r}, rc={child.poll()}"


def _tree(fs, folder: str) -> dict[str, bytes]:
    return {path[len(folder) + 1:]: fs.cat_file(path)
            for path in fs.find(folder) if fs.isfile(path)} if fs.exists(folder) else {}


@pytest.fixture
def filled(tmp_path):
    spec = _spec(moto.fresh_bucket())
    fs = _build(spec, tmp_path)
    fs.makedirs("src/empty")
    for index in range(FILES):
        fs.pipe_file(f"src/f{index:02}", f"content {index}".encode())
    return spec, tmp_path, _tree(fs, "src")


@pytest.mark.parametrize("phase", ["copying", "deleting"])
def test_a_move_killed_halfway_is_finished_by_the_next_start(filled, phase):
    spec, data_dir, before = filled
    child = _start_move(spec, data_dir, phase, "src", "dst")
    try:
        _wait_for(child, phase)  # the child now waits mid-move for "go", which never comes
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        child.kill()
    half = _build({**spec, "listing_cache_seconds": 0}, Path(data_dir / "elsewhere"))
    assert half.exists("src")  # left half done: both trees exist...
    restarted = _build(spec, data_dir)  # ... until the mount starts again
    assert not restarted.exists("src")
    assert _tree(restarted, "dst") == before
    assert restarted.isdir("dst/empty")
    assert list((data_dir / "move-journal").rglob("*.json")) == []


def test_a_move_still_running_in_another_worker_is_left_alone(filled):
    spec, data_dir, before = filled
    child = _start_move(spec, data_dir, "copying", "src", "dst")
    try:
        _wait_for(child, "copying")
        other_worker = _build(spec, data_dir)  # must not finish (or undo) a live move
        assert other_worker.exists("src")
        (data_dir / "go").touch()
        _wait_for(child, "done")
    finally:
        child.kill()
    other_worker = _build(spec, data_dir)
    assert not other_worker.exists("src") and _tree(other_worker, "dst") == before


def test_a_file_move_killed_between_copy_and_delete_keeps_the_set_time(filled):
    spec, data_dir, before = filled
    _build(spec, data_dir).set_mtime("src/f01", 1_000_000_000.0)
    child = _start_move(spec, data_dir, "deleting", "src/f01", "moved")
    try:
        _wait_for(child, "deleting")  # copied, and the source not deleted yet
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        child.kill()
    restarted = _build(spec, data_dir)
    assert not restarted.exists("src/f01")
    assert restarted.cat_file("moved") == before["f01"]
    assert restarted.info("moved")["mtime"] == 1_000_000_000.0


def test_an_unreadable_record_is_set_aside(filled):
    spec, data_dir, _before = filled
    fs = _build(spec, data_dir)
    fs.mv("src/f02", "f02")  # creates the mount's journal folder
    folder = next((data_dir / "move-journal").iterdir())
    (folder / "torn.json").write_text('{"pairs": [["t/src/f0')
    _build(spec, data_dir)  # starts (a torn record never blocks the mount)
    assert (folder / "torn.unreadable").exists() and not (folder / "torn.json").exists()
