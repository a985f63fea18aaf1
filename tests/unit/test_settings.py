"""Settings from the environment: defaults, validation errors that name the variable."""

from __future__ import annotations

import pytest

from chalicelib.settings import Settings, SettingsError


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.table == "iam-user-guardrail"
    assert settings.quarantine_policy_name == "iam-user-guardrail-quarantine"
    assert settings.slack_api_url == "https://slack.com/api/"
    assert settings.remediation_role == "GuardrailRemediationRole"
    assert settings.slack_response_hosts == frozenset({"hooks.slack.com"})
    assert settings.mode == "" and settings.own_roles == () and settings.sweep_accounts == ()


def test_values() -> None:
    settings = Settings.from_env(
        {
            "GUARDRAIL_MODE": "monitor",
            "GUARDRAIL_OWN_ROLE_ARNS": "arn:aws:iam::123456789012:role/a, arn:aws:iam::123456789012:role/ops/b",
            "GUARDRAIL_OWN_ROLE_NAMES": "iam-user-guardrail-dev-sweep, iam-user-guardrail-dev-api_handler",
            "GUARDRAIL_SWEEP_ACCOUNTS": "111122223333,444455556666",
            "GUARDRAIL_SLACK_TIMEOUT": "2.5",
        }
    )
    assert settings.mode == "monitor" and settings.slack_timeout == 2.5
    assert settings.own_roles == ("arn:aws:iam::123456789012:role/a", "arn:aws:iam::123456789012:role/ops/b")
    assert settings.own_role_names == ("iam-user-guardrail-dev-sweep", "iam-user-guardrail-dev-api_handler")
    assert settings.sweep_accounts == ("111122223333", "444455556666")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GUARDRAIL_MODE": "audit"}, "GUARDRAIL_MODE"),
        ({"GUARDRAIL_OWN_ROLE_ARNS": "terraform"}, "GUARDRAIL_OWN_ROLE_ARNS"),
        # the override is exact: a glob would again let a role of that name anywhere be the guardrail
        ({"GUARDRAIL_OWN_ROLE_ARNS": "arn:aws:iam::*:role/GuardrailRemediationRole"}, "must be an exact ARN"),
        ({"GUARDRAIL_OWN_ROLE_ARNS": "arn:aws:iam::123456789012:role/guardrail-*"}, "must be an exact ARN"),
        ({"GUARDRAIL_OWN_ROLE_NAMES": "arn:aws:iam::123456789012:role/x"}, "GUARDRAIL_OWN_ROLE_NAMES"),
        ({"GUARDRAIL_OWN_ROLE_NAMES": "iam-user-guardrail-*"}, "GUARDRAIL_OWN_ROLE_NAMES"),
        ({"GUARDRAIL_QUARANTINE_POLICY_NAME": "a b"}, "GUARDRAIL_QUARANTINE_POLICY_NAME"),
        ({"GUARDRAIL_HOME_ACCOUNT": "12"}, "GUARDRAIL_HOME_ACCOUNT"),
        ({"GUARDRAIL_SWEEP_ACCOUNTS": "x"}, "GUARDRAIL_SWEEP_ACCOUNTS"),
        ({"GUARDRAIL_SLACK_TIMEOUT": "soon"}, "GUARDRAIL_SLACK_TIMEOUT"),
        ({"GUARDRAIL_SLACK_RETRIES": "-1"}, "GUARDRAIL_SLACK_RETRIES"),
        ({"GUARDRAIL_REMEDIATION_ROLE": "role/x y"}, "GUARDRAIL_REMEDIATION_ROLE"),
    ],
)
def test_invalid_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)
