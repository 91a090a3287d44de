"""The ASGI app's assembly: each flow's routes (webhooks in, sends, conversions, the ads summary), the
health check, the OpenAPI document and its page, and the one error shape. It only ever writes to the queues
(``meta_webhook_event``, ``outbound_message_job``) and the conversions it sends; the Dagster jobs do the rest."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator
from typing import Literal

from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from everreach_data.ads import routes as ads_routes
from everreach_data.config import Settings
from everreach_data.conversions import routes as conversions_routes
from everreach_data.db.connection import POOLER_SAFE
from everreach_data.inbox import routes as webhooks
from everreach_data.outbound import routes as outbound_routes
from everreach_data.receiver import openapi
from everreach_data.receiver.auth import TokenPolicy
from everreach_data.receiver.errors import EXCEPTION_HANDLERS, UnexpectedErrors
from everreach_data.receiver.operation import Answer, Operation, api_route, reply

#: How long a request waits for a database connection before answering 503.
POOL_TIMEOUT_SECONDS = 5.0


class Ready(BaseModel):
    status: Literal["ok"] = "ok"


class Unavailable(BaseModel):
    status: Literal["unavailable"] = "unavailable"
    database: str = Field(description="the error that kept the database from answering")


async def healthz(request: Request) -> Response:
    """Liveness plus a database round trip, so a load balancer takes a receiver out when it cannot store."""
    try:
        async with request.app.state.pool.connection(timeout=2) as conn:
            await conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        return reply(Unavailable(database=type(exc).__name__), 503)
    return reply(Ready())


HEALTH = api_route("GET", "/healthz", healthz, Operation(
    summary="Liveness and a database round trip", tag="health",
    answers={200: Answer(Ready, "Ready: the database answers"),
             503: Answer(Unavailable, "Not ready: the database does not answer")}))


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
    """The receiver app. Refuses to build without an app secret (an unsigned intake would accept anything)
    or without a JWT secret long enough to trust (see :class:`TokenPolicy`)."""
    if not settings.META_APP_SECRET or not settings.META_APP_SECRET.get_secret_value():
        raise ValueError("META_APP_SECRET is not set: the receiver will not start without it, because it "
                         "could not verify that webhooks come from Meta")
    token_policy = TokenPolicy.from_settings(settings)

    pool = AsyncConnectionPool(database_url, min_size=2, max_size=pool_max_size, open=False,
                               timeout=POOL_TIMEOUT_SECONDS, kwargs={"autocommit": False, **POOLER_SAFE})

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

    intake = webhooks.WebhookIntake(pool, settings.META_APP_SECRET.get_secret_value().encode(),
                                    settings.RECEIVER_MAX_BODY_BYTES)
    routes = [
        HEALTH,
        *openapi.routes,
        *webhooks.routes,
        webhooks.intake_route(intake),
        *outbound_routes.routes,
        *ads_routes.routes,
        *conversions_routes.routes,
    ]
    app = Receiver(routes=routes, lifespan=lifespan, middleware=[Middleware(UnexpectedErrors)],
                   exception_handlers=EXCEPTION_HANDLERS)
    app.state.settings = settings
    app.state.channels = settings.channels()
    app.state.pool = pool
    app.state.on_shutdown = []  # closers of what is made on first use (Graph API clients)
    app.state.token_policy = token_policy
    app.state.openapi = openapi.document(routes, role_claim=token_policy.role_claim)
    app.webhook_intake = intake
    return app
