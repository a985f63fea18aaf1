"""Settings from environment variables (set per stage in .chalice/config.json)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from chalicelib.arns import glob_problem
from chalicelib.constants import DEFAULT_QUARANTINE_POLICY_NAME, DEFAULT_REMEDIATION_ROLE, DEFAULT_TABLE_NAME, MODES

_POLICY_NAME_RE = re.compile(r"^[\w+=,.@-]{1,128}$")
_ACCOUNT_RE = re.compile(r"^\d{12}$")
_QUEUE_RE = re.compile(r"^[\w-]{1,80}$")
_ROLE_NAME_RE = re.compile(r"^[\w+=,.@-]{1,64}$")
_URL_RE = re.compile(r"^https?://[^\s/]+(/\S*)?$")
DEFAULT_SLACK_API_URL = "https://slack.com/api/"
DEFAULT_PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"
#: A sink setting with this value is read from the guardrail's secret (GUARDRAIL_SLACK_SECRET_ID).
FROM_SECRET = "secret"  # noqa: S105 - a marker, not a password
_TRUE, _FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no", ""})


class SettingsError(ValueError):
    """An environment variable has a value the guardrail cannot use."""


@dataclass(frozen=True, slots=True)
class Settings:
    table: str = DEFAULT_TABLE_NAME
    quarantine_policy_name: str = DEFAULT_QUARANTINE_POLICY_NAME
    allowlist_path: str = ""
    mode: str = ""
    slack_webhook_url: str = ""
    slack_secret_id: str = ""
    slack_api_url: str = DEFAULT_SLACK_API_URL
    slack_timeout: float = 5.0
    slack_retries: int = 2
    #: GUARDRAIL_OWN_ROLE_ARNS: an explicit override, exact role or user ARNs (no wildcards).
    own_roles: tuple[str, ...] = ()
    #: GUARDRAIL_OWN_ROLE_NAMES: the Lambda roles' names; their ARNs are pinned to the home account.
    own_role_names: tuple[str, ...] = ()
    iam_max_attempts: int = 10
    slack_response_hosts: frozenset[str] = frozenset({"hooks.slack.com"})
    home_account: str = ""
    remediation_role: str = DEFAULT_REMEDIATION_ROLE
    external_id: str = ""
    sweep_accounts: tuple[str, ...] = ()
    sweep_exclude: tuple[str, ...] = ()
    org_discovery: str = "auto"  # auto (on when the organization is readable) | true | false
    sweep_queue: str = ""
    security_hub: bool = False
    pagerduty_routing_key: str = field(default="", repr=False)
    pagerduty_url: str = DEFAULT_PAGERDUTY_URL
    webhook_url: str = field(default="", repr=False)
    sink_timeout: float = 5.0
    sink_retries: int = 2
    decision_url: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        mode = env.get("GUARDRAIL_MODE", "").strip()
        if mode and mode not in MODES:
            raise SettingsError(f"GUARDRAIL_MODE must be one of {sorted(MODES)}, got {mode!r}")
        policy = env.get("GUARDRAIL_QUARANTINE_POLICY_NAME", "").strip() or DEFAULT_QUARANTINE_POLICY_NAME
        if not _POLICY_NAME_RE.match(policy):
            raise SettingsError(f"GUARDRAIL_QUARANTINE_POLICY_NAME {policy!r} is not a valid policy name")
        own_roles = _listed(env, "GUARDRAIL_OWN_ROLE_ARNS")
        for arn in own_roles:
            problem = glob_problem(arn, exact=True)
            if problem:
                raise SettingsError(f"GUARDRAIL_OWN_ROLE_ARNS: {arn!r} {problem}")
        own_role_names = _listed(env, "GUARDRAIL_OWN_ROLE_NAMES")
        for name in own_role_names:
            if not _ROLE_NAME_RE.match(name):
                raise SettingsError(f"GUARDRAIL_OWN_ROLE_NAMES: {name!r} is not a role name (not an ARN or a glob)")
        home = env.get("GUARDRAIL_HOME_ACCOUNT", "").strip()
        if home and not _ACCOUNT_RE.match(home):
            raise SettingsError(f"GUARDRAIL_HOME_ACCOUNT must be a 12-digit account id, got {home!r}")
        sweep_accounts = tuple(a.strip() for a in env.get("GUARDRAIL_SWEEP_ACCOUNTS", "").split(",") if a.strip())
        for account in sweep_accounts:
            if not _ACCOUNT_RE.match(account):
                raise SettingsError(f"GUARDRAIL_SWEEP_ACCOUNTS: {account!r} is not a 12-digit account id")
        sweep_exclude = _accounts(env, "GUARDRAIL_SWEEP_EXCLUDE")
        discovery = env.get("GUARDRAIL_ORG_DISCOVERY", "").strip().lower() or "auto"
        if discovery not in ("auto", "true", "false"):
            raise SettingsError(f"GUARDRAIL_ORG_DISCOVERY must be true, false or auto, got {discovery!r}")
        queue = env.get("GUARDRAIL_SWEEP_QUEUE", "").strip()
        if queue and not _QUEUE_RE.match(queue):
            raise SettingsError(f"GUARDRAIL_SWEEP_QUEUE {queue!r} is not an SQS queue name")
        role = env.get("GUARDRAIL_REMEDIATION_ROLE", "").strip() or DEFAULT_REMEDIATION_ROLE
        if not _POLICY_NAME_RE.match(role):
            raise SettingsError(f"GUARDRAIL_REMEDIATION_ROLE {role!r} is not a role name")
        hub = env.get("GUARDRAIL_SECURITY_HUB", "").strip().lower()
        if hub not in _TRUE | _FALSE:
            raise SettingsError(f"GUARDRAIL_SECURITY_HUB must be true or false, got {hub!r}")
        routing_key = env.get("GUARDRAIL_PAGERDUTY_ROUTING_KEY", "").strip()
        secret_id = env.get("GUARDRAIL_SLACK_SECRET_ID", "").strip()
        urls = {
            name: env.get(name, "").strip()
            for name in ("GUARDRAIL_PAGERDUTY_URL", "GUARDRAIL_WEBHOOK_URL", "GUARDRAIL_DECISION_URL")
        }
        for name, url in urls.items():
            if url and url != FROM_SECRET and not _URL_RE.match(url):
                raise SettingsError(f"{name} must be an http(s) URL")  # the value may be a secret: not echoed
        for name, value in (
            ("GUARDRAIL_PAGERDUTY_ROUTING_KEY", routing_key),
            ("GUARDRAIL_WEBHOOK_URL", urls["GUARDRAIL_WEBHOOK_URL"]),
        ):
            if value == FROM_SECRET and not secret_id:
                raise SettingsError(f"{name}={FROM_SECRET} needs GUARDRAIL_SLACK_SECRET_ID")
        return cls(
            security_hub=hub in _TRUE,
            pagerduty_routing_key=routing_key,
            pagerduty_url=urls["GUARDRAIL_PAGERDUTY_URL"] or DEFAULT_PAGERDUTY_URL,
            webhook_url=urls["GUARDRAIL_WEBHOOK_URL"],
            decision_url=urls["GUARDRAIL_DECISION_URL"],
            sink_timeout=_number(env, "GUARDRAIL_SINK_TIMEOUT", 5.0, float),
            sink_retries=int(_number(env, "GUARDRAIL_SINK_RETRIES", 2, int)),
            home_account=home,
            remediation_role=role,
            external_id=env.get("GUARDRAIL_EXTERNAL_ID", "").strip(),
            sweep_accounts=sweep_accounts,
            sweep_exclude=sweep_exclude,
            org_discovery=discovery,
            sweep_queue=queue,
            table=env.get("GUARDRAIL_TABLE", "").strip() or DEFAULT_TABLE_NAME,
            quarantine_policy_name=policy,
            allowlist_path=env.get("GUARDRAIL_ALLOWLIST", "").strip(),
            mode=mode,
            slack_webhook_url=env.get("SLACK_WEBHOOK_URL", "").strip(),
            slack_secret_id=env.get("GUARDRAIL_SLACK_SECRET_ID", "").strip(),
            slack_api_url=env.get("GUARDRAIL_SLACK_API_URL", "").strip() or DEFAULT_SLACK_API_URL,
            slack_timeout=_number(env, "GUARDRAIL_SLACK_TIMEOUT", 5.0, float),
            slack_retries=int(_number(env, "GUARDRAIL_SLACK_RETRIES", 2, int)),
            own_roles=own_roles,
            own_role_names=own_role_names,
            iam_max_attempts=int(_number(env, "GUARDRAIL_AWS_MAX_ATTEMPTS", 10, int)),
            slack_response_hosts=frozenset(
                h.strip() for h in env.get("GUARDRAIL_SLACK_RESPONSE_HOSTS", "hooks.slack.com").split(",") if h.strip()
            ),
        )


def _accounts(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    accounts = tuple(a.strip() for a in env.get(name, "").split(",") if a.strip())
    for account in accounts:
        if not _ACCOUNT_RE.match(account):
            raise SettingsError(f"{name}: {account!r} is not a 12-digit account id")
    return accounts


def _listed(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in env.get(name, "").split(",") if item.strip())


def _number(env: Mapping[str, str], name: str, default: float, kind: type) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if value < 0:
        raise SettingsError(f"{name} must not be negative")
    return value
