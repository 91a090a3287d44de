"""Bearer JWT (HS256, Supabase-style ``sub``) on every ``/api/v1`` route."""

from __future__ import annotations

from dataclasses import dataclass

import jwt
from starlette.requests import Request

from everreach_data.receiver.errors import ApiError

ALGORITHMS = ["HS256"]


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's ``sub`` (recorded as the sender of what they queue) and its role."""

    sub: str
    role: str | None = None


def authenticate(request: Request) -> Principal:
    """The caller of a ``/api/v1`` request; 401 with a reason for a missing, bad or expired token."""
    secret: str = request.app.state.jwt_secret
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "missing bearer token: send 'Authorization: Bearer <JWT>'",
                       headers={"WWW-Authenticate": "Bearer"})
    try:
        claims = jwt.decode(token.strip(), secret, algorithms=ALGORITHMS,
                            options={"require": ["sub", "exp"], "verify_aud": False})
    except jwt.ExpiredSignatureError as exc:
        raise ApiError(401, "token expired", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}) from exc
    except jwt.InvalidTokenError as exc:
        raise ApiError(401, f"invalid token: {exc}",
                       headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}) from exc
    return Principal(sub=str(claims["sub"]), role=claims.get("role"))


def issue_token(secret: str, sub: str, *, ttl_seconds: int = 3600, role: str = "authenticated") -> str:
    """A token for ``sub`` (the CLI's ``token`` command, tests and the demo use it)."""
    import time

    now = int(time.time())
    return jwt.encode({"sub": sub, "role": role, "iat": now, "exp": now + ttl_seconds}, secret, algorithm="HS256")
