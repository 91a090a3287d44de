"""Schemathesis against the document the receiver serves: every operation with a token that may call it,
the document's own examples, then its coverage cases and generated inputs (valid and not), and the stateful
phase following the document's links (a send's job_id to its status). Each answer must not be a server
error and must match the document: its status, content type, headers and schema. Meta's webhooks are
signed as Meta signs them (:mod:`.fuzz_hooks`), so generated events reach the intake's store too.

Bounded to fit the suite (:data:`EXAMPLES` per operation, a fixed seed). The same command runs longer by
hand: see the README's "The API as a contract"."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from everreach_data.config import PROJECT_ROOT
from tests.tokens import token

CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance")
#: Generated cases per operation and phase in the suite (a few thousand in all is a run by hand).
EXAMPLES = 40
SEED = "20251023"
SCHEMATHESIS = str(Path(sys.executable).with_name("st"))


def fuzz(base_url: str, workdir: Path, *, examples: int, seed: str | None = SEED,
         timeout: float = 240) -> subprocess.CompletedProcess:
    """``st run`` over the served document, as a person would run it (its cache goes in ``workdir``)."""
    command = [SCHEMATHESIS, "run", f"{base_url}/openapi.json", "-H",
               f"Authorization: Bearer {token('admin', sub='fuzzer', ttl=3600)}", "--checks", ",".join(CHECKS),
               "--max-examples", str(examples), "--workers", "1", "--generation-database", "none", "--no-color"]
    command += ["--seed", seed] if seed else []
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.receiver.fuzz_hooks", "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=workdir)


def test_every_operation_answers_as_documented(receiver, tmp_path):
    result = fuzz(receiver, tmp_path, examples=EXAMPLES)
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-6000:]
    assert "8 selected / 8 total" in report and "Tested: 8" in report, report[-3000:]
    cases = re.search(r"(\d+) generated, (\d+) passed", report)
    assert cases and cases[1] == cases[2] and int(cases[1]) > 500, report[-3000:]
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in report, (phase, report[-3000:])
