"""The guardrail's own parts: which policy and roles they are, and whether the policy is intact. Pure.

An insider who can write IAM can try to switch the guardrail off quietly instead of fighting it:
make the quarantine policy allow everything (a new default version), or change what the
guardrail's roles may do. `policy.decide` uses these helpers to recognise such events, the IAM
layer to verify the live policy, and the Slack layer to name what was changed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import unquote

from chalicelib.constants import (
    CREATE_POLICY,
    DEFAULT_REMEDIATION_ROLE,
    POLICY_VERSION_EVENTS,
    QUARANTINE_POLICY_DOCUMENT,
    ROLE_POLICY_EVENTS,
)
from chalicelib.events import IamEvent

#: Statement keys whose value may be one string or a list of strings (same meaning).
_STRING_OR_LIST: Final = frozenset({"Action", "NotAction", "Resource", "NotResource"})


def parse_document(document: Any) -> Any:
    """A policy document as JSON data: IAM returns it URL-encoded, boto3 decodes it to a dict.

    Returns None when it is neither a mapping nor JSON text (plain or URL-encoded).
    """
    if isinstance(document, Mapping):
        return document
    if not isinstance(document, str):
        return None
    for text in (document, unquote(document)):
        try:
            return json.loads(text)
        except ValueError:
            continue
    return None


def _normalise(document: Any) -> Any:
    """Statements as a list, Action/Resource as sorted lists: the forms IAM treats alike."""
    if not isinstance(document, Mapping):
        return None
    statements = document.get("Statement")
    if isinstance(statements, Mapping):
        statements = [statements]
    if not isinstance(statements, list):
        return None
    normalised = []
    for statement in statements:
        if not isinstance(statement, Mapping):
            return None
        item = dict(statement)
        for key in _STRING_OR_LIST & item.keys():
            value = item[key]
            item[key] = sorted(set(value)) if isinstance(value, list) else [value]
        normalised.append(item)
    return {**document, "Statement": sorted(normalised, key=lambda s: json.dumps(s, sort_keys=True))}


def is_deny_all(document: Any) -> bool:
    """True only when `document` says exactly what `QUARANTINE_POLICY_DOCUMENT` says."""
    parsed = _normalise(parse_document(document))
    return parsed is not None and parsed == _normalise(QUARANTINE_POLICY_DOCUMENT)


def quarantine_policy_arn(account: str, partition: str, name: str) -> str:
    return f"arn:{partition}:iam::{account}:policy/{name}"


def is_quarantine_policy(arn: str, *, account: str, partition: str, name: str) -> bool:
    """The event's policy ARN names the quarantine policy of the event's own account, at path `/`.

    Only the name is compared case-insensitively (IAM policy names are unique regardless of case);
    the same name at another path or in another account is another policy.
    """
    if not (len(account) == 12 and account.isdigit()):
        return False
    prefix = quarantine_policy_arn(account, partition, "")
    return arn.startswith(prefix) and arn[len(prefix) :].lower() == name.lower()


def guarded_roles(
    remediation_role: str = DEFAULT_REMEDIATION_ROLE,
    own_role_arns: Iterable[str] = (),
    own_role_names: Iterable[str] = (),
) -> frozenset[str]:
    """Lower-cased names of the roles the guardrail acts through: its remediation role, its Lambda
    roles (GUARDRAIL_OWN_ROLE_NAMES) and those named in its own-role ARNs."""
    names = {remediation_role, *own_role_names}
    for arn in own_role_arns:
        name = arn.rsplit("/", 1)[-1] if ":role/" in arn else ""
        if name and not any(ch in name for ch in "*?"):
            names.add(name)
    return frozenset(n.lower() for n in names)


def policy_arn(event: IamEvent) -> str:
    """The policy a policy event is about; CreatePolicy names it by name and path, not ARN."""
    params = event.request_parameters
    if event.event_name != CREATE_POLICY:
        return str(params.get("policyArn") or "")
    created = event.response_elements.get("policy")
    if isinstance(created, Mapping) and isinstance(created.get("arn"), str):
        return created["arn"]
    name, path = params.get("policyName"), params.get("path") or "/"
    if not isinstance(name, str) or not isinstance(path, str):
        return ""
    return f"arn:{event.partition}:iam::{event.account}:policy{path}{name}"


def target(event: IamEvent) -> tuple[str, str] | None:
    """(kind, name) of the guardrail part an event is about: ("policy", ARN) or ("role", name)."""
    params = event.request_parameters
    if event.event_name in POLICY_VERSION_EVENTS:
        return "policy", policy_arn(event)
    if event.event_name in ROLE_POLICY_EVENTS:
        return "role", str(params.get("roleName") or "")
    return None


def role_change(event: IamEvent) -> str:
    """What a role event changed, for the alert: the managed policy ARN or the inline document."""
    params = event.request_parameters
    for key in ("policyArn", "permissionsBoundary"):
        if params.get(key):
            return str(params[key])
    name = str(params.get("policyName") or "")
    document = params.get("policyDocument")
    if document is None:
        return name
    parsed = parse_document(document)
    text = json.dumps(parsed, sort_keys=True) if parsed is not None else str(document)
    return f"{name}: {text}" if name else text
