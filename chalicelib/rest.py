"""The REST API for teams that automate: grant, list and revoke exceptions (IAM auth).

API Gateway verifies the SigV4 signature (`IAMAuthorizer`); this module authorizes the caller
against `approvers.iam_principals`. An assumed-role caller's ARN
(`arn:aws:sts::<account>:assumed-role/<role>/<session>`) does not carry the role's path, so the
role's real ARN is read with `iam:GetRole` (cached per container) and the globs are matched against
it. If it cannot be read, the caller is refused.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.approvals import ApprovalError, Approvals, GrantRequest, InvalidRequestError
from chalicelib.arns import parse_assumed_role_arn
from chalicelib.iam import AccountAccessError, IamActions, error_code

log = logging.getLogger(__name__)

_GRANT_FIELDS = {"account", "user", "days", "reason", "ticket"}
_CACHE_MAX = 1024


class CallerUnresolvedError(Exception):
    """The role behind an assumed-role caller could not be read: the caller is refused."""


class CallerRoles:
    """The IAM principal behind a REST caller: the role's full ARN (with its path) for a session.

    `iam:GetRole` runs in the caller's account: at home directly, elsewhere through the remediation
    role (`iam_for`). Answers are cached per container, keyed by account and role name; when API
    Gateway names the caller's role id (`identity.caller`, `AROA...:session`), a cached answer for
    another id (a re-created role) is read again, and a role whose id differs is refused.
    """

    def __init__(self, iam_for: Callable[[str], IamActions]) -> None:
        self._iam_for = iam_for
        self._cache: dict[tuple[str, str], tuple[str, str]] = {}

    def principal(self, caller_arn: str, caller_id: str = "") -> str:
        """The ARN to match against principal globs; raises `CallerUnresolvedError`."""
        assumed = parse_assumed_role_arn(caller_arn)
        if assumed is None:
            return caller_arn  # an IAM user's ARN carries its path; other callers match no glob
        role_id = caller_id.split(":", 1)[0] if caller_id.startswith("AROA") else ""
        key = (assumed.account, assumed.role)
        cached = self._cache.get(key)
        if cached is None or (role_id and cached[1] != role_id):
            cached = self._read(assumed.account, assumed.role)
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[key] = cached
        arn, found_id = cached
        if role_id and found_id != role_id:
            raise CallerUnresolvedError(
                f"role {assumed.role} in {assumed.account} is not the role the caller's session belongs to"
            )
        return arn

    def _read(self, account: str, role: str) -> tuple[str, str]:
        try:
            return self._iam_for(account).role(role)
        except AccountAccessError as exc:
            reason = str(exc)
        except (ClientError, BotoCoreError, KeyError) as exc:
            reason = error_code(exc)
        log.warning(json.dumps({"msg": "caller role unreadable", "account": account, "role": role, "error": reason}))
        raise CallerUnresolvedError(
            f"cannot read role {role} in account {account} to check its path ({reason}); the caller is refused"
        )


class RestApi:
    def __init__(self, approvals: Approvals, callers: CallerRoles) -> None:
        self.approvals = approvals
        self.callers = callers

    def grant(self, identity: Mapping[str, Any], body: bytes | str | None) -> tuple[int, dict[str, Any]]:
        def run(caller: str, principal: str) -> tuple[int, dict[str, Any]]:
            return 201, self.approvals.grant(self._grant_request(caller, principal, body))

        return self._guard(identity, run)

    def list(self, identity: Mapping[str, Any], query: Mapping[str, str] | None) -> tuple[int, dict[str, Any]]:
        account = (query or {}).get("account", "")

        def run(_caller: str, _principal: str) -> tuple[int, dict[str, Any]]:
            if account and not re.match(r"^\d{12}$", account):
                raise InvalidRequestError("account must be a 12-digit account id", "account")
            return 200, {"exceptions": self.approvals.active(account)}

        return self._guard(identity, run)

    def revoke(self, identity: Mapping[str, Any], account: str, user: str) -> tuple[int, dict[str, Any]]:
        return self._guard(identity, lambda caller, _: (200, self.approvals.revoke(account, user, by=caller)))

    def _guard(self, identity: Mapping[str, Any], run: Any) -> tuple[int, dict[str, Any]]:
        identity = identity or {}
        caller = str(identity.get("userArn") or "")
        if not caller:
            return 403, {"error": "the caller is not in approvers.iam_principals"}
        try:
            principal = self.callers.principal(caller, str(identity.get("caller") or ""))
        except CallerUnresolvedError as exc:
            return 403, {"error": str(exc)}
        if not self.approvals.allowlist.approvers.iam_principals.matches(principal):
            return 403, {"error": "the caller is not in approvers.iam_principals"}
        try:
            return run(caller, principal)
        except ApprovalError as exc:
            body = {"error": str(exc)}
            if exc.field:
                body["field"] = exc.field
            return exc.status, body

    def _grant_request(self, caller: str, principal: str, body: bytes | str | None) -> GrantRequest:
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
            approver_principal=principal,
            source="api",
        )
