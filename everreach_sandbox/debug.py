"""Sandbox surface: the access-token endpoints.

- ``GET /{version}/debug_token?input_token=…`` — what Meta says about a token: ``{"data": {"app_id", "type",
  "application", "data_access_expires_at", "expires_at", "is_valid", "issued_at", "scopes",
  "user_id" | "profile_id"}}``; an unknown token answers ``{"data": {"error": {"code": 190, "message"},
  "is_valid": false, "scopes": []}}`` with HTTP 200, and an expired one adds ``error`` (190/463) to its usual
  fields. ``expires_at`` 0 means never. Asked with a token that is itself expired, the call fails (190/463),
  as any call does.
- ``GET /{version}/oauth/access_token?grant_type=fb_exchange_token&client_id&client_secret&fb_exchange_token``
  (no access token: the app secret authenticates) — a short-lived user token for a long-lived one (60 days).
- ``GET /{version}/me/accounts`` with a user token — the Pages the user manages, each with a Page token
  derived from it (one derived from a long-lived user token never expires).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from everreach_sandbox.core import GraphError, GraphRequest, Node, SandboxState, Surface, TokenInfo, paged, unit
from everreach_sandbox.defaults import SANDBOX_DEFAULTS

surface = Surface("debug")
APPLICATION = "EverReach Sandbox"
#: The person whose user token the sandbox knows (``sandbox-user-token``, short-lived).
USER_ID = "10150000000000001"
LONG_LIVED_SECONDS = 60 * 86400
PAGE_TASKS = ["ADVERTISE", "ANALYZE", "CREATE_CONTENT", "MESSAGING", "MODERATE", "MANAGE"]
PAGE_SCOPES = ("pages_messaging", "pages_read_engagement", "pages_show_list", "read_insights",
               "instagram_manage_messages", "instagram_basic", "instagram_manage_insights")


@surface.populator
def populate(state: SandboxState) -> None:
    state.add(Node("debug_token", "debug_token"))
    state.add(Node("oauth", "oauth"))
    state.add(Node(USER_ID, "user", {"name": "Sandbox Admin"}))


@surface.route("GET", "debug_token")
async def debug_token(req: GraphRequest) -> dict[str, Any]:
    input_token = req.param("input_token")
    if not input_token:
        raise GraphError(100, "(#100) The parameter input_token is required", type="OAuthException")
    info = req.state.tokens.get(str(input_token))
    if info is None:
        return {
            "data": {
                "error": {"code": 190, "message": "Invalid OAuth access token."},
                "is_valid": False,
                "scopes": [],
            }
        }
    issued = int(req.state.extra.setdefault("debug_issued_at", int(time.time()) - 86400))
    expires = int(info.expires_at) if info.expires_at else 0
    data_access = info.data_access_expires_at or (expires or time.time() + 90 * 86400)
    data: dict[str, Any] = {
        "app_id": info.app_id,
        "type": info.type,
        "application": APPLICATION,
        "data_access_expires_at": int(data_access),
        "expires_at": expires,
        "is_valid": not info.expired,
        "issued_at": issued,
        "scopes": list(info.scopes),
        "granular_scopes": [{"scope": s} for s in info.scopes],
    }
    if info.type == "PAGE" and info.profile_id:
        data["profile_id"] = info.profile_id
    if info.type == "USER" and info.profile_id:
        data["user_id"] = info.profile_id
    elif info.type != "APP":
        data["user_id"] = str(10**15 + int(unit(0, "user_id", info.token) * 10**15))
    if info.expired:
        data["error"] = {
            "code": 190,
            "message": "Error validating access token: Session has expired.",
            "subcode": 463,
        }
    return {"data": data}


def _mint(state: SandboxState, prefix: str, source: str, **fields: Any) -> TokenInfo:
    """A token derived from ``source``, the same every time it is derived, added to what the sandbox accepts."""
    token = TokenInfo(f"{prefix}-{hashlib.blake2s(source.encode(), digest_size=12).hexdigest()}", **fields)
    with state.lock:
        state.tokens[token.token] = token
    return token


@surface.route("GET", "oauth", "access_token", token=False)
async def exchange_token(req: GraphRequest) -> dict[str, Any]:
    if req.param("grant_type") != "fb_exchange_token":
        raise GraphError(100, "(#100) grant_type must be fb_exchange_token", type="OAuthException")
    if str(req.param("client_id") or "") != TokenInfo("").app_id or req.param("client_secret") != req.state.app_secret:
        raise GraphError(101, "Error validating client secret.", type="OAuthException")
    user = req.state.tokens.get(str(req.param("fb_exchange_token") or ""))
    if user is None or user.expired or user.type != "USER":
        raise GraphError(190, "Invalid OAuth access token - Cannot parse access token", type="OAuthException")
    long_lived = _mint(req.state, "sandbox-long-lived-user", user.token, type="USER", scopes=user.scopes,
                       profile_id=user.profile_id, expires_at=time.time() + LONG_LIVED_SECONDS)
    return {"access_token": long_lived.token, "token_type": "bearer", "expires_in": LONG_LIVED_SECONDS - 56}


@surface.route("GET", "user", "accounts")
async def accounts(req: GraphRequest) -> dict[str, Any]:
    user = req.token
    if user.type != "USER":
        raise GraphError(100, "(#100) Tried accessing nonexisting field (accounts) on node type (Page)")
    long_lived = user.expires_at is not None and user.expires_at - time.time() > 86400
    page_id = SANDBOX_DEFAULTS["MESSENGER_PAGE_ID"]
    page = _mint(req.state, "sandbox-derived-page", f"{page_id}:{user.token}", type="PAGE", profile_id=page_id,
                 scopes=tuple(s for s in user.scopes if s in PAGE_SCOPES),
                 expires_at=None if long_lived else user.expires_at)
    node = req.state.nodes.get(page_id)
    items = [{"access_token": page.token, "category": (node.data if node else {}).get("category", "Software"),
              "name": (node.data if node else {}).get("name", "EverReach Sandbox Page"), "id": page_id,
              "tasks": PAGE_TASKS, "instagram_business_account": {"id": SANDBOX_DEFAULTS["INSTAGRAM_USER_ID"]}}]
    return paged(req, items)
