"""litmus, the WebDAV conformance suite, against a tenant root, inside mounts, on S3.

Every one of its five suites must pass 100%: a failure or a warning-free
skip in litmus' own output fails this test.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.support import moto, tenants
from tests.support.live import live_server

SUITES = ("basic", "copymove", "props", "locks", "http")
SUMMARY = re.compile(r"<- summary for `(\w+)': of (\d+) tests run: (\d+) passed, (\d+) failed")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The shared two-tenant setup, plus acme's /cloud on a bucket of moto's S3."""
    data = tenants.two_tenants(tmp_path_factory.mktemp("litmus"))
    data["tenants"]["acme"]["mounts"]["/cloud"] = {"provider": moto.provider(moto.fresh_bucket())}
    with live_server(tenants.build(data)) as live:
        yield live


def run_litmus(url: str, login: str, password: str, workdir: str = "/tmp") -> str:
    litmus = shutil.which("litmus")
    assert litmus, "litmus is not installed: run scripts/test.sh"
    result = subprocess.run(  # litmus writes debug.log and child.log into its cwd
        [litmus, "-k", url, login, password], cwd=workdir,
        capture_output=True, text=True, timeout=300,
        env={"TESTS": " ".join(SUITES), "PATH": "/usr/bin:/bin", "HOME": "/tmp"},
    )
    return result.stdout + result.stderr


@pytest.mark.litmus
@pytest.mark.parametrize("folder", ["/", "/projects/", "/projects/archive/", "/cloud/"])
def test_litmus_passes_every_suite(server, folder, tmp_path):
    output = run_litmus(server.url + folder, "alice@acme.example", "alice-secret", str(tmp_path))
    summaries = {m.group(1): m.groups()[1:] for m in SUMMARY.finditer(output)}
    assert set(summaries) == set(SUITES), output
    for suite, (run, passed, failed) in summaries.items():
        assert failed == "0" and run == passed, f"{suite}: {output}"
    assert "WARNING" not in output, output
