"""IAM actions: each idempotent, each tolerant of the user having been deleted meanwhile."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.constants import (
    ACCESS_KEY,
    QUARANTINE_POLICY_DOCUMENT,
    SERVICE_SPECIFIC_CREDENTIAL,
    SIGNING_CERTIFICATE,
    SSH_PUBLIC_KEY,
)
from chalicelib.policy import RESTORE_QUARANTINE_POLICY, UserFacts, credential_ref
from chalicelib.selfguard import is_deny_all

log = logging.getLogger(__name__)

DONE: Final = "done"
GONE: Final = "user_gone"
FAILED: Final = "failed"
#: The account could not be reached (no remediation role, or outside the organization).
UNREACHABLE: Final = "account_unreachable"
#: The quarantine policy's default version is deny-all: nothing to do.
INTACT: Final = "intact"
#: The quarantine policy's default version is not deny-all and was left so (monitor mode, dry run).
TAMPERED: Final = "tampered"
#: IAM keeps at most this many versions of a managed policy.
POLICY_VERSIONS_MAX: Final = 5
#: The record named no credential id and none could be identified in IAM: nothing was done.
NOT_IDENTIFIED: Final = "not_identified"


@dataclass(frozen=True, slots=True)
class CredentialApi:
    """The IAM calls that list one credential kind and set its status."""

    list_call: str
    list_key: str
    id_field: str
    date_field: str
    update_call: str
    paginated: bool = True


#: Every credential kind that has an Active/Inactive status (a login profile has none: it is deleted).
CREDENTIAL_APIS: Final = {
    ACCESS_KEY: CredentialApi(
        "list_access_keys", "AccessKeyMetadata", "AccessKeyId", "CreateDate", "update_access_key"
    ),
    SSH_PUBLIC_KEY: CredentialApi(
        "list_ssh_public_keys", "SSHPublicKeys", "SSHPublicKeyId", "UploadDate", "update_ssh_public_key"
    ),
    SERVICE_SPECIFIC_CREDENTIAL: CredentialApi(
        "list_service_specific_credentials",
        "ServiceSpecificCredentials",
        "ServiceSpecificCredentialId",
        "CreateDate",
        "update_service_specific_credential",
        paginated=False,
    ),
    SIGNING_CERTIFICATE: CredentialApi(
        "list_signing_certificates", "Certificates", "CertificateId", "UploadDate", "update_signing_certificate"
    ),
}


@dataclass(frozen=True, slots=True)
class Credential:
    kind: str
    id: str
    active: bool
    created: Any = None

    @property
    def ref(self) -> str:
        return credential_ref(self.kind, self.id)


class AccountAccessError(RuntimeError):
    """The guardrail cannot act in an account: assuming its remediation role failed."""


_TAG_VALUE_MAX: Final = 256
_TAG_DROP_RE = re.compile(r"[\"'`()\[\]{}<>]")
_TAG_SPACE_RE = re.compile(r"[,;|!?&]")
_TAG_UNSAFE_RE = re.compile(r"[^\w .:/=+\-@]", re.UNICODE)


def sanitise_tag_value(value: str) -> str:
    """Fit a value to IAM's tag rules: letters, digits, spaces and `_ . : / = + - @`, 256 chars.

    Quotes and brackets are dropped, separators become spaces, anything else (`*`) becomes `_`.
    """
    cleaned = _TAG_SPACE_RE.sub(" ", _TAG_DROP_RE.sub("", str(value)))
    cleaned = _TAG_UNSAFE_RE.sub("_", " ".join(cleaned.split()))
    return cleaned[:_TAG_VALUE_MAX].strip()


@dataclass(frozen=True, slots=True)
class ActionResult:
    action: str
    target: str
    status: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == DONE

    def describe(self) -> str:
        text = f"{self.action} {self.target}: {self.status}"
        return f"{text} ({self.detail})" if self.detail else text


def error_code(exc: Exception) -> str:
    """The AWS error code of a botocore exception, or its class name."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "")) or type(exc).__name__
    return type(exc).__name__


class IamActions:
    """The IAM calls the guardrail makes, for one account's IAM client."""

    def __init__(self, client: Any, *, policy_name: str) -> None:
        self._iam = client
        self.policy_name = policy_name

    @property
    def client(self) -> Any:
        """The IAM client these actions use (the silence checks tag the policy with it)."""
        return self._iam

    def quarantine_policy_arn(self, account: str, partition: str = "aws") -> str:
        return f"arn:{partition}:iam::{account}:policy/{self.policy_name}"

    def attach_quarantine(self, user: str, account: str, partition: str = "aws") -> ActionResult:
        arn = self.quarantine_policy_arn(account, partition)
        try:
            self._iam.attach_user_policy(UserName=user, PolicyArn=arn)
        except (ClientError, BotoCoreError) as exc:
            if error_code(exc) == "NoSuchEntity":
                if not self.user_exists(user):
                    return ActionResult("attach_quarantine_policy", user, GONE, "user no longer exists")
                return ActionResult(
                    "attach_quarantine_policy", user, FAILED, f"quarantine policy {arn} is missing (run bootstrap)"
                )
            return self._failed("attach_quarantine_policy", user, exc)
        return ActionResult("attach_quarantine_policy", user, DONE, arn)

    def detach_quarantine(self, user: str, account: str, partition: str = "aws") -> ActionResult:
        arn = self.quarantine_policy_arn(account, partition)
        try:
            self._iam.detach_user_policy(UserName=user, PolicyArn=arn)
        except (ClientError, BotoCoreError) as exc:
            if error_code(exc) == "NoSuchEntity":
                # Either the policy was not attached (already released) or the user is gone.
                gone = not self.user_exists(user)
                return ActionResult("detach_quarantine_policy", user, GONE if gone else DONE, "not attached")
            return self._failed("detach_quarantine_policy", user, exc)
        return ActionResult("detach_quarantine_policy", user, DONE, arn)

    def tag_user(self, user: str, tags: Iterable[tuple[str, str]]) -> ActionResult:
        payload = [{"Key": key, "Value": sanitise_tag_value(value)} for key, value in tags]
        if not payload:
            return ActionResult("tag_user", user, DONE, "nothing to tag")
        return self._call("tag_user", user, self._iam.tag_user, UserName=user, Tags=payload)

    def untag_user(self, user: str, keys: Iterable[str]) -> ActionResult:
        keys = list(keys)
        if not keys:
            return ActionResult("untag_user", user, DONE, "nothing to remove")
        return self._call("untag_user", user, self._iam.untag_user, UserName=user, TagKeys=keys)

    def set_key_status(self, user: str, key_id: str, status: str) -> ActionResult:
        return self.set_credential_status(user, ACCESS_KEY, key_id, status)

    def set_credential_status(self, user: str, kind: str, credential_id: str, status: str) -> ActionResult:
        """Activate or deactivate one credential (never delete it: approval can give it back)."""
        api = CREDENTIAL_APIS[kind]
        noun = "key" if kind == ACCESS_KEY else kind
        action = f"{'deactivate' if status == 'Inactive' else 'activate'}_{noun}"
        method = getattr(self._iam, api.update_call)
        result = self._call(action, user, method, UserName=user, Status=status, **{api.id_field: credential_id})
        return ActionResult(action, f"{user}/{credential_id}", result.status, result.detail)

    def credentials(
        self, user: str, kinds: Iterable[str] = tuple(CREDENTIAL_APIS), *, errors: list[str] | None = None
    ) -> list[Credential]:
        """The user's credentials of `kinds`, oldest first (one list call per kind).

        A kind that cannot be listed is named in `errors` when given (the others are still listed),
        else its error propagates. A user that no longer exists always propagates NoSuchEntity.
        """
        found = []
        for kind in kinds:
            api = CREDENTIAL_APIS[kind]
            try:
                if api.paginated:
                    pages = list(self._iam.get_paginator(api.list_call).paginate(UserName=user))
                else:
                    pages = [getattr(self._iam, api.list_call)(UserName=user)]
            except Exception as exc:  # botocore errors, and parser errors of a reply that is not AWS's
                if errors is None or error_code(exc) == "NoSuchEntity":
                    raise
                errors.append(f"cannot list {kind} credentials: {error_code(exc)}")
                continue
            found += [
                Credential(kind, meta[api.id_field], meta.get("Status") == "Active", meta.get(api.date_field))
                for page in pages
                for meta in page.get(api.list_key, [])
            ]
        return sorted(found, key=lambda c: (c.kind, str(c.created)))

    def delete_login_profile(self, user: str) -> ActionResult:
        try:
            self._iam.delete_login_profile(UserName=user)
        except (ClientError, BotoCoreError) as exc:
            if error_code(exc) == "NoSuchEntity":
                gone = not self.user_exists(user)
                return ActionResult("delete_login_profile", user, GONE if gone else DONE, "no login profile")
            return self._failed("delete_login_profile", user, exc)
        return ActionResult("delete_login_profile", user, DONE)

    def user_exists(self, user: str) -> bool:
        """False only when IAM says the user does not exist; a failed read counts as existing."""
        try:
            self._iam.get_user(UserName=user)
        except (ClientError, BotoCoreError) as exc:
            return error_code(exc) != "NoSuchEntity"
        return True

    def user_tags(self, user: str) -> dict[str, str]:
        pages = self._iam.get_paginator("list_user_tags").paginate(UserName=user)
        return {t["Key"]: t["Value"] for page in pages for t in page.get("Tags", [])}

    def user_id(self, user: str) -> str | None:
        """The user's id (`AIDA...`), or None if it does not exist; other errors propagate."""
        try:
            return str(self._iam.get_user(UserName=user)["User"]["UserId"])
        except (ClientError, BotoCoreError) as exc:
            if error_code(exc) == "NoSuchEntity":
                return None
            raise

    def user_facts(self, user: str, *, path: bool, keys: bool, user_id: bool = False) -> UserFacts | None:
        """Read the path, id and active keys of `user`; None if it no longer exists."""
        found_path: str | None = None
        found_id: str | None = None
        key_ids: tuple[str, ...] | None = None
        try:
            if path or user_id:
                details = self._iam.get_user(UserName=user)["User"]
                found_path, found_id = details.get("Path", "/"), details.get("UserId")
            if keys:
                pages = self._iam.get_paginator("list_access_keys").paginate(UserName=user)
                key_ids = tuple(
                    meta["AccessKeyId"]
                    for page in pages
                    for meta in page.get("AccessKeyMetadata", [])
                    if meta.get("Status") == "Active"
                )
        except (ClientError, BotoCoreError) as exc:
            if error_code(exc) == "NoSuchEntity":
                return None
            log.warning("could not read IAM facts for %s: %s", user, error_code(exc))
        return UserFacts(path=found_path, active_key_ids=key_ids, user_id=found_id)

    def role(self, role_name: str) -> tuple[str, str]:
        """A role's ARN (with its path) and id; raises botocore's error when it cannot be read."""
        role = self._iam.get_role(RoleName=role_name)["Role"]
        return str(role["Arn"]), str(role.get("RoleId", ""))

    def active_keys(self, user: str) -> list[str]:
        """Active key ids of `user`, oldest first."""
        pages = self._iam.get_paginator("list_access_keys").paginate(UserName=user)
        metas = [m for page in pages for m in page.get("AccessKeyMetadata", []) if m.get("Status") == "Active"]
        return [m["AccessKeyId"] for m in sorted(metas, key=lambda m: m["CreateDate"])]

    def user_details(self) -> Iterator[dict[str, Any]]:
        """Every IAM user with tags and attached policies: GetAccountAuthorizationDetails, 1,000 a page."""
        pages = self._iam.get_paginator("get_account_authorization_details").paginate(
            Filter=["User"], PaginationConfig={"PageSize": 1000}
        )
        for page in pages:
            yield from page.get("UserDetailList", [])

    def credential_report(self, *, attempts: int = 20, wait: Callable[[float], None] = time.sleep) -> bytes:
        """The account's credential report (generated at most every 4 hours by IAM)."""
        for attempt in range(attempts):
            if self._iam.generate_credential_report().get("State") == "COMPLETE":
                break
            wait(min(2.0, 0.2 * (attempt + 1)))
        else:
            raise RuntimeError("the credential report was not ready in time")
        return bytes(self._iam.get_credential_report()["Content"])

    def check_quarantine_policy(self, account: str, partition: str = "aws", *, restore: bool = True) -> ActionResult:
        """Read the quarantine policy's default version (2 reads); restore deny-all unless it is.

        Reading the live policy, not trusting the event, keeps this idempotent and loop-free.
        """
        arn = self.quarantine_policy_arn(account, partition)
        try:
            default = self._iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
            version = self._iam.get_policy_version(PolicyArn=arn, VersionId=default)["PolicyVersion"]
        except (ClientError, BotoCoreError) as exc:
            if error_code(exc) == "NoSuchEntity":
                return ActionResult(RESTORE_QUARANTINE_POLICY, arn, FAILED, "the policy does not exist (run bootstrap)")
            return self._failed(RESTORE_QUARANTINE_POLICY, arn, exc)
        if is_deny_all(version.get("Document")):
            return ActionResult(RESTORE_QUARANTINE_POLICY, arn, INTACT, f"default version {default} is deny-all")
        if not restore:
            return ActionResult(RESTORE_QUARANTINE_POLICY, arn, TAMPERED, f"default version {default} is not deny-all")
        return self._restore_quarantine_policy(arn, default)

    def _restore_quarantine_policy(self, arn: str, tampered: str) -> ActionResult:
        """A new deny-all default version; then every other version goes, so none can be made default."""
        try:
            versions = self._iam.list_policy_versions(PolicyArn=arn)["Versions"]
            others = sorted((v for v in versions if not v["IsDefaultVersion"]), key=lambda v: v["CreateDate"])
            stale = [v["VersionId"] for v in others]
            if len(versions) >= POLICY_VERSIONS_MAX and stale:
                self._iam.delete_policy_version(PolicyArn=arn, VersionId=stale.pop(0))
            created = self._iam.create_policy_version(
                PolicyArn=arn, PolicyDocument=json.dumps(QUARANTINE_POLICY_DOCUMENT), SetAsDefault=True
            )["PolicyVersion"]["VersionId"]
        except (ClientError, BotoCoreError) as exc:
            return self._failed(RESTORE_QUARANTINE_POLICY, arn, exc)
        kept = []
        for version_id in [tampered, *stale]:
            try:
                self._iam.delete_policy_version(PolicyArn=arn, VersionId=version_id)
            except (ClientError, BotoCoreError) as exc:
                log.warning("could not delete %s of %s: %s", version_id, arn, error_code(exc))
                kept.append(version_id)
        detail = f"default version {tampered} was not deny-all: {created} (deny-all) is the default now"
        return ActionResult(
            RESTORE_QUARANTINE_POLICY, arn, DONE, detail + (f"; could not delete {', '.join(kept)}" if kept else "")
        )

    def _call(self, action: str, user: str, method: Any, **kwargs: Any) -> ActionResult:
        try:
            method(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            if error_code(exc) == "NoSuchEntity":
                return ActionResult(action, user, GONE, "user or key no longer exists")
            return self._failed(action, user, exc)
        return ActionResult(action, user, DONE)

    @staticmethod
    def _failed(action: str, user: str, exc: Exception) -> ActionResult:
        code = error_code(exc)
        log.error("IAM %s for %s failed: %s", action, user, code)
        return ActionResult(action, user, FAILED, code)
