"""The REST API for teams that automate: grant, list and revoke exceptions (IAM auth).

API Gateway verifies the SigV4 signature (`IAMAuthorizer`); this module authorizes the caller's
ARN from the request context against `approvers.iam_principals`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from chalicelib.allowlist import GlobSet
from chalicelib.approvals import ApprovalError, Approvals, GrantRequest, InvalidRequestError

_ASSUMED_ROLE_RE = re.compile(r"^arn:(aws[\w-]*):sts::(\d{12}):assumed-role/([\w+=,.@-]+)/[\w+=,.@-]+$")
_GRANT_FIELDS = {"account", "user", "days", "reason", "ticket"}


def role_name_globs(globs: GlobSet) -> GlobSet:
    """Role patterns without their path: an assumed-role ARN does not carry the role's path.

    A pattern whose last segment is only wildcards (`role/team/*`) is left out: without the path
    it would match every role in the account.
    """
    stripped = []
    for pattern in globs.patterns:
        head, sep, rest = pattern.partition(":role/")
        last = rest.rsplit("/", 1)[-1]
        if sep and "/" in rest and last.strip("*?"):
            stripped.append(f"{head}:role/{last}")
    return GlobSet(stripped)


def caller_allowed(globs: GlobSet, caller_arn: str) -> bool:
    match = _ASSUMED_ROLE_RE.match(caller_arn)
    if not match:
        return globs.matches(caller_arn)
    partition, account, role = match.groups()
    role_arn = f"arn:{partition}:iam::{account}:role/{role}"
    return globs.matches(role_arn) or role_name_globs(globs).matches(role_arn)


class RestApi:
    def __init__(self, approvals: Approvals) -> None:
        self.approvals = approvals

    def grant(self, identity: Mapping[str, Any], body: bytes | str | None) -> tuple[int, dict[str, Any]]:
        return self._guard(identity, lambda caller: (201, self.approvals.grant(self._grant_request(caller, body))))

    def list(self, identity: Mapping[str, Any], query: Mapping[str, str] | None) -> tuple[int, dict[str, Any]]:
        account = (query or {}).get("account", "")

        def run(_: str) -> tuple[int, dict[str, Any]]:
            if account and not re.match(r"^\d{12}$", account):
                raise InvalidRequestError("account must be a 12-digit account id", "account")
            return 200, {"exceptions": self.approvals.active(account)}

        return self._guard(identity, run)

    def revoke(self, identity: Mapping[str, Any], account: str, user: str) -> tuple[int, dict[str, Any]]:
        return self._guard(identity, lambda caller: (200, self.approvals.revoke(account, user, by=caller)))

    def _guard(self, identity: Mapping[str, Any], run: Any) -> tuple[int, dict[str, Any]]:
        caller = str((identity or {}).get("userArn") or "")
        if not caller or not caller_allowed(self.approvals.allowlist.approvers.iam_principals, caller):
            return 403, {"error": "the caller is not in approvers.iam_principals"}
        try:
            return run(caller)
        except ApprovalError as exc:
            body = {"error": str(exc)}
            if exc.field:
                body["field"] = exc.field
            return exc.status, body

    def _grant_request(self, caller: str, body: bytes | str | None) -> GrantRequest:
        try:
            data = json.loads(body or b"")
        except ValueError:
            raise InvalidRequestError("the body must be a JSON object", "body") from None
        if not isinstance(data, dict):
            raise InvalidRequestError("the body must be a JSON object", "body")
        unknown = sorted(set(data) - _GRANT_FIELDS)
        if unknown:
            raise InvalidRequestError(f"unknown field {unknown[0]!r}", unknown[0])
        for name in ("account", "user", "days", "reason"):
            if name not in data:
                raise InvalidRequestError(f"{name} is required", name)
        return GrantRequest(
            account=data["account"],
            user=data["user"],
            days=data["days"],
            reason=data["reason"] if isinstance(data["reason"], str) else "",
            ticket=data.get("ticket", ""),
            approver=caller,
            source="api",
        )
