"""A hostile config: YAML bombs, recursion, absurd nesting, bad bytes, odd files, leaked secrets.

Each is refused with one line naming the file (and line) in well under a second
and bounded memory, by ``mosaic check-config`` and by a live reload alike; no
message shows a value an environment variable gave.
"""

from __future__ import annotations

import logging
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from mosaic.auth import identity
from mosaic.auth import login as login_module
from mosaic.config import yaml_reader
from mosaic.config.holder import ConfigHolder
from mosaic.config.loader import ConfigError, Problem, load_config
from mosaic.config.schema import Config
from tests.hostile.support import basic, raw_request, two_tenant_process

HASH = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("pw")
VALID = (f"tenants:\n  acme:\n    root: {{type: memory}}\n"
         f"    users: {{bob: {{password_hash: '{HASH}'}}}}\n")
LOAD_SECONDS = 0.5  # "well under a second", with room for a busy machine
#: Address space for a check-config child: the unfixed loader reaches it and fails
#: instead of taking the machine's memory.
CHILD_ADDRESS_SPACE = 2 * 2**30


def bomb(levels: int = 9, width: int = 9) -> str:
    """Nested anchors: ``width ** levels`` strings once expanded ("billion laughs")."""
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join([*lines, "tenants: {}", ""])


def merge_bomb(levels: int = 9) -> str:
    """The same growth through merge keys, which a config may legitimately use."""
    lines = ["m0: &m0 {k0: lol, k1: lol, k2: lol, k3: lol}"]
    for i in range(1, levels):
        merged = f"{{<<: *m{i - 1}}}"
        lines.append(f"m{i}: &m{i} {{a: {merged}, b: {merged}, c: {merged}, d: {merged}}}")
    return "\n".join([*lines, "tenants: {}", ""])


HOSTILE_YAML = {
    "bomb": bomb(),
    "merge-bomb": merge_bomb(),
    "recursive-sequence": "x: &g [a, *g]\ntenants: {}\n",
    "recursive-mapping": "tenants: {}\nx: &g {a: b, c: *g}\n",
    "recursive-merge": "tenants: {}\nx: &g {a: b, <<: *g}\n",
    "nested-sequences": "x: " + "[" * 5000 + "]" * 5000 + "\ntenants: {}\n",
    "nested-mappings": "x: " + "{a: " * 5000 + "b" + "}" * 5000 + "\ntenants: {}\n",
}


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def refused(path: Path) -> tuple[list[Problem], float]:
    start = time.perf_counter()
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.problems, time.perf_counter() - start


def assert_points_at_the_fault(problem: Problem, text: str) -> None:
    """The problem names a line and column, and an alias is pointed at by its ``*``."""
    assert problem.line >= 1 and problem.column >= 1, problem
    if "alias" in problem.message:
        line = text.splitlines()[problem.line - 1]
        assert line[problem.column - 1] == "*", (problem, line)


# --- items 10: bombs, recursion, nesting -------------------------------------------------------

@pytest.mark.parametrize("name", HOSTILE_YAML)
def test_hostile_yaml_is_one_problem_at_its_line_at_once(tmp_path: Path, name: str) -> None:
    text = HOSTILE_YAML[name]
    path = write(tmp_path / "mosaic.yaml", text)
    problems, seconds = refused(path)
    assert len(problems) == 1, problems
    [problem] = problems
    # libyaml's own limit (1,000 flow levels) may stop a nesting before ours does.
    assert problem.message.startswith(("YAML refused: ", "YAML syntax error: ")), problem
    assert re.search(r"nest|alias", problem.message), problem
    assert_points_at_the_fault(problem, text)
    assert "\n" not in str(problem)
    assert seconds < LOAD_SECONDS, f"{name}: {seconds:.2f} s"


def test_merge_keys_still_load_while_their_bomb_is_refused(tmp_path: Path) -> None:
    """1,000 mounts sharing one provider spec through ``<<`` stay a valid config."""
    mounts = "\n".join(f"      /m{i}: {{provider: {{<<: *shared, root: /srv/m{i}}}}}"
                       for i in range(1000))
    text = (f"tenants:\n  acme:\n    root: &shared {{type: local, root: /srv/acme}}\n"
            f"    mounts:\n{mounts}\n")
    config = load_config(write(tmp_path / "ok.yaml", text))
    mount = config.tenants["acme"].mounts["/m999"].provider
    assert (mount.type, mount.options().root) == ("local", "/srv/m999")
    [problem], _ = refused(write(tmp_path / "bomb.yaml", merge_bomb()))
    assert "aliases expand to more than" in problem.message


def run_check_config(path: Path, timeout: float = 30) -> tuple[int, str, float, float]:
    """``mosaic check-config path``: status, output, seconds, and its peak RSS in MiB."""
    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (CHILD_ADDRESS_SPACE, CHILD_ADDRESS_SPACE))

    start = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "mosaic", "check-config", str(path)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               preexec_fn=limit_memory)
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() - start > timeout:
            process.kill()
            pid, status, usage = os.wait4(process.pid, 0)
            break
        time.sleep(0.02)
    seconds = time.monotonic() - start
    assert process.stdout is not None
    output = process.stdout.read().decode(errors="replace")
    process.returncode = os.waitstatus_to_exitcode(status)  # already reaped by wait4
    return process.returncode, output, seconds, usage.ru_maxrss / 1024


def test_check_config_refuses_a_bomb_in_bounded_time_and_memory(tmp_path: Path) -> None:
    _, _, _, baseline_mib = run_check_config(write(tmp_path / "ok.yaml", VALID))
    path = write(tmp_path / "bomb.yaml", bomb())
    status, output, seconds, peak_mib = run_check_config(path)
    assert status == 1, output
    assert re.fullmatch(rf"{re.escape(str(path))}:\d+:\d+: YAML refused: aliases expand to "
                        r"more than [\d,]+ nodes \(at \*a\d\); write the values out\n", output)
    assert seconds < 10, seconds  # the interpreter's start included
    assert peak_mib < baseline_mib + 16, (peak_mib, baseline_mib)


@pytest.mark.parametrize("name", ["bomb", "merge-bomb", "recursive-sequence",
                                  "nested-sequences"])
def test_reload_refuses_hostile_yaml_keeps_config_without_traceback(
        tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path / "mosaic.yaml", VALID)
    running = load_config(path)
    holder = ConfigHolder(path, running)
    write(path, HOSTILE_YAML[name])
    caplog.set_level(logging.INFO)
    start = time.perf_counter()
    assert holder.reload() is False
    assert time.perf_counter() - start < LOAD_SECONDS
    assert holder.current is running
    messages = [r.getMessage() for r in caplog.records]
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert len(messages) == 2, messages  # the problem, then "keeping the running config"
    assert re.match(rf"config reload: {re.escape(str(path))}:\d+:\d+: YAML (refused|syntax "
                    r"error): .*(nest|alias)", messages[0])


def test_bomb_written_over_a_live_config_leaves_workers_small(tmp_path: Path) -> None:
    server = two_tenant_process(tmp_path, workers=2)
    with server:
        deadline = time.monotonic() + 30
        while server.log().count("mosaic.server: listening on") < 2:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)  # each worker watches the file from its start on
        time.sleep(0.5)  # the watch is set up by the observer's thread, just after
        baseline_mib = server.rss_mib()
        write(server.config_path, bomb())
        deadline = time.monotonic() + 15
        while server.log().count("keeping the running config") < 2:
            assert time.monotonic() < deadline, server.log()[-3000:]
            assert server.rss_mib() < baseline_mib + 32
            time.sleep(0.05)
        assert server.rss_mib() < baseline_mib + 32
        reply = raw_request(server.port, b"PROPFIND / HTTP/1.1\r\nHost: x\r\nDepth: 0\r\n"
                            + basic("alice@acme", "alice-secret").encode()
                            + b"Content-Length: 0\r\nConnection: close\r\n\r\n")
        assert reply.status == 207
        assert server.tracebacks() == 0
        refusals = [line for line in server.log().splitlines() if "YAML refused" in line]
        assert len(refusals) == 2, refusals  # one line per worker


# --- item 11: bad bytes, odd files -------------------------------------------------------------

def test_bad_utf8_is_reported_at_its_line_and_column(tmp_path: Path) -> None:
    head = "tenants:\n  acme:\n    root: {type: local, root: /srv/caf"
    path = write(tmp_path / "latin1.yaml", head.encode() + b"\xe9}\n")
    [problem], _ = refused(path)
    assert (problem.line, problem.column) == (3, len("    root: {type: local, root: /srv/caf") + 1)
    assert "not UTF-8" in problem.message and "0xe9" in problem.message


def test_bad_utf8_column_counts_characters_not_bytes(tmp_path: Path) -> None:
    path = write(tmp_path / "mixed.yaml", "tenants: {}\n# d\u00e9j\u00e0 \u00e9t\u00e9 "
                 .encode() + b"\xff\n")
    [problem], _ = refused(path)
    assert (problem.line, problem.column) == (2, len("# d\u00e9j\u00e0 \u00e9t\u00e9 ") + 1)


def test_control_character_is_one_problem_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "bell.yaml", "tenants:\n  acme\x07:\n    root: {type: memory}\n")
    [problem], _ = refused(path)
    assert (problem.line, problem.column) == (2, 7)
    assert "U+0007" in problem.message


def test_empty_config_says_it_is_empty(tmp_path: Path) -> None:
    for text in ("", "# only a comment\n"):
        [problem], _ = refused(write(tmp_path / "empty.yaml", text))
        assert "empty" in problem.message and "expected a mapping" in problem.message


def test_huge_config_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as f:  # sparse: costs no disk
        f.truncate(yaml_reader.MAX_FILE_BYTES + 1)
    [problem], seconds = refused(path)
    assert f"at most {yaml_reader.MAX_FILE_BYTES:,}" in problem.message
    assert seconds < LOAD_SECONDS


@pytest.mark.parametrize("kind", ["directory", "fifo", "device"])
def test_config_that_is_not_a_regular_file_is_one_line(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "mosaic.yaml"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)  # nobody writes: reading it would wait forever
    else:
        path = Path("/dev/zero")  # reading it would never end
    status, output, seconds, _ = run_check_config(path, timeout=10)
    assert (status, output) == (1, f"{path}: cannot read config: not a regular file\n")
    assert seconds < 10


# --- item 14: no value from the environment in any message --------------------------------------

SECRET = "hunter2-Sup3r-s3cret"


def tenant(body: str) -> str:
    return f"tenants:\n  acme:\n{body}"


LEAKS = {
    "provider type": (tenant("    root: {type: '${LEAK}'}\n"), "unknown provider '${LEAK}'"),
    "undeclared group": (tenant("    root: {type: memory}\n    users: {bob: {password_hash: "
                                f"'{HASH}', groups: ['${{LEAK}}']}}}}\n"),
                         "undeclared group '${LEAK}'"),
    "domain claimed twice": (
        tenant("    domains: ['${LEAK}']\n    root: {type: memory}\n")
        + "  globex:\n    domains: ['${LEAK}']\n    root: {type: memory}\n",
        "'${LEAK}' is already claimed by tenant 'acme'"),
    "secret file folder": (
        tenant("    root: {type: memory}\n    users: {bob: {password_hash_file: "
               "'/nonexistent/${LEAK}/hash'}}\n"),
        "cannot read /nonexistent/${LEAK}/hash"),
    "provider option path": (
        tenant("    root: {type: gcs, bucket: b, credentials_file: '/nonexistent/${LEAK}'}\n"),
        "credentials_file /nonexistent/${LEAK}"),
}


@pytest.mark.parametrize("name", LEAKS)
def test_errors_show_the_reference_never_the_value(tmp_path: Path, name: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    text, expected = LEAKS[name]
    monkeypatch.setenv("LEAK", SECRET)
    problems, _ = refused(write(tmp_path / "mosaic.yaml", text))
    shown = "\n".join(map(str, problems)) + repr(problems)
    assert SECRET not in shown and SECRET[:8] not in shown
    assert expected in shown, shown


def test_short_value_is_hidden_when_quoted(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEAK", "pw1")
    [problem], _ = refused(write(tmp_path / "mosaic.yaml", LEAKS["provider type"][0]))
    assert "'pw1'" not in problem.message and "'${LEAK}'" in problem.message


def test_provider_type_from_env_knows_its_secret_keys(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``type: ${X}`` is expanded first, so its provider's ``<secret>_file`` keys work."""
    monkeypatch.setenv("KIND", "s3")
    (tmp_path / "s3.secret").write_text(SECRET + "\n")
    text = tenant("    root: {type: '${KIND}', bucket: bucket, key: AKIAEXAMPLE, "
                  "secret_file: s3.secret}\n")
    config = load_config(write(tmp_path / "mosaic.yaml", text))
    assert config.tenants["acme"].root.options().secret.get_secret_value() == SECRET


def test_check_config_and_reload_never_echo_an_environment_value(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEAK", SECRET)
    path = write(tmp_path / "mosaic.yaml", VALID)
    holder = ConfigHolder(path, load_config(path))
    text, _ = LEAKS["domain claimed twice"]
    write(path, text.replace("root: {type: memory}", "root: {type: '${LEAK}'}", 1))
    status, output, _, _ = run_check_config(path)
    assert status == 1 and "'${LEAK}'" in output and SECRET not in output
    caplog.set_level(logging.DEBUG)
    assert holder.reload() is False
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "'${LEAK}'" in logged and SECRET not in logged


# --- item 18: lookups by map, not by scanning the tenants or users ----------------------------

class CallCounter:
    """Wraps a helper of the module under test and counts its calls."""

    def __init__(self, function: Any) -> None:
        self.function, self.calls = function, 0

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        return self.function(*args)


def many_tenants(count: int, users: int = 1) -> Config:
    return Config.model_validate({"tenants": {f"t{i}": {
        "domains": [f"t{i}.example"], "netbios": [f"T{i}"], "hosts": [f"t{i}.files.example"],
        "root": {"type": "memory"},
        "users": {f"user{u}": {"password_hash": HASH} for u in range(users)},
    } for i in range(count)}})


@pytest.mark.parametrize(("login", "host", "tenant_id"), [
    ("user0@T999.example", "", "t999"),
    ("t999\\user0", "", "t999"),
    ("user0@t500", "t500.files.example:8443", "t500"),
    ("user0", "T999.Files.Example", "t999"),
    ("user0@nowhere.example", "", None),
])
def test_login_finds_its_tenant_without_scanning(monkeypatch: pytest.MonkeyPatch, login: str,
                                                 host: str, tenant_id: str | None) -> None:
    config = many_tenants(1000)
    login_module.resolve_login(config, "user0@t0", None)  # the index is built here, once
    folds = CallCounter(login_module.fold_case)
    monkeypatch.setattr(login_module, "fold_case", folds)
    for _ in range(10):
        resolved = login_module.resolve_login(config, login, host or None)
        assert (resolved.tenant_id if resolved else None) == tenant_id
    assert folds.calls <= 2 * 10, "names are folded per tenant: the tenants are scanned"
    builds = login_module.tenant_index.builds
    login_module.resolve_login(config, login, host or None)
    assert login_module.tenant_index.builds == builds


def test_a_new_config_gets_a_new_index() -> None:
    first = many_tenants(2)
    assert login_module.resolve_login(first, "user0@t1.example", None).tenant_id == "t1"
    builds = login_module.tenant_index.builds
    reloaded = first.model_copy(update={"tenants": {"t7": first.tenants["t1"]}})
    for _ in range(3):
        assert login_module.resolve_login(reloaded, "user0@t1.example", None).tenant_id == "t7"
        assert login_module.resolve_login(first, "user0@t1.example", None).tenant_id == "t1"
    assert login_module.tenant_index.builds == builds + 1  # one for the new config, once


def test_user_is_found_without_scanning_the_users(monkeypatch: pytest.MonkeyPatch) -> None:
    tenant = many_tenants(1, users=2000).tenants["t0"]
    source = identity.LocalIdentitySource("t0", tenant)
    assert source.authenticate("user0", "pw") is not None  # the user map is built here, once
    folds = CallCounter(identity.fold_case)
    monkeypatch.setattr(identity, "fold_case", folds)
    for name in ("USER1999", "user1000", "nobody"):
        principal = source.authenticate(name, "pw")
        assert (principal.user if principal else None) == \
            (None if name == "nobody" else name.lower())
    assert folds.calls <= 3, "user names are folded per user: the users are scanned"
