"""The HTTP front end: what happens to a request before the WebDAV application sees it."""
