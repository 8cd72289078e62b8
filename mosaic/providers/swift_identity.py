"""The identity services a Swift mount authenticates with: auth v1 (tempauth,
swauth) and Keystone v3 password auth scoped to a project, its object-store
endpoint picked from the catalog by region and interface. Each returns an
``Auth``: a callable giving the storage URL and a token, called again when
the token is refused. :mod:`mosaic.providers.rackspace` reuses the pieces.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import requests
from swiftclient.client import ClientException
from swiftclient.client import get_auth as swift_get_auth

if TYPE_CHECKING:  # swift imports this module to build its mounts
    from mosaic.providers.swift import Options

Auth = Callable[[], tuple[str, str]]  # () -> (storage URL, token)


def v1_auth(options: Options) -> Auth:
    def authenticate() -> tuple[str, str]:
        return swift_get_auth(options.auth_url, options.user,
                              options.key.get_secret_value(),  # type: ignore[union-attr]
                              auth_version="1", timeout=options.timeout_s)
    return authenticate


def keystone_v3_auth(options: Options) -> Auth:
    """Password auth scoped to a project; the endpoint comes from the catalog."""
    url = options.auth_url if options.auth_url.endswith("/v3") else options.auth_url + "/v3"
    body = {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": options.username, "domain": {"name": options.user_domain_name},
            "password": options.password.get_secret_value()}}},  # type: ignore[union-attr]
        "scope": {"project": {"name": options.project_name,
                              "domain": {"name": options.project_domain_name}}}}}

    def authenticate() -> tuple[str, str]:
        answer = identity_post(url + "/auth/tokens", body, options.timeout_s)
        catalog = answer.json().get("token", {}).get("catalog", [])
        endpoints = [e for service in catalog if service.get("type") == "object-store"
                     for e in service.get("endpoints", [])
                     if e.get("interface") == options.interface]
        return pick_endpoint(endpoints, "url", options.region), answer.headers["X-Subject-Token"]
    return authenticate


def identity_post(url: str, body: dict[str, Any], timeout: float) -> requests.Response:
    """POST to an identity service; a refusal is a ClientException with its status."""
    answer = requests.post(url, json=body, timeout=timeout,
                           headers={"Accept": "application/json"})
    if not answer.ok:
        raise ClientException(f"identity service refused: {answer.status_code}",
                              http_status=answer.status_code, http_reason=answer.reason)
    return answer


class NoEndpointError(ClientException):
    """The catalog has no object-store endpoint for that region and interface."""


def pick_endpoint(endpoints: list[dict[str, Any]], url_key: str, region: str | None) -> str:
    for endpoint in endpoints:
        if region is None or region in (endpoint.get("region"), endpoint.get("region_id")):
            return str(endpoint[url_key])
    raise NoEndpointError(f"no object-store endpoint in region {region!r}")
