"""Bearer JWT (HS256, Supabase-style) on every ``/api/v1`` route: who is calling, and what they may do.

Authentication is not enough: with a Supabase JWT secret every signed-in user of the app holds a valid
token. So each route needs a role, read from the claim at ``JWT_ROLE_CLAIM`` (a dotted path such as
``role`` or ``app_metadata.everreach_role``; a string or a list of strings), and a token without one may do
nothing. ``operator`` may queue sends and read its own jobs; ``analyst`` may read ads insights and send
conversion events; ``admin`` — and Supabase's ``service_role`` — may do both and read every job.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import jwt
from starlette.requests import Request

from everreach_data.config import Settings
from everreach_data.receiver.errors import ApiError

ALGORITHMS = ["HS256"]
#: RFC 7518 §3.2: an HS256 key is at least as long as the hash, 256 bits.
MIN_SECRET_BYTES = 32


class Role(StrEnum):
    OPERATOR = "operator"
    ANALYST = "analyst"
    ADMIN = "admin"


#: The role names a token may carry, and what each holds. Any other name (Supabase's ``authenticated`` and
#: ``anon`` among them) holds nothing.
GRANTS: Mapping[str, frozenset[Role]] = {
    "operator": frozenset({Role.OPERATOR}),
    "analyst": frozenset({Role.ANALYST}),
    "admin": frozenset(Role),
    "service_role": frozenset(Role),
}

_UNAUTHENTICATED = {"WWW-Authenticate": "Bearer"}
_INVALID = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's ``sub`` (recorded as the sender of what they queue) and their roles."""

    sub: str
    roles: frozenset[Role] = frozenset()

    @property
    def is_admin(self) -> bool:
        return Role.ADMIN in self.roles


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted ``path`` of the claims (None where any step is missing)."""
    value: Any = claims
    for step in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(step)
    return value


def roles_in(value: Any) -> frozenset[Role]:
    names = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return frozenset().union(*(GRANTS.get(name, frozenset()) for name in names if isinstance(name, str)))


@dataclass(frozen=True)
class TokenPolicy:
    """How ``/api/v1`` tokens are checked: the secret, where the role is, the audience, and the leeway for
    ``iat``/``nbf`` (an issuer whose clock runs ahead of ours); ``exp`` is exact."""

    secret: str = field(repr=False)
    role_claim: str = "role"
    audience: str | None = None
    leeway_seconds: int = 30

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenPolicy:
        """The policy the settings describe; refuses a missing or short secret (the receiver would not
        start rather than accept tokens anyone could forge)."""
        secret = settings.secret("JWT_SECRET")
        if not secret:
            raise ValueError("JWT_SECRET is not set: the receiver will not start without it, because /api/v1 "
                             "routes could not authenticate callers")
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"JWT_SECRET is shorter than {MIN_SECRET_BYTES} bytes: an HS256 secret that short "
                             "can be guessed; use a random one (e.g. `openssl rand -base64 48`)")
        return cls(secret, settings.JWT_ROLE_CLAIM, settings.JWT_AUDIENCE, settings.JWT_LEEWAY_SECONDS)

    def principal(self, authorization: str | None) -> Principal:
        """The caller named by an ``Authorization`` header; 401 with a reason for a missing, malformed,
        forged, expired or not-yet-valid token, or one for another audience."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "missing bearer token: send 'Authorization: Bearer <JWT>'", headers=_UNAUTHENTICATED)
        try:  # exp is checked below, exactly: the leeway is for an issuer's clock ahead of ours (iat, nbf)
            claims = jwt.decode(token.strip(), self.secret, algorithms=ALGORITHMS, audience=self.audience,
                                leeway=self.leeway_seconds, options={
                                    "require": ["exp"], "verify_exp": False, "verify_aud": self.audience is not None})
        except jwt.InvalidTokenError as exc:
            raise ApiError(401, f"invalid token: {exc}", headers=_INVALID) from exc
        role = claim_at(claims, self.role_claim)
        sub = claims.get("sub") or ("service_role" if role == "service_role" else None)  # Supabase's service key
        if not isinstance(sub, str) or not sub:
            raise ApiError(401, 'invalid token: Token is missing the "sub" claim', headers=_INVALID)
        try:
            expires = int(claims["exp"])
        except (TypeError, ValueError, OverflowError):
            raise ApiError(401, "invalid token: Expiration Time claim (exp) must be an integer.",
                           headers=_INVALID) from None
        if expires <= time.time():
            raise ApiError(401, "token expired", headers=_INVALID)
        roles = roles_in(role)
        return Principal(sub=sub, roles=roles)

    def issue(self, sub: str, roles: Iterable[str], *, ttl_seconds: int = 3600) -> str:
        return issue_token(self.secret, sub, roles=roles, role_claim=self.role_claim, audience=self.audience,
                           ttl_seconds=ttl_seconds)


def authenticate(request: Request) -> Principal:
    """The caller of a ``/api/v1`` request (401 otherwise)."""
    policy: TokenPolicy = request.app.state.token_policy
    return policy.principal(request.headers.get("authorization"))


def authorize(request: Request, role: Role) -> Principal:
    """The caller, if they hold ``role``; 403 naming it otherwise."""
    principal = authenticate(request)
    if role not in principal.roles:
        claim = request.app.state.token_policy.role_claim
        held = ", ".join(sorted(principal.roles)) or "no EverReach role"
        raise ApiError(403, f"forbidden: this needs the {role} role (or admin); the token's {claim!r} claim "
                            f"grants {held}", required_role=str(role))
    return principal


def issue_token(secret: str, sub: str, *, roles: Iterable[str], role_claim: str = "role",
                audience: str | None = None, ttl_seconds: int = 3600) -> str:
    """A token for ``sub`` holding ``roles`` at ``role_claim`` (the CLI's ``token`` command, tests and the
    demo use it). One role is a string, several a list."""
    now = int(time.time())
    names = list(roles)
    claims: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + ttl_seconds}
    if audience:
        claims["aud"] = audience
    *parents, leaf = role_claim.split(".")
    node = claims
    for step in parents:
        node = node.setdefault(step, {})
    node[leaf] = names[0] if len(names) == 1 else names
    return jwt.encode(claims, secret, algorithm="HS256")
