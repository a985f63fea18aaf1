"""Service-specific credentials, on the pure layer: moto 5 does not implement them.

The decision comes from the same table as every other credential kind (policy.CREDENTIALS); the
IAM calls are checked with botocore's own Stubber against the real IAM service model, so a wrong
parameter name fails here as it would against AWS.
"""

from __future__ import annotations

from datetime import UTC, datetime

import boto3
from botocore.stub import Stubber

from chalicelib.constants import ACCESS_KEY, CREDENTIAL_EVENTS, CRITICAL, QUARANTINE, SERVICE_SPECIFIC_CREDENTIAL
from chalicelib.events import parse_event
from chalicelib.iam import CREDENTIAL_APIS, DONE, IamActions
from chalicelib.policy import (
    ATTACH_QUARANTINE,
    CREDENTIALS,
    DEACTIVATE_CREDENTIAL,
    TAG_USER,
    credential_ref,
    decide,
    parse_credential_ref,
)
from tests.helpers import MALLORY, OWN_IDENTITY, TERRAFORM, allowlist, record

CREDENTIAL_ID = "ACCAEXAMPLESERVICE01"


def service_credential_event(user: str, identity: dict) -> dict:
    raw = record("CreateServiceSpecificCredential", user, identity)
    raw["requestParameters"] = {"userName": user, "serviceName": "codecommit.amazonaws.com"}
    raw["responseElements"] = {
        "serviceSpecificCredential": {
            "userName": user,
            "serviceName": "codecommit.amazonaws.com",
            "serviceUserName": f"{user}-at-123456789012",
            "serviceSpecificCredentialId": CREDENTIAL_ID,
            "status": "Active",
        }
    }
    return raw


def test_every_credential_event_has_a_rule_and_every_deactivatable_kind_an_api() -> None:
    assert set(CREDENTIAL_EVENTS.values()) == set(CREDENTIALS)
    for kind, rule in CREDENTIALS.items():
        if rule.undo == DEACTIVATE_CREDENTIAL:
            assert kind in CREDENTIAL_APIS


def test_a_service_credential_for_another_user_is_deactivated_and_the_user_quarantined() -> None:
    event = parse_event(service_credential_event("bob", MALLORY))
    assert (event.credential_kind, event.credential_id) == (SERVICE_SPECIFIC_CREDENTIAL, CREDENTIAL_ID)
    decision = decide(event, allowlist(), own_roles=OWN_IDENTITY)
    assert (decision.verdict, decision.severity, decision.rule) == (
        QUARANTINE,
        CRITICAL,
        "unapproved_service_specific_credential",
    )
    assert decision.steps == (DEACTIVATE_CREDENTIAL, ATTACH_QUARANTINE, TAG_USER)


def test_control_a_service_credential_for_an_integration_by_its_provisioner_is_allowed() -> None:
    decision = decide(
        parse_event(service_credential_event("svc-scoped", TERRAFORM)), allowlist(), own_roles=OWN_IDENTITY
    )
    assert decision.verdict == "approve" and decision.steps == ()


def test_the_deactivation_call_is_the_one_iam_expects() -> None:
    client = boto3.client("iam", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stub:
        stub.add_response(
            "update_service_specific_credential",
            {},
            {"UserName": "bob", "ServiceSpecificCredentialId": CREDENTIAL_ID, "Status": "Inactive"},
        )
        result = IamActions(client, policy_name="q").set_credential_status(
            "bob", SERVICE_SPECIFIC_CREDENTIAL, CREDENTIAL_ID, "Inactive"
        )
        stub.assert_no_pending_responses()
    assert result.status == DONE and result.action == "deactivate_service_specific_credential"


def test_service_credentials_are_listed_for_the_sweep() -> None:
    client = boto3.client("iam", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    created = datetime(2026, 11, 29, tzinfo=UTC)
    listing = {
        "ServiceSpecificCredentials": [
            {
                "UserName": "bob",
                "Status": "Active",
                "ServiceUserName": "bob-at-1",
                "CreateDate": created,
                "ServiceSpecificCredentialId": CREDENTIAL_ID,
                "ServiceName": "codecommit.amazonaws.com",
            }
        ]
    }
    with Stubber(client) as stub:
        stub.add_response("list_service_specific_credentials", listing, {"UserName": "bob"})
        [credential] = IamActions(client, policy_name="q").credentials("bob", (SERVICE_SPECIFIC_CREDENTIAL,))
    assert credential.active and credential.ref == f"service_specific_credential:{CREDENTIAL_ID}"


def test_credential_references_round_trip() -> None:
    for kind in CREDENTIAL_APIS:
        assert parse_credential_ref(credential_ref(kind, "ID123")) == (kind, "ID123")
    assert credential_ref(ACCESS_KEY, "AKIA1") == "AKIA1"  # records written before other kinds stay valid
