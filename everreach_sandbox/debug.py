"""Sandbox surface: ``GET /{version}/debug_token?input_token=…`` — what Meta says about a token.

Meta's shape: ``{"data": {"app_id", "type", "application", "data_access_expires_at", "expires_at",
"is_valid", "issued_at", "scopes", "user_id" | "profile_id"}}``; an unknown token answers
``{"data": {"error": {"code": 190, "message"}, "is_valid": false, "scopes": []}}`` with HTTP 200, and an
expired one adds ``error`` (190/463) to its usual fields. ``expires_at`` 0 means never.
"""

from __future__ import annotations

import time
from typing import Any

from everreach_sandbox.core import GraphError, GraphRequest, Node, SandboxState, Surface, unit

surface = Surface("debug")
APPLICATION = "EverReach Sandbox"


@surface.populator
def populate(state: SandboxState) -> None:
    state.add(Node("debug_token", "debug_token"))


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
    data: dict[str, Any] = {
        "app_id": info.app_id,
        "type": info.type,
        "application": APPLICATION,
        "data_access_expires_at": expires or int(time.time()) + 90 * 86400,
        "expires_at": expires,
        "is_valid": not info.expired,
        "issued_at": issued,
        "scopes": list(info.scopes),
        "granular_scopes": [{"scope": s} for s in info.scopes],
    }
    if info.type == "PAGE" and info.profile_id:
        data["profile_id"] = info.profile_id
    if info.type != "APP":
        data["user_id"] = str(10**15 + int(unit(0, "user_id", info.token) * 10**15))
    if info.expired:
        data["error"] = {
            "code": 190,
            "message": "Error validating access token: Session has expired.",
            "subcode": 463,
        }
    return {"data": data}
