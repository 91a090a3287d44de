"""Bearer tokens for the tests' calls to ``/api/v1``: each carries the role its call needs, signed with the
sandbox's JWT secret (the ``settings`` fixture's), at the default role claim."""

from __future__ import annotations

from everreach_data.receiver.auth import issue_token
from everreach_sandbox.defaults import SANDBOX_DEFAULTS

SECRET = SANDBOX_DEFAULTS["JWT_SECRET"]


def token(*roles: str, sub: str = "caller-1", ttl: int = 600) -> str:
    return issue_token(SECRET, sub, roles=roles, ttl_seconds=ttl)


def bearer(*roles: str, sub: str = "caller-1", ttl: int = 600) -> dict[str, str]:
    """``Authorization`` for a caller holding ``roles`` (operator, analyst, admin)."""
    return {"Authorization": f"Bearer {token(*roles, sub=sub, ttl=ttl)}"}
