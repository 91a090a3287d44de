"""The receiver's shared parts over real HTTP: health, OpenAPI, JWT auth and the error shape."""

from __future__ import annotations

import time

import httpx
import jwt
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from everreach_data.receiver.app import create_app
from everreach_data.receiver.auth import TokenPolicy, authenticate, issue_token
from everreach_data.receiver.errors import ApiError, api_error_handler
from tests.servers import serve

SECRET = "test-jwt-secret-0123456789abcdef-long-enough-for-hs512-0123456789"  # 64+ bytes: no key warnings
OTHER_SECRET = "other-secret-0123456789abcdef-0123456789"


def test_healthz_and_openapi(settings, db_url):
    with serve(create_app(settings, db_url)) as base:
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
        doc = httpx.get(f"{base}/openapi.json").json()
        assert doc["openapi"].startswith("3.") and doc["info"]["title"] == "EverReach Data receiver"


def test_healthz_is_503_when_the_database_is_unreachable(settings):
    with serve(create_app(settings, "postgresql://nobody@127.0.0.1:1/none")) as base:
        response = httpx.get(f"{base}/healthz", timeout=10)
    assert response.status_code == 503 and response.json()["status"] == "unavailable"


@pytest.mark.parametrize("missing", ["META_APP_SECRET", "JWT_SECRET"])
def test_receiver_will_not_build_without_its_secrets(settings, missing):
    with pytest.raises(ValueError, match=missing):
        create_app(settings.model_copy(update={missing: None}), "postgresql://unused")


async def whoami(request: Request) -> JSONResponse:
    principal = authenticate(request)
    return JSONResponse({"sub": principal.sub})


def auth_app() -> Starlette:
    app = Starlette(routes=[Route("/api/v1/whoami", whoami)], exception_handlers={ApiError: api_error_handler})
    app.state.token_policy = TokenPolicy(SECRET)
    return app


@pytest.mark.parametrize(("header", "reason"), [
    (None, "missing bearer token"),
    ("Basic abc", "missing bearer token"),
    ("Bearer not-a-jwt", "invalid token"),
    ("Bearer " + jwt.encode({"sub": "u1", "exp": int(time.time()) + 60}, OTHER_SECRET, algorithm="HS256"),
     "invalid token"),
    ("Bearer " + jwt.encode({"sub": "u1", "exp": int(time.time()) - 5}, SECRET, algorithm="HS256"),
     "token expired"),
    ("Bearer " + jwt.encode({"exp": int(time.time()) + 60}, SECRET, algorithm="HS256"), "invalid token"),
    ("Bearer " + jwt.encode({"sub": "u1", "exp": int(time.time()) + 60}, SECRET, algorithm="HS512"),
     "invalid token"),
])
def test_bad_tokens_get_401_with_a_reason(header, reason):
    with serve(auth_app()) as base:
        response = httpx.get(f"{base}/api/v1/whoami", headers={"Authorization": header} if header else {})
    assert response.status_code == 401
    assert response.json()["error"]["message"].startswith(reason)
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_valid_token_yields_its_sub():
    with serve(auth_app()) as base:
        token = issue_token(SECRET, "operator-7", roles=["operator"])
        response = httpx.get(f"{base}/api/v1/whoami", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200 and response.json() == {"sub": "operator-7"}
