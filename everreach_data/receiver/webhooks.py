"""Receiver routes for this surface (see the module's owner issue)."""

from starlette.routing import Route

routes: list[Route] = []
