"""The guardrail's own identity: pinned ARNs, its own session name, and role ids where known."""

from __future__ import annotations

import pytest

from chalicelib.constants import REMEDIATION_SESSION_NAME
from chalicelib.events import Actor, parse_event
from chalicelib.identity import OwnIdentity
from chalicelib.settings import Settings
from devtools.synth import role_identity, user_identity
from tests.helpers import ACCOUNT, OTHER_ACCOUNT, OWN_IDENTITY, record

ON_EVENT = "iam-user-guardrail-dev-on_iam_event"
ROLE_ID = "AROAGUARDRAILREMEDY1"


def actor(identity: dict) -> Actor:
    return parse_event(record("DetachUserPolicy", "bob", identity, account=identity["accountId"])).actor


@pytest.mark.parametrize(
    ("identity", "account", "own"),
    [
        (role_identity(ACCOUNT, ON_EVENT, ON_EVENT), ACCOUNT, True),
        (role_identity(ACCOUNT, "iam-user-guardrail-dev-sweep", "x"), ACCOUNT, True),
        # a role of the Lambda role's name in a member account is not the guardrail
        (role_identity(OTHER_ACCOUNT, "iam-user-guardrail-dev-sweep", "x"), OTHER_ACCOUNT, False),
        (role_identity(OTHER_ACCOUNT, "iam-user-guardrail-prod-sweep", "x"), OTHER_ACCOUNT, False),
        # ... nor another stage's role at home, nor the Lambda role's name at another path
        (role_identity(ACCOUNT, "iam-user-guardrail-prod-sweep", "x"), ACCOUNT, False),
        (role_identity(ACCOUNT, ON_EVENT, ON_EVENT, path="/x/"), ACCOUNT, False),
        # the remediation role is the guardrail only in a member account, only in its own session
        (role_identity(OTHER_ACCOUNT, "GuardrailRemediationRole", REMEDIATION_SESSION_NAME), OTHER_ACCOUNT, True),
        (role_identity(ACCOUNT, "GuardrailRemediationRole", REMEDIATION_SESSION_NAME), ACCOUNT, False),
        (role_identity(OTHER_ACCOUNT, "GuardrailRemediationRole", "mallory"), OTHER_ACCOUNT, False),
        # a role in one account never speaks for another
        (role_identity(OTHER_ACCOUNT, "GuardrailRemediationRole", REMEDIATION_SESSION_NAME), "333344445555", False),
        (role_identity(ACCOUNT, ON_EVENT, ON_EVENT), OTHER_ACCOUNT, False),
        (user_identity(ACCOUNT, ON_EVENT), ACCOUNT, False),
    ],
)
def test_own_is_pinned_to_account_role_and_session(identity: dict, account: str, own: bool) -> None:
    assert OWN_IDENTITY.is_own(actor(identity), account) is own


def test_a_known_role_id_must_match() -> None:
    known = {(OTHER_ACCOUNT, "GuardrailRemediationRole"): ROLE_ID}
    own = OwnIdentity.pinned(ACCOUNT, known_role_id=lambda account, role: known.get((account, role), ""))
    session = role_identity(OTHER_ACCOUNT, "GuardrailRemediationRole", REMEDIATION_SESSION_NAME)
    session["sessionContext"]["sessionIssuer"]["principalId"] = ROLE_ID
    assert own.is_own(actor(session), OTHER_ACCOUNT)
    session["sessionContext"]["sessionIssuer"]["principalId"] = "AROARECREATEDROLE001"
    assert not own.is_own(actor(session), OTHER_ACCOUNT)
    del session["sessionContext"]["sessionIssuer"]["principalId"]
    assert not own.is_own(actor(session), OTHER_ACCOUNT)


def test_exact_override_and_settings() -> None:
    settings = Settings.from_env(
        {
            "GUARDRAIL_HOME_ACCOUNT": ACCOUNT,
            "GUARDRAIL_OWN_ROLE_NAMES": ON_EVENT,
            "GUARDRAIL_OWN_ROLE_ARNS": f"arn:aws:iam::{OTHER_ACCOUNT}:role/ops/break-glass",
        }
    )
    own = OwnIdentity.from_settings(settings)
    assert own.is_own(actor(role_identity(ACCOUNT, ON_EVENT, "s")), ACCOUNT)
    assert own.is_own(actor(role_identity(OTHER_ACCOUNT, "break-glass", "s", path="/ops/")), OTHER_ACCOUNT)
    assert not own.is_own(actor(role_identity(OTHER_ACCOUNT, "break-glass", "s")), OTHER_ACCOUNT)


def test_the_home_account_is_read_lazily() -> None:
    calls: list[str] = []

    def home() -> str:
        calls.append("home")
        return ACCOUNT

    own = OwnIdentity.pinned(home, [ON_EVENT])
    assert calls == []
    assert own.is_own(actor(role_identity(ACCOUNT, ON_EVENT, ON_EVENT)), ACCOUNT) and calls == ["home"]
