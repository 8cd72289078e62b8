"""Mosaic's comparative benchmark against stock wsgidav and rclone (see README.md)."""
