"""Shared basics under every layer: the error vocabulary, path and name rules,
storage capabilities, mount health and password hashing.

Providers, the VFS, the config and everything above import from here; nothing
here imports any other part of Mosaic (tests/test_layers.py checks both).
"""
