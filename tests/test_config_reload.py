"""ConfigHolder: atomic swap, failed reloads keep the running config, file and SIGHUP triggers."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from mosaic.config.holder import ConfigHolder
from mosaic.config.loader import load_config
from mosaic.config.schema import Config

HASH = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("pw")
PICKUP_SECONDS = 2.0  # an edit must be live within this


def config_text(port: int) -> str:
    return (f"server:\n  listen: 127.0.0.1:{port}\n"
            f"tenants:\n  acme:\n    root: {{type: memory}}\n"
            f"    users: {{bob: {{password_hash: '{HASH}'}}}}\n")


class Recorder:
    """A listener that remembers the configs it was given."""

    def __init__(self) -> None:
        self.configs: list[Config] = []
        self.called = threading.Event()

    def __call__(self, config: Config) -> None:
        self.configs.append(config)
        self.called.set()

    def ports(self) -> list[int]:
        return [c.server.port for c in self.configs]


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "mosaic.yaml"
    path.write_text(config_text(8001))
    return path


@pytest.fixture
def holder(config_path: Path) -> Iterator[ConfigHolder]:
    holder = ConfigHolder(config_path, load_config(config_path), debounce_seconds=0.05)
    yield holder
    holder.stop()


def test_reload_swaps_and_keeps_the_old_object_intact(config_path: Path,
                                                       holder: ConfigHolder) -> None:
    recorder = Recorder()
    holder.on_change(recorder)
    in_flight = holder.current
    config_path.write_text(config_text(8002))
    assert holder.reload() is True
    assert holder.current.server.port == 8002
    assert in_flight.server.port == 8001  # a request that started before keeps its view
    assert recorder.configs == [holder.current]


def test_bad_file_keeps_the_running_config_and_logs_each_problem(
        config_path: Path, holder: ConfigHolder, caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    holder.on_change(recorder)
    before = holder.current
    config_path.write_text("server:\n  listen: nowhere\n  threads: many\ntenants: {}\n")
    with caplog.at_level(logging.ERROR, logger="mosaic.config.holder"):
        assert holder.reload() is False
    assert holder.current is before
    assert recorder.configs == []
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(f"{config_path}:2:11: server.listen" in m for m in errors)
    assert any(f"{config_path}:3:12: server.threads" in m for m in errors)


def test_reload_warns_about_settings_that_need_a_restart(
        config_path: Path, holder: ConfigHolder, caplog: pytest.LogCaptureFixture) -> None:
    config_path.write_text(config_text(8009))
    with caplog.at_level(logging.WARNING, logger="mosaic.config.holder"):
        assert holder.reload() is True
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "config reload: server.listen changed; it takes effect after a restart"]


def test_unchanged_file_notifies_nobody(holder: ConfigHolder) -> None:
    recorder = Recorder()
    holder.on_change(recorder)
    before = holder.current
    assert holder.reload() is True
    assert holder.current is before and recorder.configs == []


def test_a_failing_listener_does_not_stop_the_others(config_path: Path,
                                                    holder: ConfigHolder) -> None:
    def broken(_config: Config) -> None:
        raise RuntimeError("listener bug")

    recorder = Recorder()
    holder.on_change(broken)
    holder.on_change(recorder)
    config_path.write_text(config_text(8003))
    assert holder.reload() is True
    assert recorder.ports() == [8003]


def test_reload_logs_only_a_redacted_config(config_path: Path, holder: ConfigHolder,
                                            caplog: pytest.LogCaptureFixture) -> None:
    config_path.write_text(config_text(8004))
    with caplog.at_level(logging.DEBUG, logger="mosaic.config.holder"):
        assert holder.reload() is True
    assert "listen: 127.0.0.1:8004" in caplog.text
    assert "password_hash: '***'" in caplog.text
    assert HASH not in caplog.text


def test_without_a_file_reload_is_refused(config_path: Path) -> None:
    holder = ConfigHolder(None, load_config(config_path))
    assert holder.reload() is False


def test_watch_picks_up_an_edit(config_path: Path, holder: ConfigHolder) -> None:
    recorder = Recorder()
    holder.on_change(recorder)
    holder.watch()
    started = time.monotonic()
    config_path.write_text(config_text(8005))
    assert recorder.called.wait(PICKUP_SECONDS), "edit not picked up"
    assert time.monotonic() - started < PICKUP_SECONDS
    assert holder.current.server.port == 8005
    assert recorder.ports() == [8005]  # debounced: one reload for the write


def test_watch_picks_up_an_editor_style_rename(config_path: Path, holder: ConfigHolder) -> None:
    recorder = Recorder()
    holder.on_change(recorder)
    holder.watch()
    temp = config_path.with_name(".mosaic.yaml.swp")
    temp.write_text(config_text(8006))
    os.replace(temp, config_path)
    assert recorder.called.wait(PICKUP_SECONDS), "rename not picked up"
    assert holder.current.server.port == 8006


def test_watch_ignores_other_files(config_path: Path, holder: ConfigHolder,
                                   caplog: pytest.LogCaptureFixture) -> None:
    holder.watch()
    with caplog.at_level(logging.INFO, logger="mosaic.config.holder"):
        (config_path.parent / "notes.txt").write_text("unrelated")
        time.sleep(0.5)
    assert "config reload" not in caplog.text and "reloaded" not in caplog.text


def test_sighup_triggers_a_reload(config_path: Path) -> None:
    # The file already differs when watching starts: only the signal can cause the reload.
    running = load_config(config_path)
    config_path.write_text(config_text(8007))
    holder = ConfigHolder(config_path, running, debounce_seconds=0.05)
    recorder = Recorder()
    holder.on_change(recorder)
    previous = signal.getsignal(signal.SIGHUP)
    holder.watch()
    try:
        assert signal.getsignal(signal.SIGHUP) != previous
        os.kill(os.getpid(), signal.SIGHUP)
        assert recorder.called.wait(PICKUP_SECONDS), "SIGHUP did not reload"
        assert holder.current.server.port == 8007
    finally:
        holder.stop()
    assert signal.getsignal(signal.SIGHUP) == previous


def test_stop_ends_the_watch(config_path: Path, holder: ConfigHolder) -> None:
    recorder = Recorder()
    holder.on_change(recorder)
    holder.watch()
    holder.stop()
    config_path.write_text(config_text(8008))
    assert not recorder.called.wait(0.5)
    assert holder.current.server.port == 8001
