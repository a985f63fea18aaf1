"""Principal globs against moto, through the real handler and REST routes: the path is part of a
principal's identity, and no wildcard stretches across ':' or '/' (issue 9)."""

from __future__ import annotations

import boto3
import pytest

from chalicelib import runtime
from devtools.synth import role_identity, user_identity
from tests.functional.approval_helpers import api
from tests.functional.conftest import TRUST_ACCOUNT, Aws
from tests.functional.test_accounts import member_iam
from tests.helpers import ACCOUNT, ALLOWLIST_YAML, MALLORY, OTHER_ACCOUNT, TERRAFORM, record

POLICY = "iam-user-guardrail-quarantine"
SSO_PATH = "/aws-reserved/sso.amazonaws.com/"
SSO_GLOB = f"arn:aws:iam::*:role{SSO_PATH}AWSReservedSSO_SecurityAdmin_*"
GRANT = {"account": ACCOUNT, "user": "bob", "days": 3, "reason": "vendor migration"}


def issuer_role(aws: Aws, name: str, path: str = "/", iam: boto3.client = None) -> dict:
    """Create a role in moto and return the CloudTrail identity of one of its sessions."""
    role = (iam or aws.iam).create_role(RoleName=name, Path=path, AssumeRolePolicyDocument=TRUST_ACCOUNT)["Role"]
    account = role["Arn"].split(":")[4]
    identity = role_identity(account, name, "session-1", path=path)
    identity["sessionContext"]["sessionIssuer"]["principalId"] = role["RoleId"]
    assert identity["sessionContext"]["sessionIssuer"]["arn"] == role["Arn"]
    return identity


def created_integration_user(aws: Aws, identity: dict) -> dict:
    aws.iam.create_user(UserName="svc-console")  # integration 'console-vendor', created_by: provisioners
    return aws.invoke(record("CreateUser", "svc-console", identity))


def state(aws: Aws) -> tuple[list[str], str]:
    current = aws.user_state("svc-console")
    return current["policies"], current["tags"].get("guardrail:status", "")


# -- provisioners: a look-alike at a path with ':' is not the provisioner --------------------------


def test_a_role_at_path_x_colon_role_named_like_the_provisioner_is_not_one(aws: Aws) -> None:
    lookalike = issuer_role(aws, "terraform-deployer", path="/x:role/")
    assert lookalike["sessionContext"]["sessionIssuer"]["arn"].endswith(":role/x:role/terraform-deployer")
    result = created_integration_user(aws, lookalike)
    assert (result["verdict"], result["severity"]) == ("quarantine", "high")
    assert state(aws) == ([POLICY], "quarantined")
    assert len(aws.slack.messages) == 1


def test_an_iam_user_at_path_x_colon_role_named_like_the_provisioner_is_not_one(aws: Aws) -> None:
    user = aws.iam.create_user(UserName="terraform-deployer", Path="/x:role/")["User"]
    assert user["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/x:role/terraform-deployer"
    identity = {**user_identity(ACCOUNT, "terraform-deployer"), "arn": user["Arn"]}
    result = created_integration_user(aws, identity)
    assert result["verdict"] == "quarantine"
    assert state(aws) == ([POLICY], "quarantined")


def test_control_the_real_provisioner_is_approved(aws: Aws) -> None:
    result = created_integration_user(aws, TERRAFORM)
    assert result["verdict"] == "approve"
    assert state(aws) == ([], "approved")
    assert aws.slack.messages == []


# -- REST approvers: the caller's role is read with its path ----------------------------------------


@pytest.fixture
def sso_approvers(aws: Aws) -> Aws:
    """Approvers are the SSO SecurityAdmin permission set; bob is quarantined."""
    aws.write_allowlist(ALLOWLIST_YAML.replace('"arn:aws:iam::*:role/security-admin"', f'"{SSO_GLOB}"'))
    aws.iam.create_user(UserName="bob")
    assert aws.invoke(record("CreateUser", "bob", MALLORY))["verdict"] == "quarantine"
    aws.slack.clear()
    return aws


def session_arn(account: str, role: str, session: str = "ann@example.com") -> str:
    return f"arn:aws:sts::{account}:assumed-role/{role}/{session}"


def test_rest_role_named_like_the_sso_admin_at_path_slash_is_refused(sso_approvers: Aws) -> None:
    aws = sso_approvers
    issuer_role(aws, "AWSReservedSSO_SecurityAdmin_evil")
    status, answer = api(
        "POST", "/exceptions", caller=session_arn(ACCOUNT, "AWSReservedSSO_SecurityAdmin_evil"), body=GRANT
    )
    assert status == 403 and "approvers.iam_principals" in answer["error"]
    assert api("GET", "/exceptions", caller=session_arn(ACCOUNT, "AWSReservedSSO_SecurityAdmin_evil"))[0] == 403
    assert aws.user_state("bob")["policies"] == [POLICY]


def test_rest_control_the_sso_admin_at_the_real_sso_path_is_allowed(sso_approvers: Aws) -> None:
    aws = sso_approvers
    issuer_role(aws, "AWSReservedSSO_SecurityAdmin_0a1b2c", path=SSO_PATH)
    aws._instrument()
    caller = session_arn(ACCOUNT, "AWSReservedSSO_SecurityAdmin_0a1b2c")
    status, granted = api("POST", "/exceptions", caller=caller, body=GRANT)
    assert status == 201, granted
    assert granted["approver"] == caller  # the session, for the audit trail
    assert aws.user_state("bob")["policies"] == []
    assert api("GET", "/exceptions", caller=caller)[0] == 200
    assert aws.calls["iam.GetRole"] == 1  # cached per container


def test_rest_caller_whose_role_cannot_be_read_is_refused(sso_approvers: Aws) -> None:
    aws = sso_approvers
    issuer_role(aws, "AWSReservedSSO_SecurityAdmin_0a1b2c", path=SSO_PATH)
    aws._instrument()
    aws.refuse["GetRole"] = "AccessDenied"
    caller = session_arn(ACCOUNT, "AWSReservedSSO_SecurityAdmin_0a1b2c")
    status, answer = api("POST", "/exceptions", caller=caller, body=GRANT)
    assert status == 403
    assert (
        "cannot read role AWSReservedSSO_SecurityAdmin_0a1b2c" in answer["error"] and "AccessDenied" in answer["error"]
    )
    assert aws.user_state("bob")["policies"] == [POLICY]
    # a failure is not cached: once IAM answers, the same caller is allowed
    aws.refuse.clear()
    assert api("POST", "/exceptions", caller=caller, body=GRANT)[0] == 201


def test_rest_caller_without_a_role_is_refused(sso_approvers: Aws) -> None:
    status, answer = api("GET", "/exceptions", caller=session_arn(ACCOUNT, "AWSReservedSSO_SecurityAdmin_gone"))
    assert status == 403 and "NoSuchEntity" in answer["error"]


def test_rest_caller_from_a_member_account_is_read_there(sso_approvers: Aws) -> None:
    aws = sso_approvers
    member = member_iam()
    issuer_role(aws, "AWSReservedSSO_SecurityAdmin_0a1b2c", path=SSO_PATH, iam=member)
    issuer_role(aws, "AWSReservedSSO_SecurityAdmin_evil", iam=member)
    aws._instrument()
    assert api("GET", "/exceptions", caller=session_arn(OTHER_ACCOUNT, "AWSReservedSSO_SecurityAdmin_0a1b2c"))[0] == 200
    assert api("GET", "/exceptions", caller=session_arn(OTHER_ACCOUNT, "AWSReservedSSO_SecurityAdmin_evil"))[0] == 403
    # read in the member account through its remediation role (whose calls are not counted here), never at home
    assert (aws.calls["sts.AssumeRole"], aws.calls["iam.GetRole"]) == (1, 0)


def test_rest_caller_whose_session_belongs_to_another_role_id_is_refused(sso_approvers: Aws) -> None:
    """API Gateway names the session's role id; a role deleted and re-created under the same name
    (and path) has a new one, so a session of the old role is not matched against the new role."""
    aws = sso_approvers
    identity = issuer_role(aws, "AWSReservedSSO_SecurityAdmin_0a1b2c", path=SSO_PATH)
    role_id = identity["sessionContext"]["sessionIssuer"]["principalId"]
    caller = session_arn(ACCOUNT, "AWSReservedSSO_SecurityAdmin_0a1b2c")
    rest = runtime.get().rest_api
    assert rest.list({"userArn": caller, "caller": f"{role_id}:ann@example.com"}, None)[0] == 200
    status, answer = rest.list({"userArn": caller, "caller": "AROAOLDROLE000000001:ann@example.com"}, None)
    assert status == 403 and "not the role the caller's session belongs to" in answer["error"]
