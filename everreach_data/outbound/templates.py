"""A WhatsApp template send checked against the catalog (``whatsapp_message_template``) before anything is
queued: the template must exist in that language and be ``APPROVED``, get as many body parameters as its
body takes (by name, for a ``NAMED`` template), and not be an authentication template sent to a user id.

Until the catalog has been synced for the configured WhatsApp Business Account there is nothing to check
against, and the send goes to Meta, which checks it.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from everreach_data.meta.templates import APPROVED, PHONE_ONLY_CATEGORY, body_parameters, given_body_parameters

CATALOG = """
SELECT name, language, status, category, parameter_format, components FROM whatsapp_message_template
WHERE waba_id = %(waba_id)s ORDER BY name, language, status_changed_at DESC NULLS LAST
"""


class TemplateRefused(ValueError):
    """The template cannot be sent as asked; ``field`` names what to fix, ``approved`` what can be sent."""

    def __init__(self, message: str, field: str, approved: list[str]) -> None:
        super().__init__(message)
        self.field = field
        self.approved = approved


async def check_template(conn: psycopg.AsyncConnection, waba_id: str | None, template: dict[str, Any], *,
                         to_user_id: bool) -> None:
    """Raise :class:`TemplateRefused` unless ``template`` (the request's ``{name, language{code},
    components}``) can be sent; ``to_user_id``: the recipient is a business-scoped user id."""
    if not waba_id:
        return
    cur = conn.cursor(row_factory=dict_row)
    rows = await (await cur.execute(CATALOG, {"waba_id": waba_id})).fetchall()
    if not any(r["status"] for r in rows):
        # Never synced: a quality or category webhook names a template without its status, so a catalog built
        # from those alone cannot tell an approved template from one that is not. Meta decides.
        return
    approved = [f"{r['name']} ({r['language']})" for r in rows if r["status"] == APPROVED]
    name, language = template["name"], template["language"]["code"]
    found = next((r for r in rows if r["name"] == name and r["language"] == language), None)
    if found is None or found["status"] not in (APPROVED, None):  # None: heard of since the last sync
        state = "is not in the template catalog" if found is None else f"is {found['status'] or 'not approved'}"
        raise TemplateRefused(f"template {name} ({language}) {state}: only approved templates can be sent; "
                              f"approved: {', '.join(approved) or 'none'}", "template.name", approved)
    if found["components"] is not None:
        needed = body_parameters(found["components"])
        given = given_body_parameters(template.get("components"))
        placeholders = ", ".join("{{" + n + "}}" for n in needed)
        if len(given) != len(needed):
            raise TemplateRefused(
                f"template {name} ({language}) takes {len(needed)} body parameter"
                f"{'' if len(needed) == 1 else 's'}{f' ({placeholders})' if needed else ''}, not {len(given)}",
                "template.components", approved)
        names = {p.get("parameter_name") for p in given}
        if found["parameter_format"] == "NAMED" and names != set(needed):
            raise TemplateRefused(f"template {name} ({language}) takes named body parameters {placeholders}: "
                                  "give each as parameter_name", "template.components", approved)
    if to_user_id and found["category"] == PHONE_ONLY_CATEGORY:
        raise TemplateRefused(f"template {name} is an authentication template: Meta sends those to a phone "
                              "number only, not to a business-scoped user id", "to", approved)
