"""Authorization helpers: REST caller matching and where Slack replies may be posted."""

from __future__ import annotations

import pytest

from chalicelib.arns import PrincipalGlobs
from chalicelib.rest import CallerRoles
from chalicelib.slack_interactions import response_url_allowed

SSO = "arn:aws:iam::*:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_SecurityAdmin_*"
SSO_ADMIN = "arn:aws:iam::123456789012:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_SecurityAdmin_0a1b"


@pytest.mark.parametrize(
    ("patterns", "principal", "allowed"),
    [
        (["arn:aws:iam::*:role/security-admin"], "arn:aws:iam::123456789012:role/security-admin", True),
        (["arn:aws:iam::*:role/security-admin"], "arn:aws:iam::123456789012:role/security-admins", False),
        (["arn:aws:iam::111122223333:role/security-admin"], "arn:aws:iam::123456789012:role/security-admin", False),
        ([SSO], SSO_ADMIN, True),
        ([SSO], SSO_ADMIN.replace("SecurityAdmin", "Developer"), False),
        # the path is part of the match: the SSO role's name at path / is not the SSO role
        ([SSO], "arn:aws:iam::123456789012:role/AWSReservedSSO_SecurityAdmin_evil", False),
        (["arn:aws:iam::*:role/security/*"], "arn:aws:iam::123456789012:role/anything", False),
        (["arn:aws:iam::*:role/security/*"], "arn:aws:iam::123456789012:role/security/anything", True),
        (["arn:aws:iam::*:role/security/*"], "arn:aws:iam::123456789012:role/security/deeper/anything", False),
        (["arn:aws:iam::*:user/breakglass"], "arn:aws:iam::123456789012:user/breakglass", True),
        (["arn:aws:iam::*:user/breakglass"], "arn:aws:sts::123456789012:federated-user/breakglass", False),
        # a session ARN is resolved to its role first (CallerRoles); as such it matches nothing
        (["arn:aws:iam::*:role/security-admin"], "arn:aws:sts::123456789012:assumed-role/security-admin/ann", False),
        (["arn:aws:iam::*:role/security-admin"], "", False),
    ],
)
def test_rest_callers_match_on_their_full_identity(patterns: list[str], principal: str, allowed: bool) -> None:
    assert PrincipalGlobs(patterns).matches(principal) is allowed


@pytest.mark.parametrize(
    "caller",
    [
        "arn:aws:iam::123456789012:user/ops/breakglass",
        "arn:aws:sts::123456789012:federated-user/breakglass",
        "arn:aws:iam::123456789012:root",
    ],
)
def test_only_assumed_role_callers_need_a_role_lookup(caller: str) -> None:
    def no_iam(account: str) -> None:
        raise AssertionError(f"no IAM call expected for {caller}")

    assert CallerRoles(no_iam).principal(caller) == caller  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "hosts", "allowed"),
    [
        ("https://hooks.slack.com/actions/T0/1/abc", {"hooks.slack.com"}, True),
        ("http://hooks.slack.com/actions/T0/1/abc", {"hooks.slack.com"}, False),
        ("https://hooks.slack.com.evil.example/actions", {"hooks.slack.com"}, False),
        ("https://evil.example/?hooks.slack.com", {"hooks.slack.com"}, False),
        ("http://127.0.0.1:8080/response", {"hooks.slack.com"}, False),
        ("http://127.0.0.1:8080/response", {"127.0.0.1"}, True),
        ("file:///etc/passwd", {"hooks.slack.com"}, False),
    ],
)
def test_response_url_only_to_slack(url: str, hosts: set[str], allowed: bool) -> None:
    assert response_url_allowed(url, frozenset(hosts)) is allowed


def test_a_rest_grant_names_the_session_and_the_resolved_role() -> None:
    from chalicelib.rest import RestApi

    session = "arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_SecurityAdmin_0a1b/ann@example.com"
    body = '{"account": "123456789012", "user": "bob", "days": 1, "reason": "r"}'
    request = RestApi(None, None)._grant_request(session, SSO_ADMIN, body)  # type: ignore[arg-type]
    assert (request.approver, request.approver_principal, request.source) == (session, SSO_ADMIN, "api")


def test_sessions_of_one_role_are_one_principal_whatever_the_path_or_case() -> None:
    from chalicelib.approvals import principal_key, same_principal

    session = "arn:aws:sts::123456789012:assumed-role/Security-Admin/ops@example.com"
    assert same_principal(session, "arn:aws:iam::123456789012:role/team/security-admin")
    assert not same_principal(session, "arn:aws:iam::210987654321:role/security-admin")
    assert not same_principal(session, "arn:aws:iam::123456789012:user/security-admin")
    assert principal_key("arn:aws:iam::123456789012:root") is None
