"""Locks and dead properties outlive a server restart."""

from __future__ import annotations

from tests.support import tenants
from tests.support.live import live_server

LOCK_BODY = ('<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:">'
             '<D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>'
             '<D:owner>restart-test</D:owner></D:lockinfo>')
PROPPATCH = ('<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:M="urn:m"><D:set>'
             '<D:prop><M:note>kept across restarts</M:note></D:prop></D:set></D:propertyupdate>')
ALLPROP = '<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>'


def test_locks_and_properties_survive_a_restart(tmp_path):
    config = tenants.build(tenants.two_tenants(tmp_path))
    with live_server(config) as first:
        alice = first.session("alice@acme.example", "alice-secret")
        alice.put(first.url + "/kept.txt", data=b"v1")
        assert alice.request("PROPPATCH", first.url + "/kept.txt",
                             data=PROPPATCH).status_code == 207
        token = alice.request("LOCK", first.url + "/kept.txt", data=LOCK_BODY,
                              headers={"Content-Type": "application/xml"}).headers["Lock-Token"]
    with live_server(config) as second:
        alice = second.session("alice@acme.example", "alice-secret")
        bob = second.session("bob@acme.example", "bob-secret")
        assert bob.put(second.url + "/kept.txt", data=b"v2").status_code == 423
        found = alice.request("PROPFIND", second.url + "/kept.txt", data=ALLPROP,
                              headers={"Depth": "0"}).text
        assert "kept across restarts" in found and token.strip("<>") in found
        assert alice.request("UNLOCK", second.url + "/kept.txt",
                             headers={"Lock-Token": token}).status_code == 204
        assert bob.put(second.url + "/kept.txt", data=b"v2").status_code == 204
