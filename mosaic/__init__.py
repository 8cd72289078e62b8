"""Mosaic: one WebDAV drive per tenant, composed from storage mounts."""

__version__ = "0.1.0"
