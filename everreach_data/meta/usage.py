"""Meta's usage headers, read into one figure: how close to the limit we are and how long to wait.

``x-app-usage`` ``{"call_count", "total_cputime", "total_time"}`` (percent), ``x-ad-account-usage``
``{"acc_id_util_pct", "reset_time_duration"}`` (seconds; a wait once the account is at 100 %) and
``x-business-use-case-usage``
``{"<business id>": [{"type", "call_count", "total_cputime", "total_time",
"estimated_time_to_regain_access"}]}`` (minutes). Headers arrive on errors too and are read there as well.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Usage:
    percent: float = 0.0          # the highest utilisation reported by any header, 0-100
    regain_seconds: float = 0.0   # Meta's estimate of when a blocked caller may call again

def _num(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0


def _load(raw: str | None) -> object:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def parse_usage(headers: Mapping[str, str]) -> Usage:
    """The worst utilisation and longest wait across the three usage headers (absent headers count as 0)."""
    percents: list[float] = []
    regain: list[float] = []
    app = _load(headers.get("x-app-usage"))
    if isinstance(app, dict):
        percents += [_num(app.get(k)) for k in ("call_count", "total_cputime", "total_time")]
    account = _load(headers.get("x-ad-account-usage"))
    if isinstance(account, dict):
        percents.append(_num(account.get("acc_id_util_pct")))
        if _num(account.get("acc_id_util_pct")) >= 100:  # at the limit: the window resets in this many seconds
            regain.append(_num(account.get("reset_time_duration")))
    buc = _load(headers.get("x-business-use-case-usage"))
    if isinstance(buc, dict):
        for entries in buc.values():
            for entry in entries if isinstance(entries, list) else []:
                if isinstance(entry, dict):
                    percents += [_num(entry.get(k)) for k in ("call_count", "total_cputime", "total_time")]
                    regain.append(_num(entry.get("estimated_time_to_regain_access")) * 60.0)
    return Usage(percent=max(percents, default=0.0), regain_seconds=max(regain, default=0.0))
