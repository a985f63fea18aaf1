"""The Block Kit builder: facts, escaping of attacker-controlled strings, size limits."""

from __future__ import annotations

import json

from chalicelib.constants import ACTION_KEEP_QUARANTINED
from chalicelib.events import parse_event
from chalicelib.iam import DONE, ActionResult
from chalicelib.policy import decide
from chalicelib.slack_message import (
    BUTTON_TEXT_MAX,
    FIELD_MAX,
    HEADER_MAX,
    SECTION_MAX,
    build_alert,
    clip,
    escape,
    render_text,
)
from chalicelib.sweep import Row, findings_message
from devtools.synth import role_identity
from tests.helpers import ACCOUNT, DEVELOPER, MALLORY, OWN_IDENTITY, allowlist, record

OWN = OWN_IDENTITY


def alert_for(raw: dict, mode: str | None = None, results: tuple = ()) -> dict:
    event = parse_event(raw)
    return build_alert(event, decide(event, allowlist(), own_roles=OWN, mode=mode), results)


def all_text(message: dict) -> str:
    return json.dumps(message)


def mrkdwn_texts(message: dict) -> list[str]:
    texts = []
    for block in message["blocks"]:
        if block["type"] == "section":
            texts += [block["text"]["text"]] if "text" in block else []
            texts += [f["text"] for f in block.get("fields", [])]
        if block["type"] == "context":
            texts += [e["text"] for e in block["elements"]]
    return texts


def test_quarantine_alert_has_the_facts_links_and_buttons() -> None:
    raw = record("CreateUser", "alice", DEVELOPER)
    message = alert_for(raw, results=(ActionResult("attach_quarantine_policy", "alice", DONE),))
    blocks = message["blocks"]
    assert blocks[0]["type"] == "header" and "IAM user quarantined: alice" in blocks[0]["text"]["text"]
    text = all_text(message)
    for fact in (
        "AWSReservedSSO_Developer_0123abcd",
        "203.0.113.10",
        "aws-cli/2.15.30",
        "2026-11-29 09:00:00 UTC",
        "123456789012 / us-east-1",
        "quarantine (high, enforce)",
        "no integration in the allowlist",
    ):
        assert fact in text, fact
    context = next(b for b in blocks if b["type"] == "context")["elements"][0]["text"]
    assert f"cloudtrailv2/home?region=us-east-1#/events/{raw['eventID']}|CloudTrail event>" in context
    assert "/iam/home#/users/details/alice|IAM user>" in context
    actions = next(b for b in blocks if b["type"] == "actions")
    ids = [e["action_id"] for e in actions["elements"]]
    assert ids == ["guardrail_approve_7", "guardrail_approve_30", ACTION_KEEP_QUARANTINED]
    value = json.loads(actions["elements"][0]["value"])
    assert value == {"a": "123456789012", "u": "alice", "e": raw["eventID"]}
    assert "attach_quarantine_policy alice: done" in text


def test_channel_mention_injection_in_user_agent_is_escaped() -> None:
    raw = record("CreateUser", "alice", DEVELOPER, user_agent="<!channel> <https://evil.example|click> & co")
    message = alert_for(raw)
    for text in mrkdwn_texts(message):
        assert "<!channel>" not in text
        assert "<https://evil" not in text
    assert "&lt;!channel&gt; &lt;https://evil.example|click&gt; &amp; co" in all_text(message)


def test_injection_in_user_name_and_tags_is_escaped_everywhere() -> None:
    raw = record("CreateUser", "<@U0SECLEAD>", MALLORY, tags=[("guardrail:<!here>", "x")])
    message = alert_for(raw)
    assert "<@U0SECLEAD>" not in "".join(mrkdwn_texts(message))
    assert "<!here>" not in "".join(mrkdwn_texts(message))
    assert "<" not in message["blocks"][0]["text"]["text"]
    assert "<@" not in message["text"] and "<!here>" not in message["text"]


def test_backticks_cannot_break_out_of_code_spans() -> None:
    raw = record("CreateUser", "alice", DEVELOPER, user_agent="x` *bold* `y")
    text = all_text(alert_for(raw))
    assert "x' *bold* 'y" in text


def test_long_values_are_cut_to_block_kit_limits() -> None:
    raw = record("CreateUser", "a" * 300, DEVELOPER, user_agent="&" * 5000, source_ip="<" * 3000)
    message = alert_for(raw)
    header = message["blocks"][0]["text"]["text"]
    assert len(header) <= HEADER_MAX
    for block in message["blocks"]:
        if block["type"] == "section":
            if "text" in block:
                assert len(block["text"]["text"]) <= SECTION_MAX
            for field in block.get("fields", []):
                assert len(field["text"]) <= FIELD_MAX
            assert len(block.get("fields", [])) <= 10
        if block["type"] == "actions":
            for element in block["elements"]:
                assert len(element["text"]["text"]) <= BUTTON_TEXT_MAX
                assert len(element["value"]) <= 2000
    assert len(message["blocks"]) <= 50
    assert len(message["text"]) <= 3000


def test_clip_never_cuts_an_entity_in_half() -> None:
    escaped = escape("<<<<")  # &lt;&lt;&lt;&lt;
    for limit in range(1, len(escaped)):
        cut = clip(escaped, limit)
        assert len(cut) <= limit
        body = cut.rstrip("…")
        assert body.count("&") == body.count(";")


def test_monitor_mode_says_would_and_has_no_buttons() -> None:
    message = alert_for(record("CreateUser", "alice", DEVELOPER), mode="monitor")
    assert message["blocks"][0]["text"]["text"].startswith("[monitor] would quarantine")
    assert not [b for b in message["blocks"] if b["type"] == "actions"]
    assert "monitor mode changes nothing in IAM" in all_text(message)


def test_backdoor_key_alert_is_critical_and_shows_the_key() -> None:
    message = alert_for(record("CreateAccessKey", "bob", MALLORY, access_key_id="AKIAEXAMPLEKEY000001"))
    text = all_text(message)
    assert ":rotating_light: *CRITICAL*" in text
    assert "AKIAEXAMPLEKEY000001" in text
    assert "backdoor" in text


def test_render_text_for_terminal() -> None:
    rendered = render_text(alert_for(record("CreateUser", "alice", DEVELOPER)))
    assert rendered.startswith("== IAM user quarantined: alice ==")
    assert "[Approve 7 days] [Approve 30 days] [Keep quarantined]" in rendered


def test_every_mrkdwn_text_is_verbatim_so_nothing_auto_links() -> None:
    message = alert_for(record("CreateUser", "evil.example.com", DEVELOPER))
    objects = [b["text"] for b in message["blocks"] if b["type"] == "section" and "text" in b]
    objects += [f for b in message["blocks"] for f in b.get("fields", [])]
    objects += [e for b in message["blocks"] if b["type"] == "context" for e in b["elements"]]
    assert objects and all(o["type"] == "mrkdwn" and o["verbatim"] is True for o in objects)


def test_linkable_names_are_in_code_spans_in_fields_reasons_and_results() -> None:
    identity = role_identity(ACCOUNT, "dev", "@here")
    raw = record("CreateUser", "ceo@evil.example", identity, tags=[("guardrail:x.io", "v")])
    message = alert_for(raw, results=(ActionResult("attach_quarantine_policy", "ceo@evil.example", DONE),))
    texts = "\n".join(mrkdwn_texts(message))
    assert "matches user name `ceo@evil.example`" in texts
    assert "(session `@here`)" in texts
    assert "creator-supplied tags ignored: `guardrail:x.io`" in texts
    assert "attach_quarantine_policy `ceo@evil.example`: done" in texts
    assert " ceo@evil.example" not in texts and " @here" not in texts


def test_control_and_bidi_characters_are_shown_not_obeyed() -> None:
    raw = record("CreateUser", "alice", DEVELOPER, user_agent="cli\n*Decision*\napprove\u202e")
    message = alert_for(raw)
    ua = next(t for t in mrkdwn_texts(message) if t.startswith("*From*"))
    assert ua.endswith("UA `cli\\n*Decision*\\napprove\\u202e`")
    header = message["blocks"][0]["text"]["text"]
    assert header == "IAM user quarantined: alice"


def test_sweep_lines_keep_user_names_inside_their_code_span() -> None:
    rows = [Row(ACCOUNT, "a`*b*`@here", "quarantined", "unapproved", "high", "detail", "", "quarantine_user", "done")]
    text = findings_message(rows, "Sweep")["blocks"][2]["text"]["text"]
    assert text.startswith("• `a'*b*'@here` (123456789012) *unapproved*")
