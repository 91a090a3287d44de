"""Build and run the sandbox: the world from a seed, the configured tokens, every surface."""

from __future__ import annotations

import argparse
import time

from everreach_data.config import SANDBOX_DEFAULTS
from everreach_data.sandbox import capi, marketing, messaging, pages
from everreach_data.sandbox.app import create_sandbox_app
from everreach_data.sandbox.core import SandboxState, TokenInfo

SURFACES = [marketing.surface, pages.surface, messaging.surface, capi.surface]


def default_tokens() -> dict[str, TokenInfo]:
    """The tokens in ``SANDBOX_DEFAULTS``, with the types and scopes Meta would give them."""
    d = SANDBOX_DEFAULTS
    year = time.time() + 365 * 86400
    tokens = [
        TokenInfo(d["MESSENGER_PAGE_TOKEN"], type="PAGE", profile_id=d["MESSENGER_PAGE_ID"], expires_at=year,
                  scopes=("pages_messaging", "pages_read_engagement", "instagram_manage_messages",
                          "instagram_basic", "instagram_manage_insights", "read_insights")),
        TokenInfo(d["WHATSAPP_ACCESS_TOKEN"], scopes=("whatsapp_business_messaging",
                                                      "whatsapp_business_management")),
        TokenInfo(d["FB_ADS_ACCESS_TOKEN"], scopes=("ads_read", "ads_management")),
        TokenInfo(d["META_CONVERSIONS_API_TOKEN"], scopes=("ads_management",)),
    ]
    return {t.token: t for t in tokens}


def build_state(*, seed: int = 42, webhook_url: str | None = None,
                app_secret: str = SANDBOX_DEFAULTS["META_APP_SECRET"]) -> SandboxState:
    return SandboxState(seed=seed, tokens=default_tokens(), webhook_url=webhook_url, app_secret=app_secret)


def build_app(state: SandboxState | None = None):
    return create_sandbox_app(state or build_state(), SURFACES)


def parse_latency(text: str) -> tuple[float, float]:
    lo, _, hi = str(text).partition("-")
    return float(lo), float(hi or lo)


def run_sandbox(args: argparse.Namespace) -> None:
    import uvicorn

    state = build_state(seed=args.seed, webhook_url=args.webhook_url)
    state.faults.latency_ms = parse_latency(args.latency_ms)
    app = build_app(state)
    where = "loopback only" if args.host in ("127.0.0.1", "localhost", "::1") else "ALL interfaces given"
    print(f"Graph API sandbox (a development tool, not Meta) on http://{args.host}:{args.port}/v24.0 "
          f"[{where}], seed {args.seed}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
