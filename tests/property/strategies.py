"""Hostile input for the property tests: arbitrary JSON, mutated CloudTrail records, nasty text,
and the checks every Slack message must pass."""

from __future__ import annotations

import copy
import re
import unicodedata
from collections.abc import Iterator
from typing import Any

from hypothesis import strategies as st

from chalicelib.constants import (
    CREDENTIAL_STATUS_EVENTS,
    DETACH_USER_POLICY,
    SUBSCRIBED_EVENTS,
    TAG_USER_EVENT,
    UNTAG_USER_EVENT,
    UPDATE_USER,
)
from chalicelib.slack_message import (
    BLOCKS_MAX,
    BUTTON_TEXT_MAX,
    BUTTON_VALUE_MAX,
    CONSOLE,
    FALLBACK_MAX,
    FIELD_MAX,
    FIELDS_MAX,
    HEADER_MAX,
    SECTION_MAX,
)
from devtools.synth import envelope, root_identity
from tests.helpers import ACCOUNT, DEVELOPER, MALLORY, TERRAFORM, record

#: Pieces Slack or a reader could take for markup, a mention, a link or a line of its own.
HOSTILE_PIECES = (
    "<",
    ">",
    "&",
    "&amp;",
    "&lt;!here&gt;",
    "&#60;",
    "<!here>",
    "<!channel>",
    "<!everyone>",
    "<!subteam^S0SEC|@security>",
    "<@U0SECLEAD>",
    "<#C0ALERTS>",
    "<http://x|y>",
    "<https://evil.example/login|Approve here>",
    "<mailto:a@b.c|mail>",
    "@here",
    "@channel",
    "@everyone",
    "#general",
    "ceo@evil.example",
    "evil.example.com",
    "https://evil.example/x?a=1&b=2",
    "www.evil.example",
    "`",
    "```",
    "*bold*",
    "_it_",
    "~s~",
    "> quote",
    ":rotating_light:",
    "\n",
    "\r\n",
    "\t",
    "\x00",
    "\x1b[31m",
    "\u202e",
    "\u200b",
    "\u2028",
    "\ufeff",
    "é",
    "😀",
    "arn:aws:iam::123456789012:role/x",
    "|",
    " ",
)

hostile_text = st.one_of(
    st.text(max_size=40),
    st.lists(st.one_of(st.sampled_from(HOSTILE_PIECES), st.text(max_size=6)), max_size=8).map("".join),
)
#: Names as IAM allows them ([\w+=,.@-]), which can still be an email, a domain or `@here`.
iam_name = st.from_regex(r"[A-Za-z0-9+=,.@_-]{1,64}", fullmatch=True)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    hostile_text,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(st.text(max_size=12), st.sampled_from(tuple(record("CreateUser", "x")))), inner, max_size=5
        ),
    ),
    max_leaves=20,
)

EVENT_NAMES = tuple(sorted(SUBSCRIBED_EVENTS))
#: The request parameter that names the credential of each status call.
STATUS_ID_FIELDS = {
    "UpdateAccessKey": "accessKeyId",
    "UpdateSSHPublicKey": "sSHPublicKeyId",
    "UpdateServiceSpecificCredential": "serviceSpecificCredentialId",
    "UpdateSigningCertificate": "certificateId",
}
IDENTITIES = (
    TERRAFORM,
    DEVELOPER,
    MALLORY,
    root_identity(ACCOUNT),
    {"type": "AWSService", "invokedBy": "x.amazonaws.com"},
)


@st.composite
def valid_records(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed CloudTrail record of an event the guardrail subscribes to."""
    name = draw(st.sampled_from(EVENT_NAMES))
    user = draw(st.sampled_from(("alice", "svc-datadog", "svc-console", "mallory")))
    identity = copy.deepcopy(draw(st.sampled_from(IDENTITIES)))  # mutations must not reach the shared ones
    raw = record(name, user, identity, tags=[("guardrail:status", "approved")], event_id="ev-1", access_key_id="AKIA1")
    if name == DETACH_USER_POLICY:
        raw["requestParameters"]["policyArn"] = f"arn:aws:iam::{ACCOUNT}:policy/iam-user-guardrail-quarantine"
    elif name in CREDENTIAL_STATUS_EVENTS:
        raw["requestParameters"].update({STATUS_ID_FIELDS[name]: "AKIAEXAMPLEKEY000001", "status": "Active"})
    elif name == UPDATE_USER:
        raw["requestParameters"].update(newUserName="svc-datadog", newPath="/integrations/")
    elif name == TAG_USER_EVENT:
        raw["requestParameters"]["tags"] = [{"key": "guardrail:status", "value": "approved"}]
    elif name == UNTAG_USER_EVENT:
        raw["requestParameters"]["tagKeys"] = ["guardrail:status"]
    return raw


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, (*prefix, index))


@st.composite
def mutated_events(draw: st.DrawFn) -> Any:
    """A valid record (bare or in its EventBridge envelope) with a few fields replaced or removed."""
    raw: Any = draw(valid_records())
    if draw(st.booleans()):
        raw = envelope(raw)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(list(_paths(raw))[1:]))  # the root alone is `json_values`' job
        replacement = draw(json_values)
        parent = raw
        for step in path[:-1]:
            parent = parent[step]
        if isinstance(parent, dict) and draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = replacement
    return raw


any_event_json = st.one_of(json_values, mutated_events())


# -- what every Slack message must satisfy ----------------------------------------------------

#: The only links the guardrail writes: to the AWS console, the target percent-encoded.
OUR_LINK = re.compile(re.escape(f"<{CONSOLE}/") + r"[A-Za-z0-9%/#?=._~-]*\|(?:CloudTrail event|IAM user)>")
#: The only mention the guardrail writes: the clicker, whose id was checked against `[UW][A-Z0-9]+`.
OUR_MENTION = re.compile(r"<@[UW][A-Z0-9]{2,}>")
ENTITY = re.compile(r"&(?:amp|lt|gt);")
UNSEEN = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def text_objects(message: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], int]]:
    """Every Block Kit text object with its place and the limit that applies to it."""
    for block in message.get("blocks", []):
        kind = block["type"]
        if kind == "header":
            yield "header", block["text"], HEADER_MAX
        elif kind == "section":
            if "text" in block:
                yield "section", block["text"], SECTION_MAX
            for field in block.get("fields", []):
                yield "field", field, FIELD_MAX
        elif kind == "context":
            for element in block["elements"]:
                yield "context", element, SECTION_MAX
        elif kind == "actions":
            for element in block["elements"]:
                yield "button", element["text"], BUTTON_TEXT_MAX


def assert_markup_safe(text: str, *, mentions: bool = False) -> None:
    """No `<` or `>` but the guardrail's own links (and clicker mention), no bare `&`."""
    rest = OUR_LINK.sub("", text)
    if mentions:
        rest = OUR_MENTION.sub("", rest)
    assert "<" not in rest and ">" not in rest, text
    assert rest.count("&") == len(ENTITY.findall(rest)), text


def assert_slack_safe(message: dict[str, Any], *, mentions: bool = False) -> None:
    """Escaping, verbatim and Block Kit limits for a whole message."""
    blocks = message["blocks"]
    assert 0 < len(blocks) <= BLOCKS_MAX
    assert 0 < len(message["text"]) <= FALLBACK_MAX
    assert_markup_safe(message["text"], mentions=mentions)
    for place, obj, limit in text_objects(message):
        text = obj["text"]
        assert 0 < len(text) <= limit, (place, len(text))
        if obj["type"] == "mrkdwn":
            assert obj.get("verbatim") is True, (place, text)
            assert_markup_safe(text, mentions=mentions)
        else:
            assert not any(unicodedata.category(ch) in UNSEEN for ch in text), (place, text)
            assert not set(text) & set("<>&"), (place, text)
    for block in blocks:
        assert len(block.get("fields", [])) <= FIELDS_MAX
        for element in block.get("elements", []) if block["type"] == "actions" else []:
            assert len(element["value"]) <= BUTTON_VALUE_MAX


def code_spans(text: str) -> list[tuple[int, int]]:
    """The (start, end) of each closed code span's content."""
    ticks = [m.start() for m in re.finditer("`", text)]
    return [(ticks[i] + 1, ticks[i + 1]) for i in range(0, len(ticks) - 1, 2)]


def assert_only_in_code_spans(text: str, name: str) -> None:
    """Every occurrence of `name` in rendered text lies inside a code span."""
    rest = OUR_LINK.sub(lambda m: "\0" * len(m.group()), text)
    spans = code_spans(rest)
    for found in re.finditer(re.escape(name), rest):
        assert any(a <= found.start() and found.end() <= b for a, b in spans), (name, text)


assert set(STATUS_ID_FIELDS) == set(CREDENTIAL_STATUS_EVENTS), "a new status call needs its id field here"
