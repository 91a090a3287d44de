"""An API operation declared once — who may call it, the models it reads, what it answers — and both run
and documented from that declaration: :func:`api_route` checks the role and validates the inputs before
the handler sees them, and :mod:`everreach_data.receiver.openapi` writes the same declaration into the
OpenAPI document. A handler cannot read an input its operation does not declare, so the document cannot
leave one out."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from everreach_data.receiver.auth import Role, authorize
from everreach_data.receiver.errors import ApiError
from everreach_data.receiver.inputs import read_json_body, read_params, single_values


@dataclass(frozen=True)
class PlainText:
    """An answer that is plain text, not JSON (Meta's webhook protocol)."""

    description: str
    example: str


@dataclass(frozen=True)
class Link:
    """An OpenAPI link: the operation an answer leads to, and its parameters as runtime expressions (e.g.
    ``$response.body#/job_id``), so clients and API testers can follow it."""

    operation_id: str
    parameters: Mapping[str, str]


@dataclass(frozen=True)
class Answer:
    """A documented answer: its model (a pydantic model, a union of them, or :class:`PlainText`), what it
    means, the headers it carries (name → description) and the operations it leads to."""

    model: Any
    description: str
    headers: Mapping[str, str] = field(default_factory=dict)
    links: Mapping[str, Link] = field(default_factory=dict)


@dataclass(frozen=True)
class Example:
    summary: str
    value: dict[str, Any]


@dataclass(frozen=True)
class Operation:
    """What an operation reads and answers. ``errors`` are the error-shape answers particular to it (status →
    why); those its inputs imply (401/403 for a role, 400/413/415/422 for a body, …) are added for it."""

    summary: str
    answers: Mapping[int, Answer]
    tag: str
    role: Role | None = None
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    path: type[BaseModel] | None = None
    headers: type[BaseModel] | None = None
    errors: Mapping[int, str] = field(default_factory=dict)
    examples: Mapping[str, Example] = field(default_factory=dict)
    #: Answered by its own ASGI handler (the webhook hot path), which checks its inputs itself: only
    #: ``errors`` are documented for it.
    bare: bool = False


class ApiRoute(Route):
    """A Starlette route that carries its :class:`Operation` (for the document)."""

    def __init__(self, path: str, endpoint: Callable, *, method: str, operation: Operation, name: str,
                 description: str | None = None) -> None:
        super().__init__(path, endpoint, methods=[method], name=name)
        self.operation = operation
        #: The operation's description in the document: by default, the handler's docstring.
        self.description = description or inspect.getdoc(getattr(endpoint, "__wrapped__", endpoint)) or None


def reply(model: BaseModel, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """A JSON answer serialized by its documented model (so the answer is what the document says)."""
    return Response(model.model_dump_json(), status_code=status, headers=headers, media_type="application/json")


def header_values(model: type[BaseModel], request: Request) -> dict[str, str]:
    """The request's headers that ``model`` declares (by alias), and no others."""
    names = [f.alias or name for name, f in model.model_fields.items()]
    return {name: request.headers[name] for name in names if name in request.headers}


Handler = Callable[..., Awaitable[Response]]


def api_route(method: str, path: str, handler: Handler, operation: Operation) -> ApiRoute:
    """The route that runs ``handler`` with the inputs ``operation`` declares, checked and validated:
    ``principal`` (role), ``path``, ``headers``, ``query`` and ``body`` keyword arguments, in that order of
    checking (a caller without the role learns nothing about their input)."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        inputs: dict[str, Any] = {}
        if operation.role is not None:
            inputs["principal"] = authorize(request, operation.role)
        if operation.path is not None:
            try:
                inputs["path"] = read_params(operation.path, request.path_params)
            except ApiError as exc:  # a path that names nothing names no resource
                raise ApiError(404, f"not found: {exc.detail}", field=exc.field) from exc
        if operation.headers is not None:
            inputs["headers"] = read_params(operation.headers, header_values(operation.headers, request))
        if operation.query is not None:
            inputs["query"] = read_params(operation.query, single_values(request.query_params))
        if operation.body is not None:
            inputs["body"] = await read_json_body(request, operation.body)
        return await handler(request, **inputs)

    return ApiRoute(path, endpoint, method=method, operation=operation, name=handler.__name__)
