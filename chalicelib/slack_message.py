"""Build Slack Block Kit alerts. Pure: no I/O.

Every string that came from an event (user names, user agents, ARNs, tags, reasons that quote
them) is escaped for mrkdwn and cut to Block Kit's limits, so a creator cannot inject
`<!channel>`, links or mentions into the security team's channel.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import quote

from chalicelib.constants import (
    ACTION_APPROVE_PREFIX,
    ACTION_KEEP_QUARANTINED,
    ALERT,
    APPROVE,
    APPROVE_BUTTON_DAYS,
    CRITICAL,
    HIGH,
    MONITOR,
    QUARANTINE,
)
from chalicelib.events import IamEvent
from chalicelib.iam import ActionResult
from chalicelib.policy import Decision
from chalicelib.selfguard import role_change, target

HEADER_MAX: Final = 150
SECTION_MAX: Final = 3000
FIELD_MAX: Final = 2000
FIELDS_MAX: Final = 10
BUTTON_TEXT_MAX: Final = 75
BUTTON_VALUE_MAX: Final = 2000
FALLBACK_MAX: Final = 3000
BLOCKS_MAX: Final = 50
CONSOLE: Final = "https://us-east-1.console.aws.amazon.com"
DECISION_BLOCK_ID: Final = "guardrail_decision"

_SEVERITY_MARK = {CRITICAL: ":rotating_light:", HIGH: ":warning:"}
_TITLES = {
    QUARANTINE: "IAM user quarantined",
    ALERT: "IAM credential undone",
    APPROVE: "IAM change approved",
}


def escape(text: str) -> str:
    """Escape the three characters Slack treats as control sequences in mrkdwn."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    """Cut `text` to `limit` characters with an ellipsis, never inside an `&...;` entity."""
    if len(text) <= limit:
        return text
    cut = text[: max(limit - 1, 0)]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


def safe(text: str, limit: int) -> str:
    """Escape, then clip: the form every event-supplied string takes in a message."""
    return clip(escape(text), limit)


def plain(text: str, limit: int) -> str:
    """Plain-text fields are not parsed for mentions, but drop control characters anyway."""
    cleaned = "".join(ch for ch in text if ch not in "<>&" and (ch.isprintable() or ch == " "))
    return clip(cleaned, limit)


def code(text: str, limit: int) -> str:
    """A value shown in a code span (backticks removed so it cannot break out)."""
    return "`" + safe(text.replace("`", "'"), limit - 2) + "`" if text else "_none_"


def cloudtrail_url(event: IamEvent) -> str:
    return f"{CONSOLE}/cloudtrailv2/home?region=us-east-1#/events/{quote(event.event_id, safe='')}"


def iam_user_url(user_name: str) -> str:
    return f"{CONSOLE}/iam/home#/users/details/{quote(user_name, safe='')}"


def button_value(event: IamEvent) -> str:
    """What a button carries; the approval endpoint re-checks it against the table."""
    value = json.dumps({"a": event.account, "u": event.target_user_name, "e": event.event_id}, separators=(",", ":"))
    return value[:BUTTON_VALUE_MAX]


def build_alert(
    event: IamEvent, decision: Decision, results: Sequence[ActionResult] = (), *, notes: Sequence[str] = ()
) -> dict[str, Any]:
    """The Slack message (`text` fallback and `blocks`) for one decision; `notes` are the guardrail's own text."""
    part = target(event)  # a policy or role of the guardrail's own, not a user
    user = (part[1] or f"(no {part[0]})") if part else event.target_user_name or "(no user)"
    monitor = decision.mode == MONITOR
    title = "Guardrail's own " + part[0] + " changed" if part else _TITLES.get(decision.verdict, "IAM event")
    if monitor and decision.verdict != APPROVE:
        title = f"[monitor] would {decision.verdict}"
    mark = _SEVERITY_MARK.get(decision.severity, ":information_source:")
    header = plain(f"{title}: {user}", HEADER_MAX)
    fields = [
        f"*Who*\n{safe(event.actor.display, FIELD_MAX - 10)}",
        f"*What*\n{safe(event.event_name, 64)} → {code(user, 200)}",
        f"*From*\nIP {code(event.source_ip or 'unknown', 100)}\nUA {code(event.user_agent, 1000)}",
        f"*When*\n{event.event_time.strftime('%Y-%m-%d %H:%M:%S UTC')}",
        f"*Account / region*\n{safe(event.account or 'unknown', 64)} / {safe(event.region or 'unknown', 64)}",
        f"*Decision*\n{decision.verdict} ({decision.severity}, {decision.mode})",
    ]
    if event.access_key_id:
        fields.append(f"*Access key*\n{code(event.access_key_id, 200)}")
    if decision.integration:
        fields.append(f"*Integration*\n{safe(decision.integration, 200)}")
    if part and part[0] == "role":
        fields.append(f"*Change*\n{code(role_change(event), 1500)}")
    if decision.backdoor:
        fields.append("*Pattern*\nkey or password created for another user (backdoor)")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}},
        {
            "type": "section",
            "text": _mrkdwn(clip(f"{mark} *{decision.severity.upper()}* {safe(decision.reason, 2800)}", SECTION_MAX)),
        },
        {"type": "section", "fields": [_mrkdwn(clip(f, FIELD_MAX)) for f in fields[:FIELDS_MAX]]},
    ]
    if results:
        lines = "\n".join(f"• {safe(r.describe(), 300)}" for r in results)
        blocks.append({"type": "section", "text": _mrkdwn(clip(f"*Actions*\n{lines}", SECTION_MAX))})
    elif monitor and decision.steps:
        blocks.append({"type": "section", "text": _mrkdwn("*Actions*\nnone: monitor mode changes nothing in IAM")})
    links = [f"<{cloudtrail_url(event)}|CloudTrail event>"]
    if event.target_user_name:
        links.append(f"<{iam_user_url(event.target_user_name)}|IAM user>")
    links.append(f"event {code(event.event_id, 120)}")
    blocks.append({"type": "context", "elements": [_mrkdwn(" · ".join(links))]})
    blocks += [{"type": "context", "elements": [_mrkdwn(clip(note, SECTION_MAX))]} for note in notes]
    if decision.quarantines and event.target_user_name and not monitor:
        blocks.append(_buttons(event))
    fallback = clip(f"{title}: {escape(user)} ({decision.severity}). {escape(decision.reason)}", FALLBACK_MAX)
    return {"text": fallback, "blocks": blocks[:BLOCKS_MAX]}


def _buttons(event: IamEvent) -> dict[str, Any]:
    value = button_value(event)
    elements = [
        {
            "type": "button",
            "action_id": f"{ACTION_APPROVE_PREFIX}{days}",
            "text": {"type": "plain_text", "text": clip(f"Approve {days} days", BUTTON_TEXT_MAX)},
            "value": value,
            "style": "primary",
        }
        for days in APPROVE_BUTTON_DAYS
    ]
    elements.append(
        {
            "type": "button",
            "action_id": ACTION_KEEP_QUARANTINED,
            "text": {"type": "plain_text", "text": "Keep quarantined"},
            "value": value,
            "style": "danger",
        }
    )
    return {"type": "actions", "block_id": DECISION_BLOCK_ID, "elements": elements}


def notice(title: str, sections: Sequence[str], *, fallback: str = "") -> dict[str, Any]:
    """A plain notice: a header and mrkdwn sections (already escaped by the caller), within limits."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": plain(title, HEADER_MAX)}}
    ]
    blocks += [{"type": "section", "text": _mrkdwn(clip(text, SECTION_MAX))} for text in sections if text]
    return {"text": clip(fallback or "\n".join(sections) or title, FALLBACK_MAX), "blocks": blocks[:BLOCKS_MAX]}


def _mrkdwn(text: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": text}


def render_text(message: dict[str, Any]) -> str:
    """A terminal rendering of a Block Kit message (for the demo and the CLI)."""
    lines: list[str] = []
    for block in message.get("blocks", []):
        kind = block.get("type")
        if kind == "header":
            lines.append(f"== {block['text']['text']} ==")
        elif kind == "section":
            if "text" in block:
                lines.append(block["text"]["text"])
            for field in block.get("fields", []):
                lines.append("  " + field["text"].replace("\n", ": ", 1).replace("\n", " | "))
        elif kind == "context":
            lines.append("  " + " ".join(e.get("text", "") for e in block.get("elements", [])))
        elif kind == "actions":
            labels = " ".join(f"[{e['text']['text']}]" for e in block.get("elements", []))
            lines.append(f"  buttons: {labels}")
    return "\n".join(lines)
