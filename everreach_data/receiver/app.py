"""The ASGI app's assembly: each flow's routes (webhooks in, sends, conversions, the ads summary), the
health check, the OpenAPI document and the one error shape. It only ever writes to the queues
(``meta_webhook_event``, ``outbound_message_job``) and the conversions it sends; the Dagster jobs do the rest."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator

from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.schemas import SchemaGenerator

from everreach_data.ads import routes as ads_routes
from everreach_data.config import Settings
from everreach_data.conversions import routes as conversions_routes
from everreach_data.db.connection import POOLER_SAFE
from everreach_data.inbox import routes as webhooks
from everreach_data.outbound import routes as outbound_routes
from everreach_data.receiver.errors import ApiError, api_error_handler, http_error_handler

schemas = SchemaGenerator(
    {"openapi": "3.0.3", "info": {"title": "EverReach Data receiver", "version": "1.0.0"},
     "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}}}
)


async def healthz(request: Request) -> JSONResponse:
    """Liveness plus a database round trip, so a load balancer takes a receiver out when it cannot store."""
    try:
        async with request.app.state.pool.connection(timeout=2) as conn:
            await conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        return JSONResponse({"status": "unavailable", "database": type(exc).__name__}, status_code=503)
    return JSONResponse({"status": "ok"})


async def openapi(request: Request) -> JSONResponse:
    """The OpenAPI document, built from the endpoints' docstrings (YAML after a ``---`` line)."""
    return JSONResponse(schemas.get_schema(routes=request.app.routes))


class Receiver(Starlette):
    """Starlette, except that Meta's webhook POSTs (the hot path: ~50 µs of middleware and routing per
    request otherwise) go straight to their bare ASGI handler. Everything else, lifespan included, is
    ordinary Starlette."""

    webhook_intake: webhooks.WebhookIntake

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] == webhooks.PATH and scope["method"] == "POST":
            await self.webhook_intake(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings, database_url: str, *, pool_max_size: int = 16) -> Starlette:
    """The receiver app. Refuses to build without an app secret: an unsigned intake would accept anything."""
    if not settings.META_APP_SECRET or not settings.META_APP_SECRET.get_secret_value():
        raise ValueError("META_APP_SECRET is not set: the receiver will not start without it, because it "
                         "could not verify that webhooks come from Meta")
    if not settings.JWT_SECRET or not settings.JWT_SECRET.get_secret_value():
        raise ValueError("JWT_SECRET is not set: the receiver will not start without it, because /api/v1 "
                         "routes could not authenticate callers")

    pool = AsyncConnectionPool(database_url, min_size=2, max_size=pool_max_size, open=False,
                               kwargs={"autocommit": False, **POOLER_SAFE})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await pool.open(wait=False)
        try:
            yield
        finally:
            for close in app.state.on_shutdown:
                if inspect.isawaitable(closed := close()):
                    await closed
            await pool.close()

    routes = [
        Route("/healthz", healthz, methods=["GET"], include_in_schema=False),
        Route("/openapi.json", openapi, methods=["GET"], include_in_schema=False),
        *webhooks.routes,
        *outbound_routes.routes,
        *ads_routes.routes,
        *conversions_routes.routes,
    ]
    app = Receiver(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={ApiError: api_error_handler, HTTPException: http_error_handler},
    )
    app.state.settings = settings
    app.state.channels = settings.channels()
    app.state.pool = pool
    app.state.on_shutdown = []  # closers of what is made on first use (Graph API clients)
    app.state.jwt_secret = settings.JWT_SECRET.get_secret_value()
    app.webhook_intake = webhooks.WebhookIntake(pool, settings.META_APP_SECRET.get_secret_value().encode(),
                                                settings.RECEIVER_MAX_BODY_BYTES)
    return app


