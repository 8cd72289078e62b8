"""``rackspace``: Rackspace Cloud Files, the :mod:`~mosaic.providers.swift` store
with Rackspace's identity service.

Authentication is ``POST {identity_url}/tokens`` with
``RAX-KSKEY:apiKeyCredentials`` (user name and API key); the storage URL is
the ``cloudFiles`` endpoint of the chosen region in the returned catalog (its
``internalURL`` with ``interface: internal``, Rackspace's ServiceNet). Every
other behaviour (segments, listings, errors, connections per mount) is the
Swift provider's.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from mosaic.core.capabilities import BuildContext
from mosaic.providers.objectstore import CAPABILITIES as STORE_CAPABILITIES
from mosaic.providers.objectstore import ObjectStoreFileSystem
from mosaic.providers.primitives import ServiceUrl
from mosaic.providers.swift import SwiftOptions, SwiftStore
from mosaic.providers.swift_identity import Auth, identity_post, pick_endpoint

__all__ = ["CAPABILITIES", "Options", "build"]

# container listings carry no metadata and no time for a sub-folder
CAPABILITIES = dataclasses.replace(STORE_CAPABILITIES, listed_mtimes=False)

IDENTITY_URL = "https://identity.api.rackspacecloud.com/v2.0"


class Options(SwiftOptions):
    username: str = Field(description="Rackspace user name")
    api_key: SecretStr = Field(description="Rackspace API key")
    region: str = Field(pattern=r"^[A-Za-z0-9]{2,16}$", description="Region, e.g. DFW, LON")
    interface: Literal["public", "internal"] = Field(
        "public", description="internal: the ServiceNet endpoint (from Rackspace servers)")
    identity_url: ServiceUrl = Field(IDENTITY_URL, description="Identity service (v2.0)")

    @field_validator("identity_url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("identity_url must be an http(s) URL")
        return value.rstrip("/")


def build(options: Options, context: BuildContext) -> ObjectStoreFileSystem:
    return ObjectStoreFileSystem(SwiftStore(options, rackspace_auth(options)), options, context)


def rackspace_auth(options: Options) -> Auth:
    body = {"auth": {"RAX-KSKEY:apiKeyCredentials": {
        "username": options.username, "apiKey": options.api_key.get_secret_value()}}}
    url_key = "internalURL" if options.interface == "internal" else "publicURL"

    def authenticate() -> tuple[str, str]:
        access = identity_post(options.identity_url + "/tokens", body,
                               options.timeout_s).json().get("access", {})
        endpoints = [e for service in access.get("serviceCatalog", [])
                     if service.get("name") == "cloudFiles"
                     for e in service.get("endpoints", [])]
        return pick_endpoint(endpoints, url_key, options.region), access["token"]["id"]
    return authenticate
