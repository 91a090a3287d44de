"""Schemathesis hooks (``SCHEMATHESIS_HOOKS=tests.receiver.fuzz_hooks``): sign each generated webhook event
as Meta signs it — HMAC-SHA256 of the exact bytes sent, with the sandbox's app secret — so that fuzzing
reaches the intake's store, not only its signature check."""

from __future__ import annotations

import hashlib
import hmac
import json

import schemathesis
from schemathesis.core import NOT_SET

from everreach_data.inbox.routes import PATH
from everreach_sandbox.defaults import SANDBOX_DEFAULTS

SECRET = SANDBOX_DEFAULTS["META_APP_SECRET"].encode()


@schemathesis.hook
def before_call(context, case, kwargs) -> None:
    if case.path != PATH or case.method.upper() != "POST":
        return
    body = case.body
    raw = b"" if body is NOT_SET else body if isinstance(body, bytes) else json.dumps(body).encode()
    case.body = raw
    case.headers = {**(case.headers or {}), "Content-Type": "application/json",
                    "X-Hub-Signature-256": "sha256=" + hmac.new(SECRET, raw, hashlib.sha256).hexdigest()}
