"""WhatsApp message templates as Meta lists them (``GET /{WABA_ID}/message_templates``), and what a
template's body asks of a send: its parameters, ``{{1}}``, ``{{2}}``… (``POSITIONAL``) or ``{{first_name}}``…
(``NAMED``). The template webhooks are parsed with the others, in :mod:`.webhooks`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from everreach_data.meta.client import GraphClient

#: The only status Meta sends templates in.
APPROVED = "APPROVED"
#: Meta refuses authentication templates to a business-scoped user id: they need a phone number.
PHONE_ONLY_CATEGORY = "AUTHENTICATION"
LIST_FIELDS = ("id,name,language,status,category,previous_category,quality_score,parameter_format,components,"
               "rejected_reason")
PAGE_SIZE = 100
_PARAMETER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")


@dataclass(frozen=True)
class Template:
    template_id: str
    name: str
    language: str
    status: str | None
    category: str | None
    components: list[dict[str, Any]]
    parameter_format: str | None = None
    quality_score: str | None = None
    previous_category: str | None = None
    rejected_reason: str | None = None

    @classmethod
    def from_listing(cls, item: dict[str, Any]) -> Template:
        quality = item.get("quality_score")
        components = item.get("components")
        return cls(template_id=str(item["id"]), name=str(item["name"]), language=str(item["language"]),
                   status=item.get("status"), category=item.get("category"),
                   components=components if isinstance(components, list) else [],
                   parameter_format=item.get("parameter_format"),
                   quality_score=quality.get("score") if isinstance(quality, dict) else quality,
                   previous_category=item.get("previous_category"), rejected_reason=item.get("rejected_reason"))


def list_templates(client: GraphClient, waba_id: str, *, page_size: int = PAGE_SIZE) -> Iterator[Template]:
    """Every template of the WhatsApp Business Account, across pages."""
    for item in client.paginate(f"{waba_id}/message_templates", {"fields": LIST_FIELDS, "limit": page_size}):
        yield Template.from_listing(item)


def body_parameters(components: list[dict[str, Any]] | None) -> tuple[str, ...]:
    """The parameters the template's body takes, in order of first use: ``("1", "2")`` or ``("first_name",)``."""
    names: list[str] = []
    for component in components or ():
        if str(component.get("type", "")).upper() == "BODY":
            for name in _PARAMETER.findall(str(component.get("text") or "")):
                if name not in names:
                    names.append(name)
    return tuple(names)


def given_body_parameters(components: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The body parameters a send request gives (its ``template.components`` of type body)."""
    return [p for c in components or () if str(c.get("type", "")).lower() == "body"
            for p in c.get("parameters") or () if isinstance(p, dict)]


def body_component(positional: list[str], named: dict[str, str]) -> dict[str, Any]:
    """A send's body component with these text values: ``{{1}}``… in order, or ``{{name}}`` by name."""
    return {"type": "body", "parameters": [{"type": "text", "text": v} for v in positional]
            + [{"type": "text", "parameter_name": k, "text": v} for k, v in named.items()]}
