"""Authorization helpers: REST caller matching and where Slack replies may be posted."""

from __future__ import annotations

import pytest

from chalicelib.allowlist import GlobSet
from chalicelib.rest import caller_allowed, role_name_globs
from chalicelib.slack_interactions import response_url_allowed

SSO = "arn:aws:iam::*:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_SecurityAdmin_*"


@pytest.mark.parametrize(
    ("patterns", "caller", "allowed"),
    [
        (["arn:aws:iam::*:role/security-admin"], "arn:aws:sts::123456789012:assumed-role/security-admin/ann", True),
        (["arn:aws:iam::*:role/security-admin"], "arn:aws:sts::123456789012:assumed-role/security-admins/ann", False),
        (
            ["arn:aws:iam::111122223333:role/security-admin"],
            "arn:aws:sts::123456789012:assumed-role/security-admin/ann",
            False,
        ),
        ([SSO], "arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_SecurityAdmin_0a1b/ann@example.com", True),
        ([SSO], "arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Developer_0a1b/ann@example.com", False),
        # a path glob ending in a bare * is not widened to every role in the account
        (["arn:aws:iam::*:role/security/*"], "arn:aws:sts::123456789012:assumed-role/anything/ann", False),
        (["arn:aws:iam::*:user/breakglass"], "arn:aws:iam::123456789012:user/breakglass", True),
        (["arn:aws:iam::*:user/breakglass"], "arn:aws:sts::123456789012:federated-user/breakglass", False),
        (["arn:aws:iam::*:role/security-admin"], "", False),
    ],
)
def test_caller_allowed(patterns: list[str], caller: str, allowed: bool) -> None:
    assert caller_allowed(GlobSet(patterns), caller) is allowed


def test_role_name_globs_drop_paths_only_where_safe() -> None:
    stripped = role_name_globs(GlobSet([SSO, "arn:aws:iam::*:role/team/*", "arn:aws:iam::*:role/plain"]))
    assert stripped.patterns == ("arn:aws:iam::*:role/AWSReservedSSO_SecurityAdmin_*",)


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
