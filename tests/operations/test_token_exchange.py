"""`everreach-data token exchange`: a short-lived user token becomes a long-lived one and the Page tokens it
derives, printed as the export lines to put in the environment; no token is ever logged. `token --sub`
still prints a JWT."""

from __future__ import annotations

import io
import logging
import re

import httpx
import jwt
import pytest

from everreach_data import cli
from everreach_sandbox.defaults import SANDBOX_DEFAULTS
from everreach_sandbox.server import SANDBOX_USER_TOKEN


@pytest.fixture
def meta_env(monkeypatch, sandbox):
    for name, value in SANDBOX_DEFAULTS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("META_GRAPH_URL", sandbox)
    return sandbox


def test_exchange_prints_the_page_tokens_to_export_and_logs_no_token(meta_env, monkeypatch, capsys, caplog):
    monkeypatch.setattr("sys.stdin", io.StringIO(SANDBOX_USER_TOKEN + "\n"))
    monkeypatch.setattr(logging.getLogger("httpx"), "level", logging.NOTSET)  # an earlier command may have set it
    with caplog.at_level(logging.DEBUG):
        assert cli.main(["-v", "token", "exchange"]) == 0
    out = capsys.readouterr()
    exports = dict(re.findall(r"^export (\w+)=(\S+)$", out.out, re.M))
    assert exports["MESSENGER_PAGE_ID"] == SANDBOX_DEFAULTS["MESSENGER_PAGE_ID"]
    assert exports["INSTAGRAM_USER_ID"] == SANDBOX_DEFAULTS["INSTAGRAM_USER_ID"]
    page_token = exports["MESSENGER_PAGE_TOKEN"]
    assert exports["INSTAGRAM_PAGE_TOKEN"] == page_token and page_token != SANDBOX_USER_TOKEN
    assert "never expires" in out.out and "pages_messaging" in out.out
    long_lived = re.search(r"^# (sandbox-long-lived-user-\w+)$", out.out, re.M).group(1)
    # The printed Page token works, and does not expire (it was derived from a long-lived user token).
    debug = httpx.get(f"{meta_env}/v24.0/debug_token", params={
        "input_token": page_token, "access_token": f"{SANDBOX_DEFAULTS['META_APP_ID']}|sandbox-app-secret"}).json()
    assert debug["data"]["is_valid"] and debug["data"]["expires_at"] == 0 and debug["data"]["type"] == "PAGE"
    logged = caplog.text + out.err
    assert not any(t in logged for t in (SANDBOX_USER_TOKEN, long_lived, page_token, "sandbox-app-secret"))
    assert SANDBOX_USER_TOKEN not in out.out
    assert "HTTP Request: POST" in caplog.text   # httpx did log, just not the URLs that hold tokens


def test_exchange_reads_the_token_from_a_named_variable_and_says_what_meta_refused(meta_env, monkeypatch, capsys):
    monkeypatch.setenv("FB_LOGIN_TOKEN", "not-a-token")
    with pytest.raises(SystemExit) as info:
        cli.main(["token", "exchange", "--user-token-env", "FB_LOGIN_TOKEN"])
    refused = str(info.value)
    assert "error: Meta refused" in refused and "Invalid OAuth access token" in refused
    assert "not-a-token" not in refused + capsys.readouterr().err
    monkeypatch.delenv("META_APP_ID")
    with pytest.raises(SystemExit) as info:
        cli.main(["token", "exchange", "--user-token-env", "FB_LOGIN_TOKEN"])
    assert "META_APP_ID and META_APP_SECRET must be set" in str(info.value)


def test_token_sub_still_prints_a_jwt(meta_env, capsys):
    assert cli.main(["token", "--sub", "agent-7", "--role", "operator", "--ttl", "60"]) == 0
    claims = jwt.decode(capsys.readouterr().out.strip(), SANDBOX_DEFAULTS["JWT_SECRET"], algorithms=["HS256"],
                        options={"verify_aud": False})
    assert claims["sub"] == "agent-7"
    for incomplete in (["token"], ["token", "--sub", "agent-7"]):
        with pytest.raises(SystemExit) as info:
            cli.main(incomplete)
        assert "token needs --sub USER_ID --role ROLE" in str(info.value)
