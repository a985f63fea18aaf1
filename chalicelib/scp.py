"""Prevention from the same allowlist: a Service Control Policy that stops unapproved IAM users.

`python -m chalicelib.cli scp` prints an SCP that denies creating IAM users and their long-lived
credentials unless the caller (`aws:PrincipalArn`) matches the allowlist's `provisioners` or an
integration's `created_by`. With `--restrict-resources` a second statement also denies them on any
user that is not an integration's (its accounts, path and user-name globs as `iam:` user ARNs), so
even a provisioner cannot create other users. The guardrail's own roles need no exemption: it
never creates users or credentials.

IAM's `ArnLike` compares each of the six `:`-separated parts of an ARN on its own, so `*` never
crosses `:`, as in the guardrail's own principal matching; but inside the last part `*` crosses `/`,
where the guardrail's globs never do: `role/deploy-*` also lets `role/deploy-x/anything` through the
SCP. User-name globs may use `[...]` classes, which IAM lacks: each becomes `?` (any one character).
So the SCP is at most broader than the allowlist, never narrower, and the guardrail still judges
every event exactly; exact principal names in `provisioners` keep the two equal.

`evaluate` is a small evaluator of the policies this module writes, used by the tests and by
`scp --check`. It handles Deny statements with `Action`, `Resource` or `NotResource`, and the
`ArnNotLike`, `ArnLike`, `StringNotLike` and `StringLike` operators on `aws:PrincipalArn`. It does
not model: Allow statements (an SCP only filters; `FullAWSAccess` or another allow must also be
attached), other operators, keys or policy variables, `NotAction`, several SCPs along the OU path,
the management account (never affected by SCPs) or service-linked roles (exempt from SCPs).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from chalicelib.allowlist import Allowlist, Integration

#: The IAM calls that create a user or one of its long-lived credentials.
CREDENTIAL_ACTIONS: Final = (
    "iam:CreateUser",
    "iam:CreateAccessKey",
    "iam:CreateLoginProfile",
    "iam:UpdateLoginProfile",
    "iam:UploadSSHPublicKey",
    "iam:CreateServiceSpecificCredential",
    "iam:UploadSigningCertificate",
)
#: AWS Organizations' limit for one SCP document (characters, whitespace included).
SCP_MAX_CHARS: Final = 5120
_CLASS_RE = re.compile(r"\[[^\]]*\]")


class ScpTooLargeError(ValueError):
    """The policy does not fit the SCP size limit."""


def principal_globs(allowlist: Allowlist) -> tuple[list[str], list[Integration]]:
    """The caller globs the SCP exempts (provisioners and every `created_by`), and the integrations
    that allow anyone (`created_by: []`). The one place that reads the allowlist's raw patterns."""
    globs = list(allowlist.provisioners.patterns)
    anyone = []
    for integration in allowlist.integrations:
        if integration.any_creator:
            anyone.append(integration)
        else:
            globs += integration.created_by.patterns
    return _unique(iam_glob(g) for g in globs), anyone


def iam_glob(glob: str) -> str:
    """An allowlist glob in IAM's wildcard language (`*`, `?`): character classes become `?`."""
    return _CLASS_RE.sub("?", glob)


def user_arns(integration: Integration) -> list[str]:
    """The `iam:` user ARNs an integration's users may have (accounts, path, name globs)."""
    accounts = sorted(integration.accounts) or ["*"]
    arns = []
    for account in accounts:
        for name in integration.users.patterns:
            name = iam_glob(name)
            if integration.path:
                arns.append(f"arn:aws:iam::{account}:user{integration.path}{name}")
            else:  # any path: the root one, or any other ending in "/"
                arns += [f"arn:aws:iam::{account}:user/{name}", f"arn:aws:iam::{account}:user/*/{name}"]
    return arns


def build_scp(allowlist: Allowlist, *, restrict_resources: bool = False) -> dict[str, Any]:
    """The SCP document for `allowlist` (pure)."""
    principals, anyone = principal_globs(allowlist)
    outside_provisioners: dict[str, Any] = {
        "Sid": "DenyIamUserCredentialsOutsideProvisioners",
        "Effect": "Deny",
        "Action": list(CREDENTIAL_ACTIONS),
    }
    open_arns = _unique(arn for integration in anyone for arn in user_arns(integration))
    if open_arns:
        outside_provisioners["NotResource"] = open_arns
    else:
        outside_provisioners["Resource"] = "*"
    if principals:
        outside_provisioners["Condition"] = {"ArnNotLike": {"aws:PrincipalArn": principals}}
    statements = [outside_provisioners]
    if restrict_resources:
        statements.append(
            {
                "Sid": "DenyIamUsersOutsideIntegrations",
                "Effect": "Deny",
                "Action": list(CREDENTIAL_ACTIONS),
                "NotResource": _unique(arn for i in allowlist.integrations for arn in user_arns(i))
                or ["arn:aws:iam::*:user/guardrail-no-integrations"],
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


def render(policy: Mapping[str, Any]) -> str:
    """Minified JSON; ScpTooLargeError when it exceeds the SCP limit."""
    text = json.dumps(policy, separators=(",", ":"))
    if len(text) > SCP_MAX_CHARS:
        raise ScpTooLargeError(
            f"the SCP is {len(text):,} characters, over the {SCP_MAX_CHARS:,}-character limit: "
            "merge principal globs (one role per pipeline), drop --restrict-resources, or split the "
            "integrations across OUs with one SCP each"
        )
    return text


# -- evaluation (tests, `scp --check`) -----------------------------------------------------------


def evaluate(policy: Mapping[str, Any], *, action: str, principal_arn: str, resource: str) -> bool:
    """True when the policy's Deny statements deny `action` on `resource` by `principal_arn`."""
    context = {"aws:principalarn": principal_arn}
    for statement in policy["Statement"]:
        if statement["Effect"] != "Deny":
            continue
        if not any(_like(a.lower(), action.lower()) for a in _listed(statement["Action"])):
            continue
        if "Resource" in statement and not any(arn_like(p, resource) for p in _listed(statement["Resource"])):
            continue
        if "NotResource" in statement and any(arn_like(p, resource) for p in _listed(statement["NotResource"])):
            continue
        conditions = statement.get("Condition", {})
        if all(_condition(op, key, values, context) for op, keys in conditions.items() for key, values in keys.items()):
            return True
    return False


def arn_like(pattern: str, arn: str) -> bool:
    """IAM's ArnLike: the six `:`-separated parts are compared one by one (the last may hold `:`)."""
    if pattern == "*":
        return True
    want, have = pattern.split(":", 5), arn.split(":", 5)
    return len(want) == len(have) == 6 and all(_like(w, h) for w, h in zip(want, have, strict=True))


def _condition(operator: str, key: str, values: Any, context: Mapping[str, str]) -> bool:
    if key.lower() not in context:
        raise ValueError(f"the evaluator knows no condition key {key}")
    value = context[key.lower()]
    patterns = _listed(values)
    matchers = {"ArnLike": arn_like, "ArnNotLike": arn_like, "StringLike": _like, "StringNotLike": _like}
    if operator not in matchers:
        raise ValueError(f"the evaluator knows no condition operator {operator}")
    hit = any(matchers[operator](p, value) for p in patterns)
    return not hit if "Not" in operator else hit


def _like(pattern: str, value: str) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.DOTALL) is not None


def _listed(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
