"""The guardrail's own parts against moto server: the quarantine policy stays deny-all (event path,
sweep, bootstrap) and changes to the guardrail's roles are alerted, through the real handler."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from chalicelib import runtime
from chalicelib.bootstrap import bootstrap
from chalicelib.cli import main
from chalicelib.constants import QUARANTINE_POLICY_DOCUMENT
from chalicelib.guardrail import ActionFailedError
from devtools.synth import cloudtrail_record, role_identity
from tests.functional.conftest import STAGE_ENV, Aws
from tests.functional.test_accounts import member_iam
from tests.helpers import ACCOUNT, DEVELOPER, GUARDRAIL_ROLE, MALLORY, OTHER_ACCOUNT, TERRAFORM, record

POLICY = "iam-user-guardrail-quarantine"
POLICY_ARN = f"arn:aws:iam::{ACCOUNT}:policy/{POLICY}"
ALLOW_ALL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


def own_part_event(
    name: str, request: dict[str, Any], identity: dict[str, Any] = MALLORY, **kwargs: Any
) -> dict[str, Any]:
    raw = cloudtrail_record(name, user="", identity=identity, **kwargs)
    raw["requestParameters"] = request
    raw["responseElements"] = None
    return raw


def default_document(iam: Any, arn: str = POLICY_ARN) -> Any:
    default = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    return iam.get_policy_version(PolicyArn=arn, VersionId=default)["PolicyVersion"]["Document"]


def effective_documents(aws: Aws, user: str) -> list[Any]:
    """The default document of every managed policy attached to `user` (what IAM evaluates)."""
    attached = aws.iam.list_attached_user_policies(UserName=user)["AttachedPolicies"]
    return [default_document(aws.iam, p["PolicyArn"]) for p in attached]


def tamper_policy(iam: Any, arn: str = POLICY_ARN, *, set_default: bool = True) -> tuple[dict[str, Any], str]:
    """What the attacker runs: a permissive version (made the default); returns the event's request."""
    version = iam.create_policy_version(PolicyArn=arn, PolicyDocument=json.dumps(ALLOW_ALL), SetAsDefault=set_default)
    request = {"policyArn": arn, "policyDocument": json.dumps(ALLOW_ALL), "setAsDefault": set_default}
    return request, version["PolicyVersion"]["VersionId"]


def quarantined_bob(aws: Aws) -> None:
    aws.iam.create_user(UserName="bob")
    assert aws.invoke(record("CreateUser", "bob", DEVELOPER))["verdict"] == "quarantine"
    aws.slack.clear()
    aws.calls.clear()


def version_ids(iam: Any, arn: str = POLICY_ARN) -> list[str]:
    return [v["VersionId"] for v in iam.list_policy_versions(PolicyArn=arn)["Versions"]]


# -- the event path ---------------------------------------------------------------------------------


def test_permissive_default_version_is_restored_and_alerted(aws: Aws) -> None:
    quarantined_bob(aws)
    request, _ = tamper_policy(aws.iam)
    assert effective_documents(aws, "bob") == [ALLOW_ALL]  # the attack works: bob is free
    users_before = aws.items("USER")
    result = aws.invoke(own_part_event("CreatePolicyVersion", request))
    assert (result["verdict"], result["severity"]) == ("alert", "critical")
    assert result["results"][0].startswith(f"restore_quarantine_policy {POLICY_ARN}: done")
    assert default_document(aws.iam) == QUARANTINE_POLICY_DOCUMENT
    assert effective_documents(aws, "bob") == [QUARANTINE_POLICY_DOCUMENT]  # quarantined again
    assert len(version_ids(aws.iam)) == 1  # the attacker's version is gone: it cannot be set as default again
    [message] = aws.slack.messages
    text = json.dumps(message)
    assert message["blocks"][0]["text"]["text"] == f"Guardrail's own policy changed: {POLICY_ARN}"
    assert "CRITICAL" in text and "arn:aws:iam::123456789012:user/mallory" in text
    assert f"`{POLICY_ARN}`" in text
    assert not [b for b in message["blocks"] if b["type"] == "actions"]  # no Approve buttons for a policy
    assert aws.items("USER") == users_before  # no user record for a policy event
    audit = [a for a in aws.items("AUDIT") if a["event_name"] == "CreatePolicyVersion"]
    assert [a["target"] for a in audit] == [f"policy: {POLICY_ARN}"]


def test_set_default_to_an_old_permissive_version_is_restored(aws: Aws) -> None:
    quarantined_bob(aws)
    _, staged = tamper_policy(aws.iam, set_default=False)  # staged earlier, harmless while not default
    aws.iam.set_default_policy_version(PolicyArn=POLICY_ARN, VersionId=staged)
    result = aws.invoke(own_part_event("SetDefaultPolicyVersion", {"policyArn": POLICY_ARN, "versionId": staged}))
    assert result["severity"] == "critical" and "done" in result["results"][0]
    assert default_document(aws.iam) == QUARANTINE_POLICY_DOCUMENT
    assert staged not in version_ids(aws.iam)
    assert len(aws.slack.messages) == 1


def test_a_full_version_list_is_made_room_in(aws: Aws) -> None:
    for _ in range(3):
        tamper_policy(aws.iam, set_default=False)
    request, _ = tamper_policy(aws.iam)  # five versions: IAM's limit
    assert len(version_ids(aws.iam)) == 5
    aws.invoke(own_part_event("CreatePolicyVersion", request))
    assert default_document(aws.iam) == QUARANTINE_POLICY_DOCUMENT
    assert len(version_ids(aws.iam)) == 1


@pytest.mark.parametrize(
    "arn",
    [
        f"arn:aws:iam::{ACCOUNT}:policy/x/{POLICY}",  # same name at another path
        f"arn:aws:iam::{OTHER_ACCOUNT}:policy/{POLICY}",  # another account's policy
        f"arn:aws:iam::{ACCOUNT}:policy/{POLICY}-old",
    ],
)
def test_another_policy_is_not_the_quarantine_policy(aws: Aws, arn: str) -> None:
    result = aws.invoke(own_part_event("CreatePolicyVersion", {"policyArn": arn, "setAsDefault": True}))
    assert (result["verdict"], result["results"]) == ("ignore", [])
    assert aws.calls == {"dynamodb.BatchGetItem": 1, "dynamodb.TransactWriteItems": 1}
    assert aws.slack.messages == []


def test_the_guardrails_own_restore_event_does_not_loop(aws: Aws) -> None:
    request, tampered = tamper_policy(aws.iam)
    aws.invoke(own_part_event("CreatePolicyVersion", request))
    [restored] = version_ids(aws.iam)
    aws.slack.clear()
    aws.calls.clear()
    own = [
        own_part_event(
            "CreatePolicyVersion",
            {"policyArn": POLICY_ARN, "policyDocument": json.dumps(QUARANTINE_POLICY_DOCUMENT), "setAsDefault": True},
            GUARDRAIL_ROLE,
        ),
        own_part_event("DeletePolicyVersion", {"policyArn": POLICY_ARN, "versionId": tampered}, GUARDRAIL_ROLE),
    ]
    for raw in own:
        result = aws.invoke(raw)
        assert result["verdict"] == "ignore"
        assert result["results"] == [
            f"restore_quarantine_policy {POLICY_ARN}: intact (default version {restored} is deny-all)"
        ]
    assert aws.calls["iam.CreatePolicyVersion"] == 0 and aws.calls["iam.GetPolicy"] == 2
    assert version_ids(aws.iam) == [restored]
    assert aws.slack.messages == []
    assert (
        len([a for a in aws.items("AUDIT") if a["event_name"] in ("CreatePolicyVersion", "DeletePolicyVersion")]) == 3
    )


def test_the_guardrails_own_role_is_no_bypass(aws: Aws) -> None:
    """An event that looks like the guardrail's own still has the live policy checked."""
    request, _ = tamper_policy(aws.iam)
    result = aws.invoke(own_part_event("CreatePolicyVersion", request, GUARDRAIL_ROLE))
    assert "done" in result["results"][0]
    assert (result["verdict"], result["severity"]) == ("alert", "critical")  # a restore is always alerted
    assert default_document(aws.iam) == QUARANTINE_POLICY_DOCUMENT
    [message] = aws.slack.messages
    assert "CRITICAL" in json.dumps(message) and "not deny-all: restored" in json.dumps(message)


def test_an_intact_policy_still_alerts_on_someone_elses_version_change(aws: Aws) -> None:
    request, staged = tamper_policy(aws.iam, set_default=False)
    result = aws.invoke(own_part_event("CreatePolicyVersion", request, TERRAFORM))
    assert result["severity"] == "critical" and "intact" in result["results"][0]
    assert staged in version_ids(aws.iam)  # nothing to restore; the alert names the call
    assert "CreatePolicyVersion" in json.dumps(aws.slack.messages[0])
    assert aws.calls["iam.CreatePolicyVersion"] == 0


def test_failed_call_changes_nothing(aws: Aws) -> None:
    raw = own_part_event(
        "CreatePolicyVersion", {"policyArn": POLICY_ARN, "setAsDefault": True}, error_code="AccessDenied"
    )
    result = aws.invoke(raw)
    assert (result["verdict"], result["results"]) == ("ignore", [])
    assert aws.calls == {"dynamodb.BatchGetItem": 1, "dynamodb.TransactWriteItems": 1}
    assert aws.slack.messages == []


def test_monitor_mode_alerts_only(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARDRAIL_MODE", "monitor")
    runtime.reset()
    request, _ = tamper_policy(aws.iam)
    result = aws.invoke(own_part_event("CreatePolicyVersion", request))
    assert (result["severity"], result["mode"], result["results"]) == ("critical", "monitor", [])
    assert default_document(aws.iam) == ALLOW_ALL
    assert not [c for c in aws.calls if c.startswith("iam.")]
    [message] = aws.slack.messages
    assert "monitor mode changes nothing" in json.dumps(message)


def test_member_account_policy_is_restored_through_the_remediation_role(aws: Aws) -> None:
    member = member_iam()
    bootstrap_member = f"arn:aws:iam::{OTHER_ACCOUNT}:policy/{POLICY}"
    member.create_policy(PolicyName=POLICY, PolicyDocument=json.dumps(QUARANTINE_POLICY_DOCUMENT))
    request, _ = tamper_policy(member, bootstrap_member)
    developer = role_identity(OTHER_ACCOUNT, "AWSReservedSSO_Developer_1", "dev@example.com")
    result = aws.invoke(own_part_event("CreatePolicyVersion", request, developer, account=OTHER_ACCOUNT))
    assert "done" in result["results"][0] and aws.calls["sts.AssumeRole"] == 1
    assert default_document(member, bootstrap_member) == QUARANTINE_POLICY_DOCUMENT
    assert default_document(aws.iam) == QUARANTINE_POLICY_DOCUMENT  # home untouched


# -- the guardrail's roles ---------------------------------------------------------------------------


def test_inline_policy_on_the_remediation_role_is_alerted_escaped(aws: Aws) -> None:
    aws.iam.create_role(RoleName="GuardrailRemediationRole", AssumeRolePolicyDocument=json.dumps(ALLOW_ALL))
    document = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "iam:*",
                "Resource": "*",
                "Condition": {"StringLike": {"aws:userid": "<!channel>"}},
            }
        ],
    }
    aws.iam.put_role_policy(RoleName="GuardrailRemediationRole", PolicyName="x", PolicyDocument=json.dumps(document))
    request = {"roleName": "GuardrailRemediationRole", "policyName": "x", "policyDocument": json.dumps(document)}
    result = aws.invoke(own_part_event("PutRolePolicy", request))
    assert (result["verdict"], result["severity"], result["results"]) == ("alert", "critical", [])
    [message] = aws.slack.messages
    text = json.dumps(message)
    assert message["blocks"][0]["text"]["text"] == "Guardrail's own role changed: GuardrailRemediationRole"
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text
    assert '"iam:*"' in text.replace('\\"', '"')  # the document is shown
    assert not [b for b in message["blocks"] if b["type"] == "actions"]
    assert aws.items("USER") == []


@pytest.mark.parametrize(
    ("name", "request_parameters"),
    [
        (
            "AttachRolePolicy",
            {"roleName": "iam-user-guardrail-dev-sweep", "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"},
        ),
        ("UpdateAssumeRolePolicy", {"roleName": "guardrailremediationrole", "policyDocument": json.dumps(ALLOW_ALL)}),
        ("DetachRolePolicy", {"roleName": "GuardrailRemediationRole", "policyArn": "arn:aws:iam::aws:policy/ReadOnly"}),
        ("DeleteRolePolicy", {"roleName": "GuardrailRemediationRole", "policyName": "iam-user-guardrail-remediation"}),
        (
            "PutRolePermissionsBoundary",
            {"roleName": "GuardrailRemediationRole", "permissionsBoundary": "arn:aws:iam::123456789012:policy/deny"},
        ),
        ("DeleteRolePermissionsBoundary", {"roleName": "iam-user-guardrail-dev-sweep"}),
    ],
)
def test_every_change_to_a_guardrail_role_is_alerted(aws: Aws, name: str, request_parameters: dict) -> None:
    result = aws.invoke(own_part_event(name, request_parameters, TERRAFORM))
    assert (result["verdict"], result["severity"]) == ("alert", "critical")
    assert len(aws.slack.messages) == 1


def test_other_roles_are_not_the_guardrails(aws: Aws) -> None:
    request = {"roleName": "app-role", "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"}
    assert aws.invoke(own_part_event("AttachRolePolicy", request))["verdict"] == "ignore"
    failed = own_part_event(
        "AttachRolePolicy", {**request, "roleName": "GuardrailRemediationRole"}, error_code="AccessDenied"
    )
    assert aws.invoke(failed)["verdict"] == "ignore"
    assert aws.slack.messages == []


# -- the sweep and bootstrap ---------------------------------------------------------------------------


def test_missed_event_the_sweep_restores_and_alerts(aws: Aws) -> None:
    quarantined_bob(aws)
    tamper_policy(aws.iam)  # no event is delivered
    result = aws.invoke_sweep()
    [finding] = [f for f in result["findings"] if f["finding"] == "quarantine_policy_tampered"]
    assert (finding["severity"], finding["result"], finding["account"]) == ("critical", "done", ACCOUNT)
    assert effective_documents(aws, "bob") == [QUARANTINE_POLICY_DOCUMENT]
    titles = [m["blocks"][0]["text"]["text"] for m in aws.slack.messages]
    assert titles[0] == "Quarantine policy tampered"
    assert "Sweep: the guardrail acted on missed changes" not in titles  # one alert for one change
    assert [a for a in aws.items("AUDIT") if a.get("kind") == "sweep_restore_quarantine_policy"]
    aws.slack.clear()
    second = aws.invoke_sweep()
    assert not [f for f in second["findings"] if f["finding"] == "quarantine_policy_tampered"]
    assert aws.slack.messages == []


def test_sweep_in_monitor_mode_reports_and_alerts_but_does_not_restore(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GUARDRAIL_MODE", "monitor")
    runtime.reset()
    tamper_policy(aws.iam)
    result = aws.invoke_sweep()
    [finding] = [f for f in result["findings"] if f["finding"] == "quarantine_policy_tampered"]
    assert finding["result"] == "not done (dry run or monitor mode)"
    assert default_document(aws.iam) == ALLOW_ALL
    assert aws.slack.messages[0]["blocks"][0]["text"]["text"] == "Quarantine policy tampered"


def test_bootstrap_restores_a_tampered_policy(aws: Aws, capsys: pytest.CaptureFixture[str]) -> None:
    def run() -> str:
        return bootstrap(
            iam=boto3.client("iam"),
            dynamodb=aws.ddb,
            sts=boto3.client("sts"),
            table=aws.table,
            policy_name=STAGE_ENV["GUARDRAIL_QUARANTINE_POLICY_NAME"],
        )["policy"]

    assert run() == f"{POLICY_ARN}: exists"
    tamper_policy(aws.iam)
    assert main(["bootstrap"]) == 0
    assert f"policy: {POLICY_ARN}: restored" in capsys.readouterr().out
    assert default_document(aws.iam) == QUARANTINE_POLICY_DOCUMENT
    assert run() == f"{POLICY_ARN}: exists"


# -- failures are loud, and never skip a quarantine ------------------------------------------------------


def test_a_check_that_cannot_read_the_policy_alerts_and_is_retried(aws: Aws) -> None:
    request, _ = tamper_policy(aws.iam)
    aws.refuse["GetPolicy"] = "AccessDenied"  # e.g. a member account whose StackSet was not updated
    raw = own_part_event("CreatePolicyVersion", request)
    with pytest.raises(ActionFailedError, match="AccessDenied"):
        aws.invoke(raw)
    assert "restore_quarantine_policy" in json.dumps(aws.slack.messages[0])
    assert aws.items(f"EVENT#{raw['eventID']}") == []  # not recorded: Lambda's retry checks again
    aws.refuse.clear()
    assert "done" in aws.invoke(raw)["results"][0]
    assert default_document(aws.iam) == QUARANTINE_POLICY_DOCUMENT


def test_sweep_that_cannot_check_the_policy_still_judges_users_and_says_so(aws: Aws) -> None:
    aws.iam.create_user(UserName="newcomer")
    aws.refuse["GetPolicy"] = "AccessDenied"
    result = aws.invoke_sweep()
    assert [f["user"] for f in result["findings"]] == ["newcomer"]
    assert aws.user_state("newcomer")["policies"] == [POLICY]
    assert any("quarantine policy" in e and "AccessDenied" in e for e in result["errors"])
    assert "Sweep incomplete" in [m["blocks"][0]["text"]["text"] for m in aws.slack.messages]
