"""The runbook's daily message volume counts UTC days, whatever the database server's TimeZone."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from tests.inbox.helpers import process
from tests.inbox.payloads import PAGE, PSID


def _message(mid: str, at: datetime) -> dict:
    ms = int(at.timestamp() * 1000)
    return {"object": "page", "entry": [{"id": PAGE, "time": ms, "messaging": [
        {"sender": {"id": PSID}, "recipient": {"id": PAGE}, "timestamp": ms,
         "message": {"mid": mid, "text": "late evening in London"}}]}]}


def test_message_volume_daily_counts_utc_days_in_a_tokyo_session(db, db_url):
    db.execute(sql.SQL("ALTER DATABASE {} SET timezone = 'Asia/Tokyo'").format(sql.Identifier(db.info.dbname)))
    late = datetime(2025, 10, 1, 23, 30, tzinfo=UTC)   # 2025-10-02 08:30 in Tokyo
    early = datetime(2025, 10, 1, 0, 10, tzinfo=UTC)   # 2025-10-01 09:10 in Tokyo
    process(db_url, _message("m_late", late), _message("m_early", early))
    with psycopg.connect(db_url, row_factory=dict_row) as tokyo:
        assert tokyo.execute("SHOW timezone").fetchone()["TimeZone"] == "Asia/Tokyo"
        rows = tokyo.execute("SELECT date, message_count FROM message_volume_daily "
                             "WHERE platform = 'messenger' AND direction = 'inbound'").fetchall()
    assert [(r["date"].isoformat(), r["message_count"]) for r in rows] == [("2025-10-01", 2)]
