"""Build Slack Block Kit alerts. Pure: no I/O.

Every string that came from an event (user names, user agents, ARNs, tags, reasons that quote
them) is made harmless before it reaches the security team's channel:

- `&`, `<` and `>` are escaped, so nobody can write `<!channel>`, `<@U…>` or `<https://…|…>`;
- control, format (bidi) and line-separator characters are shown as `\\u…` escapes, so a value
  stays on its line and reads the way it is stored;
- every mrkdwn text object is `verbatim: true`, so Slack does not turn a domain, an email,
  `@here` or `#channel` in a name into a live link or mention;
- names (users, sessions, ARNs, user agents, key ids) are shown in code spans, backticks removed
  so nothing breaks out;
- everything is cut to Block Kit's limits.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
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


#: Characters Slack can turn into a link, a mention or a channel name.
_LINKABLE = re.compile(r"[@.:/#]")
_VISIBLE = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


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


def visible(text: str) -> str:
    """Show control, format (bidi), separator and surrogate characters as escapes: one line, no tricks."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _VISIBLE.get(ch) or f"\\u{ord(ch):04x}" for ch in text)


def safe(text: str, limit: int) -> str:
    """Escape, then clip: the form every event-supplied string takes in a message."""
    return clip(escape(visible(text)), limit)


def plain(text: str, limit: int) -> str:
    """Plain-text fields are not parsed for mentions, but drop control characters anyway."""
    cleaned = "".join(ch for ch in text if ch not in "<>&" and (ch.isprintable() or ch == " "))
    return clip(cleaned, limit)


def code(text: str, limit: int) -> str:
    """A value shown in a code span (backticks removed so it cannot break out)."""
    return "`" + safe(text.replace("`", "'"), limit - 2) + "`" if text else "_none_"


def literal(text: str, limit: int) -> str:
    """A short value an event author chose: in a code span when Slack could link it, else escaped."""
    return code(text, limit) if _LINKABLE.search(text) else safe(text.replace("`", "'"), limit)


def quoted(text: str, names: Iterable[str], limit: int) -> str:
    """`text` escaped, with each of `names` it quotes that Slack could link (a domain, an email,
    an ARN, `@here`) shown in a code span. Backticks elsewhere become quotes, so spans pair up."""
    linkable = sorted({n for n in names if n and _LINKABLE.search(n)}, key=len, reverse=True)
    if not linkable:
        return safe(text.replace("`", "'"), limit)
    alternatives = "|".join(map(re.escape, linkable))
    # A name the reason puts in quotes loses them to the code span.
    pattern = re.compile(rf"'({alternatives})'|(?<!\w)({alternatives})(?!\w)")
    parts: list[str] = []
    last = 0
    for found in pattern.finditer(text):
        parts.append(escape(visible(text[last : found.start()].replace("`", "'"))))
        parts.append(code(found.group(1) or found.group(2), limit))
        last = found.end()
    parts.append(escape(visible(text[last:].replace("`", "'"))))
    return clip("".join(parts), limit)


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
    names = event_names(event)
    fields = [
        f"*Who*\n{_who(event)}",
        f"*What*\n{literal(event.event_name, 64)} → {code(user, 200)}",
        f"*From*\nIP {code(event.source_ip or 'unknown', 100)}\nUA {code(event.user_agent, 1000)}",
        f"*When*\n{event.event_time.strftime('%Y-%m-%d %H:%M:%S UTC')}",
        f"*Account / region*\n{literal(event.account or 'unknown', 64)} / {literal(event.region or 'unknown', 64)}",
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
            "text": mrkdwn(
                clip(f"{mark} *{decision.severity.upper()}* {quoted(decision.reason, names, 2800)}", SECTION_MAX)
            ),
        },
        {"type": "section", "fields": [mrkdwn(clip(f, FIELD_MAX)) for f in fields[:FIELDS_MAX]]},
    ]
    if results:
        lines = "\n".join(f"• {quoted(r.describe(), names, 300)}" for r in results)
        blocks.append({"type": "section", "text": mrkdwn(clip(f"*Actions*\n{lines}", SECTION_MAX))})
    elif monitor and decision.steps:
        blocks.append({"type": "section", "text": mrkdwn("*Actions*\nnone: monitor mode changes nothing in IAM")})
    links = [f"<{cloudtrail_url(event)}|CloudTrail event>"]
    if event.target_user_name:
        links.append(f"<{iam_user_url(event.target_user_name)}|IAM user>")
    links.append(f"event {code(event.event_id, 120)}")
    blocks.append({"type": "context", "elements": [mrkdwn(" · ".join(links))]})
    blocks += [{"type": "context", "elements": [mrkdwn(clip(note, SECTION_MAX))]} for note in notes]
    if decision.quarantines and event.target_user_name and not monitor:
        blocks.append(_buttons(event))
    fallback = safe(f"{title}: {user} ({decision.severity}). {decision.reason}", FALLBACK_MAX)
    return {"text": fallback, "blocks": blocks[:BLOCKS_MAX]}


def event_names(event: IamEvent) -> tuple[str, ...]:
    """The strings of an event its author chose (names, ARNs, tags): what reasons may quote."""
    actor = event.actor
    return (
        event.target_user_name,
        event.target_user_arn,
        event.target_user_path,
        event.renamed_from,
        event.credential_id,
        event.error_code,
        event.source_ip,
        actor.arn,
        actor.session_issuer_arn,
        actor.session_name,
        actor.user_name,
        actor.invoked_by,
        *event.request_tag_keys,
    )


def _who(event: IamEvent) -> str:
    actor = event.actor
    if actor.type == "AssumedRole" and actor.session_issuer_arn:
        return f"{code(actor.session_issuer_arn, 1000)} (session {code(actor.session_name, 800)})"
    if actor.arn:
        return code(actor.arn, 1500)
    if actor.invoked_by:
        return code(actor.invoked_by, 1500)
    return literal(actor.type or "unknown", 100)


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
    """A plain notice: a header and verbatim mrkdwn sections, within limits.

    Callers build `sections` and `fallback` with `safe`, `code` or `quoted` around every value
    that did not come from the guardrail itself."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": plain(title, HEADER_MAX)}}
    ]
    blocks += [{"type": "section", "text": mrkdwn(clip(text, SECTION_MAX))} for text in sections if text]
    return {"text": clip(fallback or "\n".join(sections) or title, FALLBACK_MAX), "blocks": blocks[:BLOCKS_MAX]}


def mrkdwn(text: str) -> dict[str, Any]:
    """A mrkdwn text object Slack does not preprocess: no auto-linked URLs, emails, channels or mentions."""
    return {"type": "mrkdwn", "text": text, "verbatim": True}


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
