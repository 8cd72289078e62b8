"""TLS: the server speaks HTTPS with the configured certificate, TLS 1.2 or newer."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess

import pytest
import requests

from mosaic.server import _tls_adapter
from tests.support import tenants
from tests.support.live import live_server


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    openssl = shutil.which("openssl")
    assert openssl, "openssl is needed to make a test certificate"
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def server(tmp_path_factory, certificate):
    data = tenants.two_tenants(tmp_path_factory.mktemp("tls-data"))
    data["server"]["tls"] = {"cert": str(certificate[0]), "key": str(certificate[1])}
    with live_server(tenants.build(data)) as live:
        yield live


def test_https_round_trip_with_the_configured_certificate(server, certificate):
    url = server.url.replace("http://", "https://")
    session = requests.Session()
    session.auth = ("alice@acme.example", "alice-secret")
    # Per request: REQUESTS_CA_BUNDLE in the environment would override session.verify.
    trust = str(certificate[0])
    assert session.put(url + "/secure.txt", data=b"over tls", verify=trust).status_code == 201
    assert session.get(url + "/secure.txt", verify=trust).content == b"over tls"


def test_plain_http_gets_no_data(server):
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url + "/secure.txt", auth=("alice@acme.example", "alice-secret"),
                     timeout=5)


def test_minimum_protocol_is_tls_1_2(certificate):
    # Asserted on the server's own context: a client-side TLS 1.1 attempt would
    # also fail on this OpenSSL's client defaults, proving nothing.
    adapter = _tls_adapter(*certificate)
    assert adapter.context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_a_tls_1_2_client_connects(server):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", server.port)) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        assert tls.version() == "TLSv1.2"
