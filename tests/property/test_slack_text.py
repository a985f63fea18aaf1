"""Hostile strings in every event field never reach Slack as markup, a mention or a link, and
every message stays within Block Kit's limits: alerts, sweep notices and expiry notices."""

from __future__ import annotations

from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from chalicelib.events import parse_event
from chalicelib.guardrail import SELF_APPROVAL_UNCHECKED
from chalicelib.iam import DONE, FAILED, GONE, ActionResult
from chalicelib.policy import credential_ref, decide
from chalicelib.slack_message import build_alert
from chalicelib.sweep import Row, expiry_notice, findings_message, policy_tampered_message, sweep_errors_message
from tests.helpers import ACCOUNT, OWN_IDENTITY, allowlist, record
from tests.property.strategies import (
    EVENT_NAMES,
    STATUS_ID_FIELDS,
    assert_only_in_code_spans,
    assert_slack_safe,
    hostile_text,
)

ALLOWLIST = allowlist()
OWN = OWN_IDENTITY
QUARANTINE_POLICY_ARN = f"arn:aws:iam::{ACCOUNT}:policy/iam-user-guardrail-quarantine"


@st.composite
def identities(draw: st.DrawFn, text: st.SearchStrategy[str] = hostile_text) -> dict[str, Any]:
    """A `userIdentity` of any kind with attacker-chosen names and ARNs."""
    kind = draw(st.sampled_from(("AssumedRole", "IAMUser", "Root", "AWSService", "FederatedUser")))
    identity: dict[str, Any] = {
        "type": kind,
        "principalId": draw(text),
        "arn": draw(text),
        "accountId": draw(text),
        "accessKeyId": draw(text),
    }
    if kind == "IAMUser":
        identity["userName"] = draw(text)
    if kind == "AWSService":
        identity["invokedBy"] = draw(text)
    if kind == "AssumedRole":
        session = draw(text)
        identity["arn"] = f"arn:aws:sts::{ACCOUNT}:assumed-role/{draw(text)}/{session}"
        identity["sessionContext"] = {"sessionIssuer": {"type": "Role", "arn": draw(text), "userName": draw(text)}}
    return identity


@st.composite
def hostile_records(draw: st.DrawFn) -> dict[str, Any]:
    """A CloudTrail record whose every string field is attacker-chosen."""
    text = hostile_text
    name = draw(st.sampled_from(EVENT_NAMES))
    tags = draw(st.lists(st.tuples(st.one_of(text, text.map("guardrail:".__add__)), text), max_size=3))
    raw = record(
        name,
        draw(st.one_of(text, text.map("svc-datadog-".__add__))),
        draw(identities()),
        account=draw(st.one_of(st.just(ACCOUNT), text)),
        access_key_id=draw(text),
        path=draw(st.one_of(st.just("/integrations/"), text)),
        tags=tags,
        error_code=draw(st.one_of(st.just(""), text)),
        user_agent=draw(text),
        source_ip=draw(text),
    )
    raw.update(awsRegion=draw(text), eventID=draw(text), errorMessage=draw(text))
    request = raw["requestParameters"]
    if name == "DetachUserPolicy":
        request["policyArn"] = draw(st.one_of(st.just(QUARANTINE_POLICY_ARN), text))
    elif name in STATUS_ID_FIELDS:
        request.update({STATUS_ID_FIELDS[name]: draw(text), "status": draw(st.one_of(st.just("Active"), text))})
    elif name == "UpdateUser":
        request.update(newUserName=draw(text), newPath=draw(text))
    elif name == "TagUser":
        request["tags"] = [{"key": k, "value": v} for k, v in tags]
    elif name == "UntagUser":
        request["tagKeys"] = [k for k, _ in tags]
    return raw


def alerts_for(raw: dict[str, Any], detail: str) -> list[dict[str, Any]]:
    """The alert for every decision the event can get: with and without a record of the user,
    in both modes, with every step done or failed (the failure detail attacker-chosen too)."""
    event = parse_event(raw)
    ours = {
        "deactivated_keys": [credential_ref(event.credential_kind, event.credential_id)],
        "tags": {k: f"{v}!" for k, v in event.request_tags},
        "status": "quarantined",
    }
    messages = []
    for user_record in (None, ours):
        for mode in (None, "monitor"):
            decision = decide(event, ALLOWLIST, own_roles=OWN, record=user_record, mode=mode)
            steps = decision.steps
            results = [ActionResult(step, event.target_user_name, s, detail) for step in steps for s in (DONE, FAILED)]
            messages.append(build_alert(event, decision))
            results.append(ActionResult("x", detail, GONE, detail))
            messages.append(build_alert(event, decision, results, notes=(SELF_APPROVAL_UNCHECKED,)))
    return messages


@given(raw=hostile_records(), detail=hostile_text)
@example(
    raw=record("CreateUser", "<!channel>", {"type": "Root"}, user_agent="`\n<@U1>"),
    detail="&",
)
def test_hostile_event_fields_never_become_markup_mentions_or_links(raw: dict[str, Any], detail: str) -> None:
    for message in alerts_for(raw, detail):
        assert_slack_safe(message)


LINKABLE_NAMES = st.one_of(
    st.sampled_from(("@here", "@channel", "@everyone", "ceo@evil.example", "evil.example.com", "www.x.io")),
    st.builds(
        "{}@{}.{}".format,
        *(st.from_regex(r"[a-z0-9]{3,10}", fullmatch=True) for _ in range(3)),
    ),
)


@given(user=LINKABLE_NAMES, session=LINKABLE_NAMES, name=st.sampled_from(EVENT_NAMES))
@example(user="ceo@evil.example", session="@here", name="CreateUser")
def test_linkable_names_are_shown_only_in_code_spans(user: str, session: str, name: str) -> None:
    identity = {
        "type": "AssumedRole",
        "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/dev/{session}",
        "accountId": ACCOUNT,
        "sessionContext": {"sessionIssuer": {"type": "Role", "arn": f"arn:aws:iam::{ACCOUNT}:role/dev"}},
    }
    for message in alerts_for(record(name, user, identity, access_key_id="AKIAEXAMPLEKEY000001"), "detail"):
        for block in message["blocks"]:
            objects = [block.get("text"), *block.get("fields", []), *block.get("elements", [])]
            for obj in objects:
                if obj and obj.get("type") == "mrkdwn":
                    assert_only_in_code_spans(obj["text"], user)
                    assert_only_in_code_spans(obj["text"], session)


@given(
    item=st.fixed_dictionaries(
        {"user": hostile_text, "account": hostile_text},
        optional={"approver": hostile_text, "expires_at": hostile_text, "results": st.lists(hostile_text, max_size=4)},
    )
)
def test_expiry_notice_escapes_everything_it_quotes(item: dict[str, Any]) -> None:
    assert_slack_safe(expiry_notice(item))


rows = st.builds(
    Row,
    account=hostile_text,
    user=hostile_text,
    status=hostile_text,
    finding=hostile_text,
    severity=hostile_text,
    detail=hostile_text,
    owner=hostile_text,
    action=hostile_text,
    result=hostile_text,
)


@given(found=st.lists(rows, max_size=45), title=st.sampled_from(("Sweep: acted", "Daily IAM user digest 2026-11-29")))
def test_sweep_findings_escape_every_field_and_fit_block_kit(found: list[Row], title: str) -> None:
    assert_slack_safe(findings_message(found, title))


@given(errors=st.lists(hostile_text, min_size=1, max_size=25))
def test_sweep_error_notice_escapes_exception_text(errors: list[str]) -> None:
    assert_slack_safe(sweep_errors_message(errors))


@given(found=st.lists(rows, min_size=1, max_size=12))
def test_policy_tamper_notice_escapes_what_the_sweep_read(found: list[Row]) -> None:
    assert_slack_safe(policy_tampered_message(found))
