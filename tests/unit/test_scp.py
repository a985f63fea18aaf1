"""`cli scp`: the SCP built from the allowlist, evaluated on the allowlist's own principals and on
the callers an attacker would use, linted by parliament, within the 5,120-character limit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from parliament import analyze_policy_string

from chalicelib.allowlist import parse_allowlist
from chalicelib.cli import main
from chalicelib.scp import CREDENTIAL_ACTIONS, SCP_MAX_CHARS, arn_like, build_scp, evaluate, principal_globs, render
from tests.helpers import ALLOWLIST_YAML, REPO, allowlist

ACCOUNT = "123456789012"
TERRAFORM = f"arn:aws:iam::{ACCOUNT}:role/terraform-deployer"
DEVELOPER = f"arn:aws:iam::{ACCOUNT}:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_Developer_1"
MALLORY = f"arn:aws:iam::{ACCOUNT}:user/mallory"
DATADOG = f"arn:aws:iam::{ACCOUNT}:user/integrations/svc-datadog"


def user(name: str, path: str = "/", account: str = ACCOUNT) -> str:
    return f"arn:aws:iam::{account}:user{path}{name}"


def denied(policy: dict, principal: str, resource: str) -> set[str]:
    return {a for a in CREDENTIAL_ACTIONS if evaluate(policy, action=a, principal_arn=principal, resource=resource)}


def sample(glob: str) -> str:
    """A concrete ARN a glob matches (`*` and `?` filled without crossing `:`)."""
    return glob.replace("*", "x1").replace("?", "y")


@pytest.mark.parametrize("restrict", [False, True])
def test_bundled_allowlist_scp_is_valid_small_and_lint_free(restrict: bool) -> None:
    text = render(build_scp(allowlist(), restrict_resources=restrict))
    assert len(text) <= SCP_MAX_CHARS
    assert analyze_policy_string(text).findings == []
    statement = json.loads(text)["Statement"][0]
    assert tuple(statement["Action"]) == CREDENTIAL_ACTIONS
    assert statement["Effect"] == "Deny"


def test_the_allowlists_principals_may_create_and_everyone_else_is_denied_everything() -> None:
    policy = build_scp(allowlist())
    globs, _ = principal_globs(allowlist())
    assert globs == ["arn:aws:iam::*:role/terraform-deployer"]
    for principal in map(sample, globs):
        assert denied(policy, principal, DATADOG) == set(), principal
    for attacker in (DEVELOPER, MALLORY, f"arn:aws:iam::{ACCOUNT}:root"):
        assert denied(policy, attacker, DATADOG) == set(CREDENTIAL_ACTIONS), attacker
        assert denied(policy, attacker, user("backdoor")) == set(CREDENTIAL_ACTIONS), attacker


@pytest.mark.parametrize(
    "lookalike",
    [
        f"arn:aws:iam::{ACCOUNT}:role/terraform-deployer-evil",  # a longer name
        f"arn:aws:iam::{ACCOUNT}:role/evil/terraform-deployer",  # the name under another path
        f"arn:aws:iam::{ACCOUNT}:user/terraform-deployer",  # a user of the same name
        f"arn:aws:sts::{ACCOUNT}:assumed-role/terraform-deployer/session",  # the session ARN
    ],
)
def test_lookalike_callers_are_denied(lookalike: str) -> None:
    assert denied(build_scp(allowlist()), lookalike, DATADOG) == set(CREDENTIAL_ACTIONS)


def test_restricted_scp_confines_provisioners_to_the_integrations_paths_and_names() -> None:
    policy = build_scp(allowlist(), restrict_resources=True)
    assert denied(policy, TERRAFORM, DATADOG) == set()
    assert denied(policy, TERRAFORM, user("svc-datadog-eu", "/integrations/")) == set()
    assert denied(policy, TERRAFORM, user("svc-console", "/any/path/")) == set()  # no path: any path
    assert denied(policy, TERRAFORM, user("svc-datadog")) == set(CREDENTIAL_ACTIONS)  # wrong path
    assert denied(policy, TERRAFORM, user("dana-debug")) == set(CREDENTIAL_ACTIONS)
    assert denied(policy, TERRAFORM, user("xsvc-console", "/a/")) == set(CREDENTIAL_ACTIONS)  # not a suffix match
    # `scoped` is limited to one account
    assert denied(policy, TERRAFORM, user("svc-scoped", account="210987654321")) == set(CREDENTIAL_ACTIONS)


def test_created_by_anyone_opens_only_that_integrations_users() -> None:
    """`scoped` has `created_by: []`: anyone may create `svc-scoped` in its account, nothing else."""
    policy = build_scp(allowlist())
    assert denied(policy, DEVELOPER, user("svc-scoped")) == set()
    assert denied(policy, DEVELOPER, user("svc-scoped", account="210987654321")) == set(CREDENTIAL_ACTIONS)
    assert denied(policy, DEVELOPER, user("dana-debug")) == set(CREDENTIAL_ACTIONS)


def test_created_by_principals_are_exempt_and_user_character_classes_widen_to_one_character() -> None:
    text = ALLOWLIST_YAML + (
        '  - name: ci\n    owner: ci@example.com\n    purpose: CI\n    users: ["svc-ci-[ab]"]\n'
        '    created_by: ["arn:aws:iam::*:role/ci-deployer"]\n'
    )
    policy = build_scp(parse_allowlist(text), restrict_resources=True)
    ci = f"arn:aws:iam::{ACCOUNT}:role/ci-deployer"
    assert denied(policy, ci, user("svc-ci-a")) == set()
    assert denied(policy, ci, user("svc-ci-c")) == set()  # `[ab]` became `?`: broader, the guardrail decides
    assert denied(policy, ci, user("svc-ci-ab")) == set(CREDENTIAL_ACTIONS)
    assert denied(policy, DEVELOPER, user("svc-ci-a")) == set(CREDENTIAL_ACTIONS)


def test_the_scp_never_denies_what_the_guardrail_allows_and_is_at_most_broader() -> None:
    """IAM's ArnLike lets `*` cross `/` inside the resource part; the guardrail's globs never do.
    So the SCP may let through a role at a deeper path (the guardrail still quarantines what it
    creates), but it never denies a principal the guardrail allows."""
    text = ALLOWLIST_YAML.replace('"arn:aws:iam::*:role/terraform-deployer"', '"arn:aws:iam::*:role/deploy-*"')
    rules = parse_allowlist(text)
    policy = build_scp(rules)
    for principal in (f"arn:aws:iam::{ACCOUNT}:role/deploy-prod", f"arn:aws:iam::{ACCOUNT}:role/deploy-"):
        assert rules.provisioners.matches(principal)
        assert denied(policy, principal, DATADOG) == set()
    deeper = f"arn:aws:iam::{ACCOUNT}:role/deploy-x/attacker"
    assert not rules.provisioners.matches(deeper)  # the guardrail refuses it ...
    assert denied(policy, deeper, DATADOG) == set()  # ... the SCP cannot (documented limitation)
    for outsider in (DEVELOPER, MALLORY, f"arn:aws:iam::{ACCOUNT}:role/other-deploy-prod"):
        assert not rules.provisioners.matches(outsider)
        assert denied(policy, outsider, DATADOG) == set(CREDENTIAL_ACTIONS)


def test_evaluator_compares_arn_parts_one_by_one() -> None:
    assert arn_like("arn:aws:iam::*:role/x", "arn:aws:iam::123456789012:role/x")
    assert not arn_like("arn:aws:iam::*:role/x", "arn:aws:iam::1:2:role/x")  # `*` does not cross `:`
    assert arn_like("arn:aws:iam::*:user/*/svc", "arn:aws:iam::1:user/a/b/svc")  # but crosses `/`
    assert not arn_like("arn:aws:iam::*:role/x", "arn:aws:iam::1:role/X")  # case-sensitive
    with pytest.raises(ValueError, match="operator"):
        evaluate(
            {
                "Statement": [
                    {"Effect": "Deny", "Action": "*", "Resource": "*", "Condition": {"Bool": {"aws:PrincipalArn": "x"}}}
                ]
            },
            action="iam:CreateUser",
            principal_arn="p",
            resource="r",
        )


def test_cli_prints_the_minified_scp(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "allowlist.yaml"
    path.write_text(ALLOWLIST_YAML)
    assert main(["scp", "--allowlist", str(path)]) == 0
    out = capsys.readouterr().out.strip()
    assert out == render(build_scp(allowlist()))  # minified: what must fit 5,120 characters
    assert main(["scp", "--allowlist", str(path), "--check", DEVELOPER, user("dana-debug")]) == 0
    assert "denied iam:CreateUser" in capsys.readouterr().out


def test_cli_refuses_an_scp_over_the_limit(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    entries = "".join(
        f'  - name: vendor-{n}\n    owner: o@example.com\n    purpose: p\n    users: ["svc-vendor-{n}-*"]\n'
        f'    created_by: ["arn:aws:iam::*:role/pipeline-{n}-deployer"]\n'
        for n in range(120)
    )
    path = tmp_path / "allowlist.yaml"
    path.write_text(ALLOWLIST_YAML + entries)
    assert main(["scp", "--allowlist", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "5,120-character limit" in captured.err


def test_cli_reports_an_invalid_allowlist(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "allowlist.yaml"
    path.write_text("version: 2\n")
    assert main(["scp", "--allowlist", str(path)]) == 1
    assert "version" in capsys.readouterr().err


def test_the_bundled_example_allowlist_fits() -> None:
    assert main(["scp", "--allowlist", str(REPO / "chalicelib" / "allowlist.yaml"), "--restrict-resources"]) == 0
