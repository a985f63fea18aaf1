"""The parser on real CloudTrail records (../shared) and on hand-made malformed input."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from chalicelib.events import MalformedEventError, UnsupportedEventError, parse_event
from devtools.synth import envelope
from tests.helpers import REAL_FIXTURES, TERRAFORM, real_fixture, record

real = pytest.mark.skipif(not REAL_FIXTURES.is_dir(), reason="../shared/fixtures absent")
ALL_REAL = sorted(p.name for p in REAL_FIXTURES.glob("*.json")) if REAL_FIXTURES.is_dir() else []
NOT_IAM = {
    "stratus__ConsoleLogin__iamuser-no-mfa-signin-not-iam.json",
    "stratus__GetCallerIdentity__federateduser-identity-shape.json",
}


@real
@pytest.mark.parametrize("name", ALL_REAL)
def test_every_real_record_parses_or_is_rejected_with_a_reason(name: str) -> None:
    raw = real_fixture(name)
    if name in NOT_IAM:
        with pytest.raises(UnsupportedEventError, match=r"is not iam\.amazonaws\.com"):
            parse_event(raw)
        return
    event = parse_event(raw)
    detail = raw.get("detail", raw)
    assert event.event_name == detail["eventName"]
    assert event.event_id
    assert event.event_time.tzinfo is not None
    assert event.actor.type == detail["userIdentity"]["type"]
    assert event.error_code == detail.get("errorCode", "")


@real
def test_real_backdoor_key_fields() -> None:
    event = parse_event(real_fixture("stratus__CreateAccessKey__iamuser-for-other-user-backdoor.json"))
    assert event.target_user_name == "stratus-red-team-backdoor-u-user"
    assert event.access_key_id.startswith("AKIA")
    assert event.actor.user_name == "christophe"
    assert not event.actor_is_target
    assert event.account == "946986569305"


@real
def test_real_create_user_with_tags_and_path() -> None:
    event = parse_event(real_fixture("invictus__CreateUser__terraform-with-tags-and-path.json"))
    assert event.target_user_path == "/"
    assert event.request_tags
    assert "Terraform" in event.user_agent


@real
def test_real_envelope_uses_sso_session_issuer_as_principal() -> None:
    event = parse_event(real_fixture("ENVELOPE_example.json"))
    assert event.actor.type == "AssumedRole"
    assert event.actor.principal_arn.endswith(
        ":role/aws-reserved/sso.amazonaws.com/eu-central-1/AWSReservedSSO_AdministratorAccess_33d40419b45cd0b4"
    )
    assert event.actor.session_name == "michael.ullrich@nuvibit.com"
    assert not event.account_is_valid  # masked '***'


@real
def test_real_record_without_event_id_gets_a_stable_synthetic_id() -> None:
    raw = real_fixture("awsdocs__CreateUser__cli-alice-creates-bob-eventVersion1.0.json")
    assert "eventID" not in raw
    first, second = parse_event(raw), parse_event(json.loads(json.dumps(raw)))
    assert first.event_id.startswith("sha256-") and first.event_id == second.event_id
    assert first.target_user_name == "Bob"


@real
def test_real_root_key_for_itself_has_no_target() -> None:
    event = parse_event(real_fixture("panther-handbuilt__CreateAccessKey__root-for-self-requestParameters-null.json"))
    assert event.actor.type == "Root"
    assert event.target_user_name == ""


@real
def test_panther_time_format_is_read() -> None:
    event = parse_event(real_fixture("panther__CreateAccessKey__error-LimitExceeded-go-sdk.json"))
    assert event.event_time.year >= 2019
    assert event.error_code == "LimitExceededException"
    assert event.target_user_name == "some_iam_user"  # defaults to the caller


def test_envelope_and_bare_record_parse_alike() -> None:
    raw = record("CreateUser", "alice")
    assert parse_event(raw) == parse_event(envelope(raw))


def test_assumed_role_fields() -> None:
    event = parse_event(record("CreateUser", "alice", TERRAFORM))
    assert event.actor.principal_arn == "arn:aws:iam::123456789012:role/terraform-deployer"
    assert event.actor.session_name == "tf-run-42"
    assert event.event_time == datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
    assert event.target_user_arn == "arn:aws:iam::123456789012:user/alice"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "expected a JSON object"),
        ([], "expected a JSON object"),
        ("CreateUser", "expected a JSON object"),
        ({}, "no eventName"),
        ({"detail-type": "Scheduled Event", "detail": {}}, "unsupported detail-type"),
        ({"detail-type": "AWS API Call via CloudTrail", "detail": "x"}, "no 'detail' object"),
        ({"eventName": "CreateUser", "eventSource": "s3.amazonaws.com"}, "is not iam.amazonaws.com"),
        ({"eventName": "CreateUser", "eventSource": "iam.amazonaws.com", "eventTime": "yesterday"}, "eventTime"),
        ({"eventName": "CreateUser", "eventSource": "iam.amazonaws.com"}, "eventTime"),
    ],
)
def test_malformed_input_is_rejected_with_a_reason(raw: object, reason: str) -> None:
    with pytest.raises(MalformedEventError, match=reason):
        parse_event(raw)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("userIdentity",), "root"),
        (("userIdentity", "sessionContext"), 7),
        (("requestParameters",), ["userName"]),
        (("requestParameters", "tags"), {"key": "x"}),
        (("responseElements", "user"), "bob"),
        (("responseElements", "user", "userName"), {"evil": True}),
        (("eventID",), {"$ne": None}),
    ],
)
def test_wrong_types_anywhere_are_malformed_not_crashes(path: tuple[str, ...], value: object) -> None:
    raw = record("CreateUser", "alice", tags=[("team", "x")])
    target = raw
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(MalformedEventError):
        parse_event(raw)
