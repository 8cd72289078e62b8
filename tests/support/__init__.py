"""Helpers shared by the integration tests: configs and a live server."""
