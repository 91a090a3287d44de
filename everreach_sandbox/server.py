"""Build and run the sandbox: the world from a seed, the configured tokens, every surface."""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import contextmanager

from everreach_data import serving
from everreach_data.meta import tokens
from everreach_sandbox import capi, debug, marketing, messaging, pages
from everreach_sandbox.core import Limits, SandboxState, TokenInfo
from everreach_sandbox.defaults import SANDBOX_DEFAULTS

SURFACES = [marketing.surface, pages.surface, messaging.surface, capi.surface, debug.surface]
APP_ID = TokenInfo("").app_id
SANDBOX_USER_TOKEN = "sandbox-user-token"


def app_token(app_secret: str = SANDBOX_DEFAULTS["META_APP_SECRET"]) -> str:
    """The sandbox app's access token, which ``/debug_token`` takes."""
    return tokens.app_token(APP_ID, app_secret)


def default_tokens(app_secret: str = SANDBOX_DEFAULTS["META_APP_SECRET"]) -> dict[str, TokenInfo]:
    """The tokens in ``SANDBOX_DEFAULTS``, with the types and scopes Meta would give them."""
    d = SANDBOX_DEFAULTS
    sixty_days = time.time() + 60 * 86400  # a long-lived page token lasts 60 days
    tokens = [
        TokenInfo(
            d["MESSENGER_PAGE_TOKEN"],
            type="PAGE",
            profile_id=d["MESSENGER_PAGE_ID"],
            expires_at=sixty_days,
            scopes=(
                "pages_messaging",
                "pages_read_engagement",
                "pages_show_list",
                "read_insights",
                "instagram_manage_messages",
                "instagram_basic",
                "instagram_manage_insights",
            ),
        ),
        TokenInfo(
            d["WHATSAPP_ACCESS_TOKEN"], scopes=("whatsapp_business_messaging", "whatsapp_business_management")
        ),
        TokenInfo(d["FB_ADS_ACCESS_TOKEN"], scopes=("ads_read", "ads_management")),
        TokenInfo(d["META_CONVERSIONS_API_TOKEN"], scopes=("ads_management",)),
        TokenInfo(app_token(app_secret), type="APP"),
        # A person's Facebook Login token: short-lived, for `everreach-data token exchange` to exchange.
        TokenInfo(SANDBOX_USER_TOKEN, type="USER", profile_id=debug.USER_ID, expires_at=time.time() + 3600,
                  scopes=(*debug.PAGE_SCOPES, "pages_manage_metadata")),
    ]
    return {t.token: t for t in tokens}


def build_state(
    *,
    seed: int = 42,
    webhook_url: str | None = None,
    app_secret: str = SANDBOX_DEFAULTS["META_APP_SECRET"],
    limits: Limits | None = None,
) -> SandboxState:
    return SandboxState(
        seed=seed,
        tokens=default_tokens(app_secret),
        webhook_url=webhook_url,
        app_secret=app_secret,
        limits=limits or Limits(),
    )


def build_app(state: SandboxState | None = None):
    from everreach_sandbox.app import create_sandbox_app

    return create_sandbox_app(state or build_state(), SURFACES)


def parse_latency(text: str) -> tuple[float, float]:
    lo, _, hi = str(text).partition("-")
    return float(lo), float(hi or lo)


def banner(host: str, port: int, seed: int) -> str:
    where = "loopback only" if host in ("127.0.0.1", "localhost", "::1") else "ALL interfaces given"
    return (
        f"Graph API sandbox (a development tool, not Meta) on http://{host}:{port}/v24.0 "
        f"[{where}], seed {seed}"
    )


def run_sandbox(args: argparse.Namespace) -> None:
    import uvicorn

    state = build_state(seed=args.seed, webhook_url=args.webhook_url)
    state.faults.latency_ms = parse_latency(args.latency_ms)
    state.faults.error_rate = float(getattr(args, "error_rate", 0.0) or 0.0)
    state.faults.drop_rate = float(getattr(args, "drop_rate", 0.0) or 0.0)
    app = build_app(state)
    print(banner(args.host, args.port, args.seed), flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


@contextmanager
def serve_in_background(
    state: SandboxState | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> Iterator[str]:
    """The sandbox in a thread of this process (for ``demo`` and benchmarks); yields its base URL."""
    with serving.serve_in_background(build_app(state), host=host, port=port, lifespan="off",
                                     name="Graph API sandbox") as url:
        yield url
