"""The operator web page (static files + the read-side JSON behind it); ``mount(app)`` adds it."""

from server.ui.router import mount, router

__all__ = ["mount", "router"]
