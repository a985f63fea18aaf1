"""Issue 9, insider attacks on moto server through the real handler, sweep and approvals.

Each attack is a test that failed on the code before the fix, next to a control showing the
legitimate path still works. Service-specific credentials are not implemented by moto: their
decision and the IAM call are tested on the pure layer (tests/unit/test_credentials.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib import runtime
from chalicelib.sweep import SweepReport
from devtools.synth import envelope, role_identity, user_identity
from tests.functional.approval_helpers import (
    APPROVER,
    SECURITY_ADMIN,
    api,
    interaction_body,
    post_interaction,
    signed_headers,
    store_slack_secret,
)
from tests.functional.conftest import Aws
from tests.helpers import ACCOUNT, DEVELOPER, MALLORY, TERRAFORM, record

POLICY = "iam-user-guardrail-quarantine"
POLICY_ARN = f"arn:aws:iam::{ACCOUNT}:policy/{POLICY}"
SSH_BODY = (
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDtest0000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000 mallory@laptop"
)


def certificate_pem() -> str:
    """A self-signed X.509 certificate, as someone uploading a signing certificate would hold."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mallory")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def sweep(aws: Aws) -> SweepReport:
    aws._instrument()
    report = SweepReport()
    runtime.get().reconciler().run(report)
    return report


def finding_kinds(report: SweepReport, user: str) -> list[tuple[str, str]]:
    return [(r.finding, r.result) for r in report.findings if r.user == user]


def click(aws: Aws, action: str, value: dict[str, str]) -> int:
    body = interaction_body(aws, action, value)
    return post_interaction(body, signed_headers(body)).status_code


def replies(aws: Aws) -> list[dict[str, Any]]:
    return [r["json"] for r in aws.slack.requests if r["path"].startswith("/response/")]


def credential_event(event: str, user: str, identity: dict, response: dict | None, **request: Any) -> dict:
    raw = record(event, user, identity)
    raw["requestParameters"] = {"userName": user, **request}
    raw["responseElements"] = response
    return raw


# -- the sweep remembers what it decided ----------------------------------------------------------


def test_sweep_requarantines_a_user_quarantined_for_its_creator_whatever_its_name_matches(aws: Aws) -> None:
    aws.iam.create_user(UserName="svc-datadog", Path="/integrations/")
    assert aws.invoke(record("CreateUser", "svc-datadog", DEVELOPER, path="/integrations/"))["verdict"] == "quarantine"
    aws.iam.detach_user_policy(UserName="svc-datadog", PolicyArn=POLICY_ARN)  # the event is lost
    report = sweep(aws)
    assert finding_kinds(report, "svc-datadog") == [("quarantine_removed", "done")]
    state = aws.user_state("svc-datadog")
    assert state["policies"] == [POLICY] and state["tags"]["guardrail:status"] == "quarantined"


def test_control_sweep_approves_an_integration_user_its_provisioner_created(aws: Aws) -> None:
    aws.iam.create_user(UserName="svc-datadog", Path="/integrations/")
    assert aws.invoke(record("CreateUser", "svc-datadog", TERRAFORM, path="/integrations/"))["verdict"] == "approve"
    report = sweep(aws)
    assert finding_kinds(report, "svc-datadog") == []
    assert aws.user_state("svc-datadog")["policies"] == []


def test_sweep_deactivates_again_a_key_reactivated_while_the_event_was_lost(aws: Aws) -> None:
    aws.iam.create_user(UserName="svc-datadog", Path="/integrations/")
    aws.invoke(record("CreateUser", "svc-datadog", TERRAFORM, path="/integrations/"))
    approved = aws.iam.create_access_key(UserName="svc-datadog")["AccessKey"]["AccessKeyId"]
    assert aws.invoke(record("CreateAccessKey", "svc-datadog", TERRAFORM, access_key_id=approved))["verdict"] == (
        "approve"
    )
    aws.iam.update_access_key(UserName="svc-datadog", AccessKeyId=approved, Status="Inactive")  # rotation, by hand
    backdoor = aws.iam.create_access_key(UserName="svc-datadog")["AccessKey"]["AccessKeyId"]
    assert aws.invoke(record("CreateAccessKey", "svc-datadog", MALLORY, access_key_id=backdoor))["verdict"] == "alert"
    aws.iam.update_access_key(UserName="svc-datadog", AccessKeyId=backdoor, Status="Active")  # the event is lost
    report = sweep(aws)
    assert ("credential_reactivated", "done") in finding_kinds(report, "svc-datadog")
    assert aws.user_state("svc-datadog")["keys"][backdoor] == "Inactive"


# -- every long-lived credential kind ----------------------------------------------------------------


def test_an_ssh_key_uploaded_for_another_user_is_deactivated_and_the_user_quarantined(aws: Aws) -> None:
    aws.iam.create_user(UserName="bob")
    ssh = aws.iam.upload_ssh_public_key(UserName="bob", SSHPublicKeyBody=SSH_BODY)["SSHPublicKey"]
    response = {"sSHPublicKey": {"userName": "bob", "sSHPublicKeyId": ssh["SSHPublicKeyId"], "status": "Active"}}
    result = aws.invoke(credential_event("UploadSSHPublicKey", "bob", MALLORY, response, sSHPublicKeyBody="..."))
    assert (result["verdict"], result["severity"]) == ("quarantine", "critical")
    [listed] = aws.iam.list_ssh_public_keys(UserName="bob")["SSHPublicKeys"]
    assert listed["Status"] == "Inactive"
    assert aws.user_state("bob")["policies"] == [POLICY]
    # reactivating it is tamper: deactivated again
    aws.iam.update_ssh_public_key(UserName="bob", SSHPublicKeyId=ssh["SSHPublicKeyId"], Status="Active")
    tamper = credential_event(
        "UpdateSSHPublicKey", "bob", MALLORY, None, sSHPublicKeyId=ssh["SSHPublicKeyId"], status="Active"
    )
    assert aws.invoke(tamper)["severity"] == "critical"
    assert aws.iam.list_ssh_public_keys(UserName="bob")["SSHPublicKeys"][0]["Status"] == "Inactive"


def test_a_signing_certificate_uploaded_by_the_user_itself_is_deactivated(aws: Aws) -> None:
    aws.iam.create_user(UserName="bob")
    cert = aws.iam.upload_signing_certificate(UserName="bob", CertificateBody=certificate_pem())["Certificate"]
    response = {"certificate": {"userName": "bob", "certificateId": cert["CertificateId"], "status": "Active"}}
    result = aws.invoke(credential_event("UploadSigningCertificate", "bob", user_identity(ACCOUNT, "bob"), response))
    assert result["verdict"] == "quarantine"
    assert aws.iam.list_signing_certificates(UserName="bob")["Certificates"][0]["Status"] == "Inactive"


def test_control_an_ssh_key_for_an_integration_user_by_its_provisioner_is_allowed(aws: Aws) -> None:
    aws.iam.create_user(UserName="svc-datadog", Path="/integrations/")
    ssh = aws.iam.upload_ssh_public_key(UserName="svc-datadog", SSHPublicKeyBody=SSH_BODY)["SSHPublicKey"]
    response = {"sSHPublicKey": {"userName": "svc-datadog", "sSHPublicKeyId": ssh["SSHPublicKeyId"]}}
    assert aws.invoke(credential_event("UploadSSHPublicKey", "svc-datadog", TERRAFORM, response))["verdict"] == (
        "approve"
    )
    assert aws.iam.list_ssh_public_keys(UserName="svc-datadog")["SSHPublicKeys"][0]["Status"] == "Active"


def test_update_login_profile_for_an_integration_user_by_an_outsider_deletes_it(aws: Aws) -> None:
    aws.iam.create_user(UserName="svc-console")
    aws.iam.create_login_profile(UserName="svc-console", Password="Correct-Horse-42!")
    result = aws.invoke(credential_event("UpdateLoginProfile", "svc-console", MALLORY, None))
    assert (result["verdict"], result["severity"]) == ("alert", "critical")
    with pytest.raises(aws.iam.exceptions.NoSuchEntityException):
        aws.iam.get_login_profile(UserName="svc-console")


# -- renames and deletions follow the user id ----------------------------------------------------------


def rename(aws: Aws, old: str, new: str, path: str = "", identity: dict = MALLORY) -> dict:
    kwargs = {"NewPath": path} if path else {}
    aws.iam.update_user(UserName=old, NewUserName=new, **kwargs)
    request = {"newUserName": new, **({"newPath": path} if path else {})}
    return aws.invoke(credential_event("UpdateUser", old, identity, None, **request))


def test_a_quarantined_user_renamed_into_an_integration_stays_quarantined(aws: Aws) -> None:
    aws.iam.create_user(UserName="evil")
    aws.invoke(record("CreateUser", "evil", MALLORY))
    aws.iam.detach_user_policy(UserName="evil", PolicyArn=POLICY_ARN)  # and the event is lost
    result = rename(aws, "evil", "svc-datadog", "/integrations/")
    assert (result["verdict"], result["severity"]) == ("quarantine", "critical")
    assert "a rename is not a creation by a provisioner" in result["reason"]
    assert aws.user_state("svc-datadog")["policies"] == [POLICY]
    records = {r["sk"]: r for r in aws.items("USER")}
    assert f"{ACCOUNT}#evil" not in records and records[f"{ACCOUNT}#svc-datadog"]["renamed_from"] == "evil"
    assert len(aws.slack.requests) == 2
    # and the sweep keeps it so
    assert finding_kinds(sweep(aws), "svc-datadog") == []


def test_control_an_integration_user_renamed_within_its_integration_stays_approved(aws: Aws) -> None:
    aws.iam.create_user(UserName="svc-datadog", Path="/integrations/")
    aws.invoke(record("CreateUser", "svc-datadog", TERRAFORM, path="/integrations/"))
    result = rename(aws, "svc-datadog", "svc-datadog-eu", identity=TERRAFORM)
    assert result["verdict"] == "approve"
    assert aws.user_state("svc-datadog-eu")["policies"] == []


def test_a_deleted_users_exception_does_not_pass_to_a_new_user_of_that_name(aws: Aws) -> None:
    store_slack_secret(aws)
    aws.iam.create_user(UserName="contractor")
    raw = record("CreateUser", "contractor", MALLORY)
    aws.invoke(raw)
    assert click(aws, "guardrail_approve_7", {"a": ACCOUNT, "u": "contractor", "e": raw["eventID"]}) == 200
    assert aws.user_state("contractor")["policies"] == []
    aws.iam.delete_user(UserName="contractor")  # DeleteUser's event is lost: the exception item stays active
    aws.iam.create_user(UserName="contractor")
    result = aws.invoke(record("CreateUser", "contractor", MALLORY))
    assert result["verdict"] == "quarantine"
    assert aws.user_state("contractor")["policies"] == [POLICY]
    # tamper on the new user is reverted, although an exception of that name is still on file
    aws.iam.detach_user_policy(UserName="contractor", PolicyArn=POLICY_ARN)
    detach = credential_event("DetachUserPolicy", "contractor", MALLORY, None, policyArn=POLICY_ARN)
    assert aws.invoke(detach)["verdict"] == "alert"
    assert aws.user_state("contractor")["policies"] == [POLICY]


def test_delete_user_closes_the_record_and_the_exception(aws: Aws) -> None:
    store_slack_secret(aws)
    aws.iam.create_user(UserName="contractor")
    raw = record("CreateUser", "contractor", MALLORY)
    aws.invoke(raw)
    click(aws, "guardrail_approve_7", {"a": ACCOUNT, "u": "contractor", "e": raw["eventID"]})
    aws.iam.delete_user(UserName="contractor")
    assert aws.invoke(credential_event("DeleteUser", "contractor", TERRAFORM, None))["verdict"] == "ignore"
    [exception] = aws.items("EXCEPTION")
    [user_record] = aws.items("USER")
    assert exception["state"] == "closed" and user_record["status"] == "deleted"


# -- exceptions cover one user, and only what its owner makes ------------------------------------------


def approved_bob(aws: Aws) -> tuple[str, str]:
    """bob quarantined for a key he made, then a backdoor key by mallory under another alert; the
    first alert is approved in Slack. Returns (bob's key, the backdoor key)."""
    store_slack_secret(aws)
    aws.iam.create_user(UserName="bob")
    own = aws.iam.create_access_key(UserName="bob")["AccessKey"]["AccessKeyId"]
    first = record("CreateAccessKey", "bob", user_identity(ACCOUNT, "bob"), access_key_id=own)
    assert aws.invoke(first)["verdict"] == "quarantine"
    backdoor = aws.iam.create_access_key(UserName="bob")["AccessKey"]["AccessKeyId"]
    assert aws.invoke(record("CreateAccessKey", "bob", MALLORY, access_key_id=backdoor))["verdict"] == "quarantine"
    assert click(aws, "guardrail_approve_7", {"a": ACCOUNT, "u": "bob", "e": first["eventID"]}) == 200
    return own, backdoor


def test_approve_reactivates_only_the_keys_of_the_approved_alert(aws: Aws) -> None:
    own, backdoor = approved_bob(aws)
    keys = aws.user_state("bob")["keys"]
    assert keys == {own: "Active", backdoor: "Inactive"}
    assert aws.user_state("bob")["tags"]["guardrail:approved-by"] == f"slack:{APPROVER}"
    # and reactivating the backdoor key during the exception is still reverted
    aws.iam.update_access_key(UserName="bob", AccessKeyId=backdoor, Status="Active")
    reactivate = credential_event("UpdateAccessKey", "bob", MALLORY, None, accessKeyId=backdoor, status="Active")
    assert aws.invoke(reactivate)["verdict"] == "alert"
    assert aws.user_state("bob")["keys"][backdoor] == "Inactive"


def test_during_an_exception_a_key_made_by_someone_else_is_a_backdoor(aws: Aws) -> None:
    _, backdoor = approved_bob(aws)
    aws.iam.delete_access_key(UserName="bob", AccessKeyId=backdoor)  # IAM allows two keys a user
    aws.slack.clear()
    key = aws.iam.create_access_key(UserName="bob")["AccessKey"]["AccessKeyId"]
    result = aws.invoke(record("CreateAccessKey", "bob", DEVELOPER, access_key_id=key))
    assert (result["verdict"], result["severity"]) == ("alert", "critical")
    assert aws.user_state("bob")["keys"][key] == "Inactive"
    assert aws.user_state("bob")["policies"] == []  # the exception itself stands


def test_control_during_an_exception_the_user_may_rotate_its_own_key(aws: Aws) -> None:
    own, _ = approved_bob(aws)
    aws.iam.delete_access_key(UserName="bob", AccessKeyId=own)  # rotation: the old key goes
    key = aws.iam.create_access_key(UserName="bob")["AccessKey"]["AccessKeyId"]
    result = aws.invoke(record("CreateAccessKey", "bob", user_identity(ACCOUNT, "bob"), access_key_id=key))
    assert result["verdict"] == "approve" and f"approved by slack:{APPROVER}" in result["reason"]
    assert aws.user_state("bob")["keys"][key] == "Active"


# -- self-approval --------------------------------------------------------------------------------------


def test_rest_self_approval_from_a_new_session_of_the_requesters_role_is_refused(aws: Aws) -> None:
    aws.iam.create_user(UserName="alice")
    admin = role_identity(ACCOUNT, "security-admin", "ops@example.com")
    aws.invoke(record("CreateUser", "alice", admin))
    other_session = "arn:aws:sts::123456789012:assumed-role/security-admin/another-session"
    status, body = api("POST", "/exceptions", caller=other_session, body=grant("alice"))
    assert status == 403 and body["field"] == "approver"
    assert aws.user_state("alice")["policies"] == [POLICY]


def test_control_another_approver_role_may_approve(aws: Aws) -> None:
    aws.iam.create_user(UserName="alice")
    aws.invoke(record("CreateUser", "alice", DEVELOPER))
    status, _ = api("POST", "/exceptions", caller=SECURITY_ADMIN, body=grant("alice"))
    assert status == 201 and aws.user_state("alice")["policies"] == []


def grant(user: str) -> dict[str, Any]:
    return {"account": ACCOUNT, "user": user, "days": 7, "reason": "vendor pilot", "ticket": "SEC-9"}


def test_without_a_bot_token_the_alert_says_self_approval_cannot_be_checked(aws: Aws) -> None:
    aws.iam.create_user(UserName="alice")
    aws.invoke(record("CreateUser", "alice", DEVELOPER))
    [alert] = aws.slack.requests
    texts = [e["text"] for b in alert["json"]["blocks"] if b["type"] == "context" for e in b["elements"]]
    assert any("Self-approval cannot be checked" in t for t in texts)


def test_a_failed_email_lookup_with_a_bot_token_refuses_the_approval(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    store_slack_secret(aws, bot_token="xoxb-test", channel="C0SEC")
    monkeypatch.setenv("GUARDRAIL_SLACK_API_URL", aws.slack.url + "/api/")
    aws.slack.api_responses["/api/users.info"] = {"ok": False, "error": "missing_scope"}
    aws.iam.create_user(UserName="alice")
    raw = record("CreateUser", "alice", DEVELOPER)
    aws.invoke(raw)
    assert click(aws, "guardrail_approve_7", {"a": ACCOUNT, "u": "alice", "e": raw["eventID"]}) == 200
    assert "self-approval cannot be ruled out" in replies(aws)[-1]["text"]
    assert aws.user_state("alice")["policies"] == [POLICY]


def test_self_approval_is_linked_through_an_email_tag_on_the_requesting_iam_user(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_slack_secret(aws, bot_token="xoxb-test", channel="C0SEC")
    monkeypatch.setenv("GUARDRAIL_SLACK_API_URL", aws.slack.url + "/api/")
    aws.iam.create_user(UserName="mallory", Tags=[{"Key": "email", "Value": "Mal@Example.com"}])
    aws.slack.api_responses["/api/users.info"] = {
        "ok": True,
        "user": {"id": APPROVER, "profile": {"email": "mal@example.com"}},
    }
    aws.iam.create_user(UserName="alice")
    raw = record("CreateUser", "alice", MALLORY)
    aws.invoke(raw)
    assert click(aws, "guardrail_approve_7", {"a": ACCOUNT, "u": "alice", "e": raw["eventID"]}) == 200
    assert "someone else must decide" in replies(aws)[-1]["text"]
    assert aws.user_state("alice")["policies"] == [POLICY]


# -- smaller holes ----------------------------------------------------------------------------------


def test_create_access_key_without_response_elements_still_deactivates_the_new_key(aws: Aws) -> None:
    aws.iam.create_user(UserName="bob")
    key = aws.iam.create_access_key(UserName="bob")["AccessKey"]["AccessKeyId"]
    raw = record("CreateAccessKey", "bob", MALLORY)
    raw["eventTime"] = raw["eventTime"][:11] + "00:00:00Z"  # the key is created after the event's second
    raw["responseElements"] = None
    result = aws.invoke(raw)
    assert result["verdict"] == "quarantine"
    assert aws.user_state("bob")["keys"] == {key: "Inactive"}
    assert any(r.startswith(f"deactivate_key bob/{key}: done") for r in result["results"])


def test_a_key_that_cannot_be_identified_is_never_claimed_as_deactivated(aws: Aws) -> None:
    aws.iam.create_user(UserName="bob")
    raw = record("CreateAccessKey", "bob", MALLORY)
    raw["responseElements"] = None
    result = aws.invoke(raw)
    assert any("not_identified" in r for r in result["results"])
    text = str(aws.slack.requests[0]["json"])
    assert "not_identified" in text and "deactivate_key bob: done" not in text


def test_reactivating_a_key_under_another_spelling_of_the_user_name_is_reverted(aws: Aws) -> None:
    aws.iam.create_user(UserName="bob")
    key = aws.iam.create_access_key(UserName="bob")["AccessKey"]["AccessKeyId"]
    aws.invoke(record("CreateAccessKey", "bob", MALLORY, access_key_id=key))
    aws.iam.update_access_key(UserName="bob", AccessKeyId=key, Status="Active")
    reactivate = credential_event("UpdateAccessKey", "BOB", MALLORY, None, accessKeyId=key, status="Active")
    assert aws.invoke(reactivate)["verdict"] == "alert"
    assert aws.user_state("bob")["keys"][key] == "Inactive"


def test_a_case_variant_guardrail_tag_is_restored(aws: Aws) -> None:
    aws.iam.create_user(UserName="bob")
    aws.invoke(record("CreateUser", "bob", MALLORY))
    aws.iam.tag_user(UserName="bob", Tags=[{"Key": "guardrail:status", "Value": "approved"}])
    tag = credential_event("TagUser", "bob", MALLORY, None, tags=[{"key": "Guardrail:Status", "value": "approved"}])
    assert aws.invoke(tag)["verdict"] == "alert"
    assert aws.user_state("bob")["tags"]["guardrail:status"] == "quarantined"


def test_an_envelope_whose_account_disagrees_with_the_record_is_rejected(aws: Aws) -> None:
    aws.iam.create_user(UserName="alice")
    wrapped = envelope(record("CreateUser", "alice", DEVELOPER))
    wrapped["account"] = "999999999999"
    result = aws.invoke(wrapped, wrap=False)
    assert result["status"] == "rejected" and "disagree" in result["reason"]


def test_a_failed_create_user_of_an_existing_name_does_not_wipe_its_record(aws: Aws) -> None:
    aws.iam.create_user(UserName="bob")
    key = aws.iam.create_access_key(UserName="bob")["AccessKey"]["AccessKeyId"]
    aws.invoke(record("CreateAccessKey", "bob", MALLORY, access_key_id=key))
    refused = record("CreateUser", "bob", MALLORY, error_code="EntityAlreadyExists")
    assert aws.invoke(refused)["verdict"] == "ignore"
    aws.iam.update_access_key(UserName="bob", AccessKeyId=key, Status="Active")
    reactivate = credential_event("UpdateAccessKey", "bob", MALLORY, None, accessKeyId=key, status="Active")
    assert aws.invoke(reactivate)["verdict"] == "alert"
    assert aws.user_state("bob")["keys"][key] == "Inactive"


def test_a_failed_rename_does_not_move_the_record(aws: Aws) -> None:
    aws.iam.create_user(UserName="evil")
    aws.invoke(record("CreateUser", "evil", MALLORY))
    refused = credential_event("UpdateUser", "evil", MALLORY, None, newUserName="svc-datadog")
    refused["errorCode"] = "AccessDenied"
    assert aws.invoke(refused)["verdict"] == "ignore"
    assert [r["sk"] for r in aws.items("USER")] == [f"{ACCOUNT}#evil"]
