"""Turn an EventBridge envelope or a bare CloudTrail record into a typed IAM event.

The parser trusts nothing: every field is checked for type, and anything it cannot make sense of
raises `MalformedEventError` (or `UnsupportedEventError` for well-formed records that are not IAM
API calls) with a reason a human can read. It never raises anything else.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from chalicelib.constants import (
    ACCESS_KEY,
    CLOUDTRAIL_DETAIL_TYPE,
    CREATE_ACCESS_KEY,
    CREATE_LOGIN_PROFILE,
    CREATE_USER,
    CREDENTIAL_EVENTS,
    CREDENTIAL_STATUS_EVENTS,
    IAM_EVENT_SOURCE,
    LOGIN_PROFILE,
    SERVICE_SPECIFIC_CREDENTIAL,
    SIGNING_CERTIFICATE,
    SSH_PUBLIC_KEY,
    UPDATE_ACCESS_KEY,
    UPDATE_SIGNING_CERTIFICATE,
    UPDATE_USER,
    UPLOAD_SIGNING_CERTIFICATE,
)

#: Calls that act on the caller itself when they name no userName.
_SELF_DEFAULT = frozenset(
    {CREATE_ACCESS_KEY, CREATE_LOGIN_PROFILE, UPDATE_ACCESS_KEY, UPLOAD_SIGNING_CERTIFICATE, UPDATE_SIGNING_CERTIFICATE}
)
#: Where CloudTrail names each credential kind: (responseElements object, its id field).
#: CloudTrail lower-cases the first letter of API member names (`sSHPublicKey`), so keys are
#: looked up without regard to case.
_CREDENTIAL_FIELDS = {
    ACCESS_KEY: ("accessKey", "accessKeyId"),
    LOGIN_PROFILE: ("loginProfile", ""),
    SSH_PUBLIC_KEY: ("sSHPublicKey", "sSHPublicKeyId"),
    SERVICE_SPECIFIC_CREDENTIAL: ("serviceSpecificCredential", "serviceSpecificCredentialId"),
    SIGNING_CERTIFICATE: ("certificate", "certificateId"),
}

_ACCOUNT_RE = re.compile(r"^\d{12}$")
_PANTHER_TIME_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:?\d{2})?$")


class MalformedEventError(ValueError):
    """The input is not a CloudTrail record the guardrail can read."""


class UnsupportedEventError(MalformedEventError):
    """A readable record that is not an IAM API call (another service, sign-in, ...)."""


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made the call, as CloudTrail's `userIdentity` says."""

    type: str
    arn: str = ""
    account_id: str = ""
    user_name: str = ""
    principal_id: str = ""
    access_key_id: str = ""
    session_issuer_arn: str = ""
    session_name: str = ""
    invoked_by: str = ""
    #: The role's unique id (`AROA...`, `sessionIssuer.principalId`): a re-created role has a new one.
    role_id: str = ""

    @property
    def principal_arn(self) -> str:
        """The IAM identity that allowlist globs match: a role's ARN for sessions, else the ARN."""
        if self.session_issuer_arn:
            return self.session_issuer_arn
        return self.arn

    @property
    def display(self) -> str:
        if self.type == "AssumedRole" and self.session_issuer_arn:
            return f"{self.session_issuer_arn} (session {self.session_name})"
        if self.arn:
            return self.arn
        return self.invoked_by or self.type or "unknown"


@dataclass(frozen=True, slots=True)
class IamEvent:
    """One IAM API call, with what the guardrail decides on."""

    event_id: str
    event_name: str
    event_time: datetime
    account: str
    region: str
    actor: Actor
    source_ip: str = ""
    user_agent: str = ""
    error_code: str = ""
    error_message: str = ""
    target_user_name: str = ""
    target_user_arn: str = ""
    target_user_path: str = ""
    request_tags: tuple[tuple[str, str], ...] = ()
    request_parameters: Mapping[str, Any] = field(default_factory=dict)
    response_elements: Mapping[str, Any] = field(default_factory=dict)
    #: The user's id (`AIDA...`) where the record says it (CreateUser's response).
    target_user_id: str = ""
    #: The kind of credential the call made or changed (`access_key`, `ssh_public_key`, ...).
    credential_kind: str = ""
    #: That credential's id ('' for a login profile, or where the record does not say).
    credential_id: str = ""
    #: UpdateUser: the name the user had before (target_user_name is the new one).
    renamed_from: str = ""

    @property
    def access_key_id(self) -> str:
        return self.credential_id if self.credential_kind == ACCESS_KEY else ""

    @property
    def partition(self) -> str:
        for arn in (self.target_user_arn, self.actor.arn, self.actor.session_issuer_arn):
            parts = arn.split(":")
            if len(parts) > 2 and parts[0] == "arn" and parts[1]:
                return parts[1]
        return "aws"

    @property
    def request_tag_keys(self) -> tuple[str, ...]:
        """Tag keys the call set (TagUser, CreateUser) or removed (UntagUser)."""
        keys = self.request_parameters.get("tagKeys")
        if isinstance(keys, list):
            return tuple(k for k in keys if isinstance(k, str))
        return tuple(key for key, _ in self.request_tags)

    @property
    def account_is_valid(self) -> bool:
        return bool(_ACCOUNT_RE.match(self.account))

    @property
    def actor_is_target(self) -> bool:
        """True when an IAM user acts on itself (its own key or password)."""
        return self.actor.type == "IAMUser" and self.actor.user_name == self.target_user_name


def parse_event(raw: Any) -> IamEvent:
    """Parse an EventBridge envelope or a bare CloudTrail record."""
    if not isinstance(raw, Mapping):
        raise MalformedEventError(f"expected a JSON object, got {type(raw).__name__}")
    envelope_account = ""
    record: Any = raw
    if "detail" in raw or "detail-type" in raw:
        detail_type = raw.get("detail-type")
        if detail_type != CLOUDTRAIL_DETAIL_TYPE:
            raise UnsupportedEventError(f"unsupported detail-type {detail_type!r}")
        record = raw.get("detail")
        envelope_account = _opt_str(raw, "account", "envelope")
        if not isinstance(record, Mapping):
            raise MalformedEventError("envelope has no 'detail' object")
        recipient = record.get("recipientAccountId")
        if envelope_account and isinstance(recipient, str) and recipient and recipient != envelope_account:
            # EventBridge sets `account` itself; a record naming another account was not delivered by it.
            raise MalformedEventError(
                f"envelope account {envelope_account[:20]!r} and recipientAccountId {recipient[:20]!r} disagree"
            )
    return parse_record(record, envelope_account=envelope_account)


def parse_record(record: Mapping[str, Any], *, envelope_account: str = "") -> IamEvent:
    """Parse a bare CloudTrail record (one element of a log file's `Records`)."""
    source = record.get("eventSource")
    name = record.get("eventName")
    if not isinstance(name, str) or not name:
        raise MalformedEventError("record has no eventName")
    if source != IAM_EVENT_SOURCE:
        raise UnsupportedEventError(f"eventSource {source!r} is not {IAM_EVENT_SOURCE}")
    actor = _parse_actor(record.get("userIdentity"))
    request = _opt_mapping(record, "requestParameters")
    response = _opt_mapping(record, "responseElements")
    account = (
        _opt_str(record, "recipientAccountId")
        or (envelope_account if _ACCOUNT_RE.match(envelope_account) else "")
        or actor.account_id
    )
    user_name, user_arn, user_path = _target_user(name, actor, request, response)
    kind, credential_id = _credential(name, request, response)
    renamed_from = ""
    if name == UPDATE_USER:
        new_name = _opt_str(request, "newUserName", "requestParameters")
        renamed_from = user_name if new_name and new_name != user_name else ""
        user_name = new_name or user_name
        user_path = _opt_str(request, "newPath", "requestParameters")
    return IamEvent(
        event_id=_opt_str(record, "eventID") or _synthetic_id(record),
        event_name=name,
        event_time=_parse_time(record.get("eventTime")),
        account=account,
        region=_opt_str(record, "awsRegion"),
        actor=actor,
        source_ip=_opt_str(record, "sourceIPAddress"),
        user_agent=_opt_str(record, "userAgent"),
        error_code=_opt_str(record, "errorCode"),
        error_message=_opt_str(record, "errorMessage"),
        target_user_name=user_name,
        target_user_arn=user_arn,
        target_user_path=user_path,
        target_user_id=_opt_str(_opt_mapping(response, "user", "responseElements"), "userId", "responseElements.user")
        if name == CREATE_USER
        else "",
        credential_kind=kind,
        credential_id=credential_id,
        renamed_from=renamed_from,
        request_tags=_request_tags(request),
        request_parameters=request,
        response_elements=response,
    )


def _parse_actor(identity: Any) -> Actor:
    if identity is None:
        return Actor(type="Unknown")
    if not isinstance(identity, Mapping):
        raise MalformedEventError("userIdentity is not an object")
    session = _opt_mapping(identity, "sessionContext", "userIdentity")
    issuer = _opt_mapping(session, "sessionIssuer", "userIdentity.sessionContext")
    arn = _opt_str(identity, "arn", "userIdentity")
    actor_type = _opt_str(identity, "type", "userIdentity") or "Unknown"
    session_name = ""
    if actor_type == "AssumedRole" and "/" in arn:
        session_name = arn.rsplit("/", 1)[1]
    return Actor(
        type=actor_type,
        arn=arn,
        account_id=_opt_str(identity, "accountId", "userIdentity"),
        user_name=_opt_str(identity, "userName", "userIdentity"),
        principal_id=_opt_str(identity, "principalId", "userIdentity"),
        access_key_id=_opt_str(identity, "accessKeyId", "userIdentity"),
        session_issuer_arn=_opt_str(issuer, "arn", "sessionIssuer"),
        session_name=session_name,
        invoked_by=_opt_str(identity, "invokedBy", "userIdentity"),
        role_id=_opt_str(issuer, "principalId", "sessionIssuer"),
    )


def _target_user(
    name: str, actor: Actor, request: Mapping[str, Any], response: Mapping[str, Any]
) -> tuple[str, str, str]:
    """The user the call was about: (name, ARN, path), each '' where the record does not say."""
    if name == CREATE_USER:
        user = _opt_mapping(response, "user", "responseElements")
        user_name = _opt_str(user, "userName", "responseElements.user") or _opt_str(
            request, "userName", "requestParameters"
        )
        path = _opt_str(user, "path", "responseElements.user") or _opt_str(request, "path", "requestParameters")
        return user_name, _opt_str(user, "arn", "responseElements.user"), path
    user_name = ""
    if name in CREDENTIAL_EVENTS:
        nested = _CREDENTIAL_FIELDS[CREDENTIAL_EVENTS[name]][0]
        user_name = _opt_str(_field(response, nested, "responseElements"), "userName", nested)
    user_name = user_name or _opt_str(request, "userName", "requestParameters")
    if not user_name and name in _SELF_DEFAULT and actor.type == "IAMUser":
        # Without a userName the API acts on the caller itself.
        return actor.user_name, actor.arn, ""
    return user_name, "", ""


def _credential(name: str, request: Mapping[str, Any], response: Mapping[str, Any]) -> tuple[str, str]:
    """(kind, id) of the credential a creation or status call names; ('', '') for other calls."""
    if name in CREDENTIAL_STATUS_EVENTS:
        kind = CREDENTIAL_STATUS_EVENTS[name]
        return kind, _opt_str(_ci(request), _CREDENTIAL_FIELDS[kind][1].lower(), "requestParameters")
    if name not in CREDENTIAL_EVENTS:
        return "", ""
    kind = CREDENTIAL_EVENTS[name]
    nested, id_field = _CREDENTIAL_FIELDS[kind]
    if not id_field:
        return kind, ""
    return kind, _opt_str(_ci(_field(response, nested, "responseElements")), id_field.lower(), nested)


def _ci(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """The same mapping with lower-case keys (CloudTrail's casing of acronyms varies)."""
    return {str(k).lower(): v for k, v in obj.items()}


def _field(obj: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    """The object under `key`, matched without regard to case."""
    return _opt_mapping(_ci(obj), key.lower(), where)


def _request_tags(request: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    tags = request.get("tags")
    if tags is None:
        return ()
    if not isinstance(tags, list):
        raise MalformedEventError("requestParameters.tags is not a list")
    pairs = []
    for index, tag in enumerate(tags):
        if not isinstance(tag, Mapping):
            raise MalformedEventError(f"requestParameters.tags[{index}] is not an object")
        key = _opt_str(tag, "key", f"requestParameters.tags[{index}]")
        pairs.append((key, _opt_str(tag, "value", f"requestParameters.tags[{index}]")))
    return tuple(pairs)


def _parse_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise MalformedEventError("eventTime is missing or not a string")
    match = _PANTHER_TIME_RE.match(value.strip())
    if not match:
        raise MalformedEventError(f"eventTime {value[:40]!r} is not an ISO 8601 time")
    day, clock, fraction, zone = match.groups()
    micros = (fraction or "0")[:6].ljust(6, "0")
    text = f"{day}T{clock}.{micros}{'+00:00' if zone in (None, 'Z') else zone}"
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError) as exc:  # OverflowError: year 1 or 9999 moved out of range by the zone
        raise MalformedEventError(f"eventTime {value[:40]!r}: {exc}") from None


def _synthetic_id(record: Mapping[str, Any]) -> str:
    """A stable id for records without eventID (old eventVersion 1.0 examples)."""
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256-" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _opt_str(obj: Mapping[str, Any], key: str, where: str = "record") -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    raise MalformedEventError(f"{where}.{key} is not a string")


def _opt_mapping(obj: Mapping[str, Any], key: str, where: str = "record") -> Mapping[str, Any]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise MalformedEventError(f"{where}.{key} is not an object")
    return value
