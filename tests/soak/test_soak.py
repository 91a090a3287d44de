"""The fault soak, short: the whole system (receiver processes, the Dagster daemon's drain and send runs, the
sandbox, the embedded Postgres) under steady webhook and send traffic for 45 s while Postgres restarts (both
ways), a drain run, a send run and a receiver process are killed and the Graph API answers 5xx — and then
nothing acknowledged is lost, no message is stored twice and none is sent twice. ``bench/soak.py`` runs it;
its ten-minute schedule, with the backfills and every kind of Graph fault, is the benchmark."""

from __future__ import annotations

import json
import subprocess
import sys

from everreach_data.config import PROJECT_ROOT


def test_nothing_acknowledged_is_lost_duplicated_or_sent_twice_while_faults_hit():
    run = subprocess.run([sys.executable, str(PROJECT_ROOT / "bench" / "soak.py"), "--schedule", "short",
                          "--seconds", "45", "--settle-seconds", "20"],
                         capture_output=True, text=True, timeout=240, cwd=PROJECT_ROOT)
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    webhooks, messages, sends = result["webhooks"], result["messages"], result["sends"]

    assert webhooks["lost"] == 0 and messages["duplicated"] == 0 and sends["sent_twice"] == 0, result
    # …and that is not because nothing happened: every fault was injected and felt, and the load went through.
    faults = {f["fault"]: f for f in result["faults"]}
    assert set(faults) == {"postgres_restart_immediate", "postgres_restart_fast", "graph_5xx", "drain_run_killed",
                           "send_run_killed", "receiver_process_killed"}, result["faults"]
    assert not [f for f in faults.values() if "not_injected" in f], result["faults"]
    assert faults["drain_run_killed"]["killed_pids"] and faults["send_run_killed"]["killed_pids"]
    assert webhooks["refused_503"] > 0                       # the restarts were felt at the intake, and retried
    assert webhooks["acknowledged"] == webhooks["unique_bodies"] == webhooks["stored"] == webhooks["processed"]
    assert messages["missing"] == 0 and messages["meta_ids_in_acknowledged_bodies"] > 0
    assert sends["sent"] > 0 and sends["sandbox_accepted"] >= sends["sent"] and not sends["refused"]
