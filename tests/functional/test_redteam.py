"""Red team: attacks by the DESIGN.md threat model's adversary that succeed on the current code.

Each test writes the attack through the real handler, sweep or Slack route against moto server
and asserts what the guardrail *should* leave behind. They are marked `xfail(strict=True)`: the
suite stays green while the attack works, and turns red the moment a fix lands, so the marker
is removed with the fix. An attack the guardrail holds against has no test here.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib.bootstrap import ensure_quarantine_policy
from chalicelib.constants import IGNORE
from chalicelib.events import parse_event
from chalicelib.policy import decide
from chalicelib.selfguard import is_deny_all
from devtools.synth import role_identity
from tests.functional.approval_helpers import interaction_body, post_interaction, signed_headers, store_slack_secret
from tests.functional.conftest import Aws, member_client
from tests.helpers import ACCOUNT, DEVELOPER, MALLORY, OTHER_ACCOUNT, OWN_IDENTITY, TERRAFORM, allowlist, record

POLICY = "iam-user-guardrail-quarantine"
POLICY_ARN = f"arn:aws:iam::{ACCOUNT}:policy/{POLICY}"
ALLOW_ALL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
SSH_KEY = (
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7redteam0000000000000000000000000000000000000000000000000000"
    "00000000000000000000000000000000000000000000000000000000000000000000000000000 mallory@laptop"
)


def click(aws: Aws, action: str, value: dict[str, str]) -> int:
    body = interaction_body(aws, action, value)
    return post_interaction(body, signed_headers(body)).status_code


def quarantine_new_user(aws: Aws, user: str, identity: dict[str, Any] = DEVELOPER) -> dict[str, str]:
    """`user` created in moto and its CreateUser delivered: the Slack button value of its alert."""
    aws.iam.create_user(UserName=user)
    raw = record("CreateUser", user, identity)
    assert aws.invoke(raw)["verdict"] == "quarantine"
    return {"a": ACCOUNT, "u": user, "e": raw["eventID"]}


def login_profile_event(user: str, identity: dict[str, Any]) -> dict[str, Any]:
    return record("CreateLoginProfile", user, identity)


def policy_event(event_name: str, identity: dict[str, Any], **params: Any) -> dict[str, Any]:
    raw = record(event_name, "", identity)
    raw["requestParameters"] = params
    raw["responseElements"] = None
    return raw


def attached_policy_denies_all(aws: Aws, user: str) -> bool:
    attached = [p["PolicyArn"] for p in aws.iam.list_attached_user_policies(UserName=user)["AttachedPolicies"]]
    if POLICY_ARN not in attached:
        return False
    version = aws.iam.get_policy(PolicyArn=POLICY_ARN)["Policy"]["DefaultVersionId"]
    document = aws.iam.get_policy_version(PolicyArn=POLICY_ARN, VersionId=version)["PolicyVersion"]["Document"]
    return is_deny_all(document)


def has_login_profile(aws: Aws, user: str) -> bool:
    try:
        aws.iam.get_login_profile(UserName=user)
    except aws.iam.exceptions.NoSuchEntityException:
        return False
    return True


# -- 1. a backdoor password survives quarantine and goes live with an unrelated approval --------


def test_backdoor_password_goes_live_when_the_user_is_approved(aws: Aws) -> None:
    store_slack_secret(aws)
    # A developer's debug user, quarantined: the security lead means to approve it.
    value = quarantine_new_user(aws, "dana-debug")
    # Mallory (any insider with iam:CreateLoginProfile) sets a password she knows on it.
    aws.iam.create_login_profile(UserName="dana-debug", Password="Mallory-Knows-This-1!")
    decision = aws.invoke(login_profile_event("dana-debug", MALLORY))
    assert decision["verdict"] == "quarantine" and decision["severity"] == "critical"  # alerted as a backdoor...
    # ...but the password is only "covered" by the quarantine policy, so releasing the user frees it.
    assert click(aws, "guardrail_approve_7", value) == 200
    assert aws.user_state("dana-debug")["policies"] == []  # the approval the lead wanted
    assert not has_login_profile(aws, "dana-debug"), "Mallory's password now signs in as dana-debug"


# -- 2. a stale Slack button approves whatever user now holds the name -------------------------


def test_stale_button_releases_a_recreated_user(aws: Aws) -> None:
    store_slack_secret(aws)
    value = quarantine_new_user(aws, "dana-debug")  # the alert the lead intends to approve
    original_id = aws.iam.get_user(UserName="dana-debug")["User"]["UserId"]
    # Mallory deletes the user and creates her own under the same name, with a password she knows.
    aws.iam.detach_user_policy(UserName="dana-debug", PolicyArn=POLICY_ARN)
    aws.iam.delete_user(UserName="dana-debug")
    aws.invoke(record("DeleteUser", "dana-debug", MALLORY))
    aws.iam.create_user(UserName="dana-debug")
    assert aws.invoke(record("CreateUser", "dana-debug", MALLORY))["verdict"] == "quarantine"
    assert aws.iam.get_user(UserName="dana-debug")["User"]["UserId"] != original_id
    # The lead clicks Approve on the original alert, still in the channel.
    assert click(aws, "guardrail_approve_30", value) == 200
    # The button named a quarantine of another user id: Mallory's user must stay quarantined.
    assert attached_policy_denies_all(aws, "dana-debug"), "the stale button released Mallory's user"


# -- 3. the quarantine policy is deleted and re-created as Allow-all: no event is watched -------


def test_quarantine_policy_recreated_as_allow_all_grants_admin(aws: Aws) -> None:
    # No user is quarantined right now, and the restore left one version: DeletePolicy needs nothing else.
    aws.iam.delete_policy(PolicyArn=POLICY_ARN)
    aws.iam.create_policy(PolicyName=POLICY, PolicyDocument=json.dumps(ALLOW_ALL))
    aws.invoke(policy_event("DeletePolicy", MALLORY, policyArn=POLICY_ARN))
    aws.invoke(policy_event("CreatePolicy", MALLORY, policyName=POLICY, policyDocument=json.dumps(ALLOW_ALL)))
    aws.slack.clear()
    # Mallory's next user is "quarantined" with her Allow-all policy: it is an administrator.
    aws.iam.create_user(UserName="mallory-admin")
    result = aws.invoke(record("CreateUser", "mallory-admin", MALLORY))
    assert result["verdict"] == "quarantine"
    assert attached_policy_denies_all(aws, "mallory-admin"), "the 'quarantine' attached grants Allow *"


# -- 4. the sweep approves an integration-named user nobody can vouch for ------------------------


def test_sweep_approves_an_integration_named_user_made_by_an_insider(aws: Aws) -> None:
    # Mallory disables the forwarding rule in her account (threat model), then makes a user whose
    # name and path match the datadog integration, with a key; the events never reach the guardrail.
    aws.iam.create_user(UserName="svc-datadog-exfil", Path="/integrations/")
    key = aws.iam.create_access_key(UserName="svc-datadog-exfil")["AccessKey"]["AccessKeyId"]
    aws.invoke_sweep()
    state = aws.user_state("svc-datadog-exfil")
    # The event path would have quarantined it (Mallory is not in created_by): the sweep must not approve it.
    assert state["tags"].get("guardrail:status") != "approved", "the sweep tagged Mallory's user approved"
    assert state["keys"][key] == "Inactive" or attached_policy_denies_all(aws, "svc-datadog-exfil")


# -- 5. the sweep checks only access keys and passwords of approved integration users ------------


def test_sweep_leaves_an_ssh_key_on_an_integration_user(aws: Aws) -> None:
    aws.iam.create_user(UserName="svc-datadog", Path="/integrations/")
    assert aws.invoke(record("CreateUser", "svc-datadog", TERRAFORM, path="/integrations/"))["verdict"] == "approve"
    # Rule disabled: Mallory uploads an SSH key (CodeCommit access with the integration's rights).
    ssh_id = aws.iam.upload_ssh_public_key(UserName="svc-datadog", SSHPublicKeyBody=SSH_KEY)["SSHPublicKey"][
        "SSHPublicKeyId"
    ]
    aws.invoke_sweep()
    [ssh] = aws.iam.list_ssh_public_keys(UserName="svc-datadog")["SSHPublicKeys"]
    assert ssh["SSHPublicKeyId"] == ssh_id
    assert ssh["Status"] == "Inactive", "an SSH key nobody approved stays active on the integration user"


# -- 6. links and mentions through Slack's automatic parsing -------------------------------------


def test_role_path_and_session_name_reach_slack_as_live_links_and_mentions(aws: Aws) -> None:
    # Role paths allow any printable ASCII; session names allow '@'. Both are the attacker's choice.
    phish = role_identity(ACCOUNT, "deployer", "@here", path="/https://evil.example/reset-mfa/")
    aws.iam.create_user(UserName="tmp-ci")
    assert aws.invoke(record("CreateUser", "tmp-ci", phish))["verdict"] == "quarantine"
    [message] = aws.slack.messages
    texts: list[dict[str, Any]] = []
    for block in message["blocks"]:
        texts += [block["text"]] if isinstance(block.get("text"), dict) else []
        texts += block.get("fields", []) + block.get("elements", [])
    carrying = [t for t in texts if t.get("type") == "mrkdwn" and ("evil.example" in t["text"] or "@here" in t["text"])]
    assert carrying, message
    # Every mrkdwn object showing the attacker's strings must be verbatim (no auto-link, no auto-mention).
    assert all(t.get("verbatim") is True for t in carrying), [t["text"][:120] for t in carrying]


# -- 7. any account's role named like a provisioner is a provisioner -----------------------------


def member_iam(service: str = "iam") -> Any:
    """A client in the member account."""
    return member_client(OTHER_ACCOUNT, service)


@pytest.mark.xfail(
    strict=True,
    reason="red team: provisioners/created_by globs with account '*' (the bundled allowlist's) trust a role "
    "named terraform-deployer that any insider with iam:CreateRole makes in their own account",
)
def test_insider_made_terraform_deployer_role_approves_an_integration_user(aws: Aws) -> None:
    member = member_iam()
    ensure_quarantine_policy(member, OTHER_ACCOUNT, POLICY)
    # The member account has no terraform-deployer: Mallory creates one that trusts her.
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{OTHER_ACCOUNT}:user/mallory"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    member.create_role(RoleName="terraform-deployer", AssumeRolePolicyDocument=json.dumps(trust))
    fake = role_identity(OTHER_ACCOUNT, "terraform-deployer", "mallory")
    member.create_user(UserName="svc-datadog", Path="/integrations/")
    key = member.create_access_key(UserName="svc-datadog")["AccessKey"]["AccessKeyId"]
    aws.invoke(record("CreateUser", "svc-datadog", fake, account=OTHER_ACCOUNT, path="/integrations/"))
    aws.invoke(record("CreateAccessKey", "svc-datadog", fake, account=OTHER_ACCOUNT, access_key_id=key))
    keys = {k["AccessKeyId"]: k["Status"] for k in member.list_access_keys(UserName="svc-datadog")["AccessKeyMetadata"]}
    attached = member.list_attached_user_policies(UserName="svc-datadog")["AttachedPolicies"]
    assert keys[key] == "Inactive" or attached, "Mallory's own role approved her user and its key"


# -- 8. a case variant of the quarantine policy's ARN detaches it without a revert ---------------


def test_case_variant_policy_arn_detaches_the_quarantine_silently() -> None:
    # moto matches policy ARNs exactly, so the detach itself cannot run there; real IAM resolves
    # managed-policy ARNs case-insensitively (and selfguard.is_quarantine_policy already assumes so).
    raw = record("DetachUserPolicy", "dana-debug", MALLORY)
    raw["requestParameters"] = {
        "userName": "dana-debug",
        "policyArn": f"arn:aws:iam::{ACCOUNT}:policy/{POLICY.upper()}",
    }
    raw["responseElements"] = None
    decision = decide(parse_event(raw), allowlist(), own_roles=OWN_IDENTITY, record={"status": "quarantined"})
    assert decision.verdict != IGNORE, decision.reason


# -- 9. a rotated-out key of an integration user is switched back on -----------------------------


def update_key_event(user: str, key: str, status: str, identity: dict[str, Any]) -> dict[str, Any]:
    raw = record("UpdateAccessKey", user, identity)
    raw["requestParameters"] = {"userName": user, "accessKeyId": key, "status": status}
    raw["responseElements"] = None
    return raw


def rotated_integration_user(aws: Aws) -> tuple[str, str]:
    """svc-datadog as Terraform runs it: key K1, rotated to K2 (K1 switched off first, max_access_keys 1)."""
    aws.iam.create_user(UserName="svc-datadog", Path="/integrations/")
    assert aws.invoke(record("CreateUser", "svc-datadog", TERRAFORM, path="/integrations/"))["verdict"] == "approve"
    old = aws.iam.create_access_key(UserName="svc-datadog")["AccessKey"]["AccessKeyId"]
    assert aws.invoke(record("CreateAccessKey", "svc-datadog", TERRAFORM, access_key_id=old))["verdict"] == "approve"
    aws.iam.update_access_key(UserName="svc-datadog", AccessKeyId=old, Status="Inactive")
    aws.invoke(update_key_event("svc-datadog", old, "Inactive", TERRAFORM))
    new = aws.iam.create_access_key(UserName="svc-datadog")["AccessKey"]["AccessKeyId"]
    assert aws.invoke(record("CreateAccessKey", "svc-datadog", TERRAFORM, access_key_id=new))["verdict"] == "approve"
    aws.slack.clear()
    return old, new


def test_insider_reactivates_a_rotated_out_integration_key_silently(aws: Aws) -> None:
    old, _new = rotated_integration_user(aws)
    # The old key leaked (that is why it was rotated); Mallory switches it back on.
    aws.iam.update_access_key(UserName="svc-datadog", AccessKeyId=old, Status="Active")
    aws.invoke(update_key_event("svc-datadog", old, "Active", MALLORY))
    assert aws.user_state("svc-datadog")["keys"][old] == "Inactive", "the leaked key works again"
    assert aws.slack.messages, "and nobody was told"


def test_sweep_keeps_the_reactivated_old_key_and_disables_the_approved_one(aws: Aws) -> None:
    old, new = rotated_integration_user(aws)
    aws.iam.update_access_key(UserName="svc-datadog", AccessKeyId=old, Status="Active")  # event missed
    aws.invoke_sweep()
    keys = aws.user_state("svc-datadog")["keys"]
    assert (keys[old], keys[new]) == ("Inactive", "Active"), keys


# -- 10. a member account goes silent: nobody checks its forwarding rule ------------------------


def test_disabled_forwarding_rule_is_alerted(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib import runtime

    monkeypatch.setenv("GUARDRAIL_SWEEP_ACCOUNTS", OTHER_ACCOUNT)
    runtime.reset()
    ensure_quarantine_policy(member_iam(), OTHER_ACCOUNT, POLICY)
    events = member_iam("events")
    # The StackSet's rule (infra/member-account.yaml), switched off by Mallory: the threat model's
    # "disable an EventBridge rule". Every later IAM event of that account is lost.
    pattern = {"source": ["aws.iam"], "detail-type": ["AWS API Call via CloudTrail"]}
    events.put_rule(Name="iam-user-guardrail-forward", EventPattern=json.dumps(pattern), State="ENABLED")
    events.disable_rule(Name="iam-user-guardrail-forward")
    report = aws.invoke_sweep()
    said = json.dumps(aws.slack.messages) + json.dumps(report)
    assert "iam-user-guardrail-forward" in said, "the silenced account raised no alert"
