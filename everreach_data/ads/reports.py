"""The breakdown reports: named, each a level, breakdowns, optional action breakdowns and metric fields.

Four are built in (:data:`DEFAULT_REPORTS`). ``ADS_BREAKDOWN_REPORTS`` names a TOML file that replaces
them, one table per report::

    [age_gender]
    level = "campaign"
    breakdowns = ["age", "gender"]

    [placement_by_ad]
    level = "ad"
    breakdowns = ["publisher_platform", "platform_position"]
    fields = ["spend", "impressions", "clicks", "actions", "action_values"]   # default: ad_performance's

Every report is a daily-partitioned asset ``ad_performance_breakdown/<name>`` writing its rows into the
one long table ``ad_performance_breakdown`` (column ``report`` = the name).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from everreach_data.meta.insights import LEVELS, METRIC_FIELDS, ReportShape

NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


@dataclass(frozen=True)
class BreakdownReport:
    name: str
    level: str
    breakdowns: tuple[str, ...]
    action_breakdowns: tuple[str, ...] = ()
    fields: tuple[str, ...] = METRIC_FIELDS

    @property
    def shape(self) -> ReportShape:
        return ReportShape(metrics=self.fields, breakdowns=self.breakdowns,
                           action_breakdowns=self.action_breakdowns)

    def describe(self) -> str:
        extra = f", action breakdowns {', '.join(self.action_breakdowns)}" if self.action_breakdowns else ""
        return f"{self.level} level by {', '.join(self.breakdowns)}{extra}"


DEFAULT_REPORTS: tuple[BreakdownReport, ...] = (
    BreakdownReport("age_gender", "campaign", ("age", "gender")),
    BreakdownReport("country", "campaign", ("country",)),
    BreakdownReport("placement", "campaign", ("publisher_platform", "platform_position")),
    BreakdownReport("device", "campaign", ("device_platform",)),
)


def _strings(where: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"{where} must be a list of names, got {value!r}")
    return tuple(v.strip() for v in value)


def parse_reports(table: dict[str, Any], source: str = "ADS_BREAKDOWN_REPORTS") -> tuple[BreakdownReport, ...]:
    """The reports of a parsed TOML document; ``ValueError`` names the report and key that are wrong."""
    reports = []
    for name, spec in table.items():
        where = f"{source}: report [{name}]"
        if not NAME.match(name):
            raise ValueError(f"{where}: a name is lower-case letters, digits and _ (at most 40)")
        if not isinstance(spec, dict):
            raise ValueError(f"{where} must be a table with level and breakdowns")
        unknown = sorted(set(spec) - {"level", "breakdowns", "action_breakdowns", "fields"})
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}")
        level = spec.get("level", "campaign")
        if level not in LEVELS:
            raise ValueError(f"{where}: level must be one of {', '.join(LEVELS)}, got {level!r}")
        if "breakdowns" not in spec:
            raise ValueError(f"{where}: breakdowns is required (a report without them is ad_performance)")
        fields = _strings(f"{where}: fields", spec["fields"]) if "fields" in spec else METRIC_FIELDS
        if "spend" not in fields:
            raise ValueError(f"{where}: fields must include spend (the check compares it with ad_performance)")
        reports.append(BreakdownReport(
            name, level, _strings(f"{where}: breakdowns", spec["breakdowns"]),
            _strings(f"{where}: action_breakdowns", spec.get("action_breakdowns", [])), fields))
    if not reports:
        raise ValueError(f"{source} defines no report")
    return tuple(reports)


def load_reports(path: str | Path | None) -> tuple[BreakdownReport, ...]:
    """The configured reports (the TOML file at ``path``), or the defaults when no file is set."""
    if not path:
        return DEFAULT_REPORTS
    try:
        table = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"ADS_BREAKDOWN_REPORTS={path}: {exc}") from exc
    return parse_reports(table, f"ADS_BREAKDOWN_REPORTS={path}")
