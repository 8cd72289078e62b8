"""bench/ad.py in its quick mode, against the real Samba DC (tests/support/samba_ad.py),
so that it cannot rot; its figures are in bench/README.md ("Active Directory")."""

from __future__ import annotations

import pytest

from bench import ad


def test_quick_run_measures_every_section(capsys: pytest.CaptureFixture[str]) -> None:
    assert ad.main(["--quick"]) == 0
    out = capsys.readouterr().out
    for row in ("LDAPS, new connection", "LDAPS, pooled", "StartTLS, new connection",
                "StartTLS, pooled", "local user (argon2id)", "authenticate() in-process",
                "CORP\\alice, Basic", "CORP\\alice, Negotiate", "dc_retry_seconds 0",
                "dc_retry_seconds 15", "Goals of issue 15:", "Python keeps"):
        assert row in out, row
    # every login while no DC answers was a 503 (the timings are the report's business)
    assert out.count(": all 503,") == 2 and "NOT all" not in out
