"""Who may call what: every bad credential kind on every ``/api/v1`` route is refused and changes nothing;
roles come from the configured claim and fail closed; the audience, ``iat``/``nbf`` and the secret's length
are checked."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid

import httpx
import jwt
import pytest

from everreach_data.config import PROJECT_ROOT
from everreach_data.receiver.app import create_app
from everreach_data.receiver.auth import MIN_SECRET_BYTES, issue_token
from everreach_sandbox.defaults import SANDBOX_DEFAULTS
from tests.servers import serve
from tests.tokens import SECRET, bearer

from .conftest import api_operations, row_counts

API = "/api/v1/integrations"
BODIES = {
    f"{API}/messenger/send": {"recipient_id": "1234567890", "text": "hi"},
    f"{API}/whatsapp/send": {"to": "12177996721", "type": "template",
                             "template": {"name": "hello_world", "language": {"code": "en_US"}}},
    f"{API}/meta/conversions": {"event_name": "Lead", "action_source": "system_generated",
                                "email": "a@example.com"},
}


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(**extra) -> dict:
    now = int(time.time())
    return {"sub": "mallory", "role": "admin", "iat": now, "exp": now + 3600, **extra}


#: Every way a credential can be wrong, and the answer it gets.
BAD_CREDENTIALS = {
    "none": ({}, 401, "missing bearer token"),
    "garbled": ({"Authorization": "Bearer eyJhbGciOi.not-a-jwt"}, 401, "invalid token"),
    "not bearer": ({"Authorization": "Basic YWRtaW46YWRtaW4="}, 401, "missing bearer token"),
    "expired": ({"Authorization": "Bearer " + jwt.encode(_claims(iat=int(time.time()) - 7200,
                                                                exp=int(time.time()) - 1), SECRET)},
                401, "token expired"),
    "alg none": ({"Authorization": f"Bearer {_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims())}."},
                 401, "invalid token"),
    "wrong secret": ({"Authorization": "Bearer " + jwt.encode(_claims(), "x" * MIN_SECRET_BYTES + "-not-ours")},
                     401, "invalid token"),
    "wrong role": ({"Authorization": "Bearer " + jwt.encode(_claims(role="authenticated"), SECRET)},
                   403, "forbidden: this needs the"),
}


def request(client: httpx.Client, base: str, method: str, path: str, headers: dict) -> httpx.Response:
    url = base + path.replace("{job_id}", str(uuid.uuid4()))
    return client.request(method, url, json=BODIES.get(path), headers=headers)


def test_every_bad_credential_on_every_api_route_is_refused_and_changes_nothing(receiver, document, db):
    operations = api_operations(document)
    assert {path for _, path, _ in operations} == {*BODIES, f"{API}/messages/{{job_id}}", f"{API}/meta/ads-insights"}
    before = row_counts(db)
    with httpx.Client(timeout=30) as client:
        for kind, (headers, status, says) in BAD_CREDENTIALS.items():
            for method, path, op in operations:
                response = request(client, receiver, method, path, headers)
                assert response.status_code == status, (kind, path, response.text)
                error = response.json()["error"]
                assert response.json()["success"] is False and error["message"].startswith(says), (kind, path)
                if status == 401:
                    assert response.headers["www-authenticate"].startswith("Bearer")
                else:
                    assert error["required_role"] == op["x-required-role"]
    assert row_counts(db) == before


ROLE_MATRIX = {  # role held → the routes it may call (every other /api/v1 route is a 403 naming the role)
    "operator": {f"{API}/messenger/send", f"{API}/whatsapp/send", f"{API}/messages/{{job_id}}"},
    "analyst": {f"{API}/meta/ads-insights", f"{API}/meta/conversions"},
    "admin": {*BODIES, f"{API}/messages/{{job_id}}", f"{API}/meta/ads-insights"},
}


def test_roles_grant_exactly_their_routes_and_fail_closed(receiver, document):
    with httpx.Client(timeout=30) as client:
        for role, allowed in {**ROLE_MATRIX, "authenticated": set(), "anon": set()}.items():
            for method, path, op in api_operations(document):
                response = request(client, receiver, method, path, bearer(role, sub=f"{role}-1"))
                if path in allowed:
                    assert response.status_code not in (401, 403), (role, path, response.text)
                else:
                    assert response.status_code == 403, (role, path, response.text)
                    assert response.json()["error"]["required_role"] == op["x-required-role"]
                    assert op["x-required-role"] in response.json()["error"]["message"]


def test_supabase_service_key_holds_every_role_and_sees_every_job(receiver):
    """Supabase's service_role key has no ``sub``: it is recorded as service_role."""
    now = int(time.time())
    service = {"Authorization": "Bearer " + jwt.encode(
        {"iss": "supabase", "ref": "abc", "role": "service_role", "iat": now, "exp": now + 600}, SECRET)}
    queued = httpx.post(f"{receiver}{API}/whatsapp/send", json=BODIES[f"{API}/whatsapp/send"],
                        headers=bearer("operator", sub="agent-9"))
    assert queued.status_code == 202, queued.text
    job = f"{receiver}{API}/messages/{queued.json()['job_id']}"
    assert httpx.get(job, headers=service).status_code == 200
    assert httpx.get(job, headers=bearer("admin", sub="boss")).status_code == 200
    assert httpx.get(job, headers=bearer("operator", sub="agent-2")).status_code == 404  # another operator's
    mine = httpx.post(f"{receiver}{API}/whatsapp/send", json=BODIES[f"{API}/whatsapp/send"], headers=service)
    assert mine.status_code == 202
    assert httpx.get(f"{receiver}/api/v1/integrations/meta/ads-insights", headers=service).status_code == 200


def test_roles_from_a_nested_claim_path(settings, db_url):
    app = create_app(settings.model_copy(update={"JWT_ROLE_CLAIM": "app_metadata.everreach_role"}), db_url)
    insights = f"{API}/meta/ads-insights"
    now = int(time.time())

    def token(**claims) -> dict:
        return {"Authorization": "Bearer " + jwt.encode({"sub": "u", "iat": now, "exp": now + 60, **claims}, SECRET)}

    with serve(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        assert client.get(insights, headers=token(app_metadata={"everreach_role": "analyst"})).status_code == 200
        assert client.get(insights, headers=token(app_metadata={"everreach_role": ["operator", "analyst"]})
                          ).status_code == 200
        top_level_only = client.get(insights, headers=token(role="admin"))  # not where the roles are read
        assert top_level_only.status_code == 403 and "app_metadata.everreach_role" in top_level_only.text
        assert client.get(insights, headers=token(app_metadata={"everreach_role": "operator"})).status_code == 403
        issued = issue_token(SECRET, "u", roles=["analyst"], role_claim="app_metadata.everreach_role")
        assert client.get(insights, headers={"Authorization": f"Bearer {issued}"}).status_code == 200


def test_audience_iat_and_nbf(settings, db_url):
    app = create_app(settings.model_copy(update={"JWT_AUDIENCE": "authenticated"}), db_url)
    insights = f"{API}/meta/ads-insights"
    now = int(time.time())

    def status(**claims) -> tuple[int, str]:
        token = jwt.encode({"sub": "u", "role": "analyst", "iat": now, "exp": now + 600, **claims}, SECRET)
        response = client.get(insights, headers={"Authorization": f"Bearer {token}"})
        return response.status_code, response.json().get("error", {}).get("message", "")

    with serve(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        assert status(aud="authenticated") == (200, "")
        assert status()[0] == 401 and "aud" in status()[1]
        assert status(aud="anon")[0] == 401
        assert status(aud="authenticated", iat=now + 10) == (200, "")        # an issuer's clock a little ahead
        assert status(aud="authenticated", iat=now + 600)[0] == 401          # issued in the future
        assert status(aud="authenticated", nbf=now + 10) == (200, "")
        code, message = status(aud="authenticated", nbf=now + 600)
        assert code == 401 and "not yet valid" in message
        assert status(aud="authenticated", exp=now - 1) == (401, "token expired")  # exp has no leeway


def test_a_short_secret_is_refused_at_start_up(settings):
    short = settings.model_copy(update={"JWT_SECRET": "s" * (MIN_SECRET_BYTES - 1)})
    with pytest.raises(ValueError, match=f"shorter than {MIN_SECRET_BYTES} bytes"):
        create_app(short, "postgresql://unused")


def test_cli_token_carries_the_roles_and_the_receiver_honours_them(receiver):
    env = {**{k: v for k, v in os.environ.items() if k not in SANDBOX_DEFAULTS}, **SANDBOX_DEFAULTS}
    result = subprocess.run([sys.executable, "-m", "everreach_data.cli", "token", "--sub", "ops-1", "--role",
                             "operator"], env=env, capture_output=True, text=True, timeout=60, cwd=PROJECT_ROOT)
    assert result.returncode == 0, result.stderr
    headers = {"Authorization": f"Bearer {result.stdout.strip()}"}
    assert httpx.post(f"{receiver}{API}/whatsapp/send", json=BODIES[f"{API}/whatsapp/send"],
                      headers=headers).status_code == 202
    assert httpx.get(f"{receiver}{API}/meta/ads-insights", headers=headers).status_code == 403
    short = subprocess.run([sys.executable, "-m", "everreach_data.cli", "token", "--sub", "x", "--role", "admin"],
                           env={**env, "JWT_SECRET": "short"}, capture_output=True, text=True, timeout=60,
                           cwd=PROJECT_ROOT)
    assert short.returncode != 0 and "shorter than" in short.stderr and "Traceback" not in short.stderr
