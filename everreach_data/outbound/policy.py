"""Meta's messaging windows as one decision, made when a send is requested (and re-checked at send time).

Messenger / Instagram: inside 24 h of the user's last message a plain ``RESPONSE``; from 24 h to 7 days
only a human agent may reply, tagged ``MESSAGE_TAG`` + ``HUMAN_AGENT``; beyond that nothing. The tags Meta
retired (``ACCOUNT_UPDATE``, ``CONFIRMED_EVENT_UPDATE``, ``POST_PURCHASE_UPDATE``) are refused up front
instead of failing at Meta. WhatsApp: free-form inside 24 h, templates at any time.

Bots are never tagged ``HUMAN_AGENT`` (a peer project's policy violation): the caller must say the message
was written by a person (``human_agent: true``), and inside 24 h no tag is used at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from everreach_data.meta.messaging import HUMAN_AGENT, RETIRED_TAGS


class PolicyViolation(Exception):
    """The send is not allowed now; ``str()`` says why and what to do instead."""

    def __init__(self, message: str, *, field: str | None = None,
                 window_closed_at: datetime | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.window_closed_at = window_closed_at


@dataclass(frozen=True)
class Windows:
    """The thread's windows as ``messaging_policy_window`` holds them (None: never opened)."""

    standard_expires_at: datetime | None = None
    human_agent_expires_at: datetime | None = None


@dataclass(frozen=True)
class Decision:
    messaging_type: str | None   # RESPONSE | MESSAGE_TAG (Messenger/Instagram); None for WhatsApp
    tag: str | None
    window_rule: str             # standard | human_agent | none (re-checked just before sending)

    @property
    def used_message_tag(self) -> bool:
        return self.tag is not None


def _when(ts: datetime | None) -> str:
    return ts.isoformat(timespec="seconds") if ts else "never (no message from this user yet)"


def decide_messenger(windows: Windows, now: datetime, *, human_agent: bool, tag: str | None) -> Decision:
    if tag in RETIRED_TAGS:
        raise PolicyViolation(f"tag {tag} was retired by Meta on 2026-04-27 and now fails with "
                              "'(#100) Invalid parameter'; reply inside 24 h, or as a human agent within 7 days",
                              field="tag")
    if tag is not None and tag != HUMAN_AGENT:
        raise PolicyViolation(f"unsupported tag {tag!r}: only HUMAN_AGENT is allowed", field="tag")
    if tag == HUMAN_AGENT and not human_agent:
        raise PolicyViolation("HUMAN_AGENT may only tag messages written by a person: set human_agent: true "
                              "when a human agent is sending", field="human_agent")
    std, human = windows.standard_expires_at, windows.human_agent_expires_at
    if std is not None and std > now:
        return Decision("RESPONSE", None, "standard")
    if human is not None and human > now:
        if human_agent:
            return Decision("MESSAGE_TAG", HUMAN_AGENT, "human_agent")
        raise PolicyViolation(
            f"the 24-hour messaging window closed at {_when(std)}; until {_when(human)} only a human agent may "
            "reply (send with human_agent: true to use the HUMAN_AGENT tag)", window_closed_at=std)
    raise PolicyViolation(
        f"outside the messaging window: the 24-hour window closed at {_when(std)} and the 7-day human-agent "
        f"window at {_when(human)}; wait for the user to write again", window_closed_at=human or std)


def decide_whatsapp(windows: Windows, now: datetime, *, is_template: bool) -> Decision:
    if is_template:
        return Decision(None, None, "none")
    std = windows.standard_expires_at
    if std is not None and std > now:
        return Decision(None, None, "standard")
    raise PolicyViolation(
        f"outside the 24-hour customer service window (closed at {_when(std)}): WhatsApp only accepts an "
        "approved template now — send type 'template' with template {name, language {code}}",
        field="type", window_closed_at=std)
