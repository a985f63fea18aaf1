"""The allowlist of approved integrations: strict schema, loud failures.

An invalid allowlist raises `AllowlistError` listing every problem with the entry and field it
concerns. It is never read as "allow everything" or "allow nothing".
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml

from chalicelib.arns import PatternSet, PrincipalGlobs, glob_problem
from chalicelib.constants import DEFAULT_MAX_ACCESS_KEYS, ENFORCE, MODES

SUPPORTED_VERSIONS = frozenset({1})
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
DEFAULT_PATH = Path(__file__).with_name("allowlist.yaml")
MAX_EXCEPTION_DAYS = 365

_ACCOUNT_RE = re.compile(r"^\d{12}$")
_SLACK_USER_RE = re.compile(r"^[UW][A-Z0-9]{2,}$")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_USER_GLOB_RE = re.compile(r"^[\w+=,.@*?\[\]!-]{1,64}$")
_PATH_RE = re.compile(r"^/([\x21-\x7e]*/)?$")

_TOP_KEYS = {
    "version",
    "mode",
    "exception_max_days",
    "approvers",
    "provisioners",
    "integrations",
    "mfa_grace_days",
    "max_key_age_days",
    "max_unused_days",
}
_APPROVER_KEYS = {"slack_user_ids", "iam_principals"}
_INTEGRATION_KEYS = {
    "name",
    "owner",
    "purpose",
    "services",
    "resources",
    "used_from",
    "users",
    "accounts",
    "path",
    "max_access_keys",
    "console_access",
    "expires",
    "ticket",
    "created_by",
}
_REQUIRED_INTEGRATION_KEYS = ("name", "owner", "purpose", "users")


class AllowlistError(ValueError):
    """The allowlist is invalid; `problems` names each entry and field."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        listing = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid allowlist {source}: {len(problems)} problem(s)\n{listing}")


class GlobSet(PatternSet):
    """User-name globs (`*`, `?`, `[...]`), case-sensitive.

    Only for IAM user names, which cannot contain `:` or `/`; principal ARNs are matched segment by
    segment by `arns.PrincipalGlobs`.
    """

    __slots__ = ()
    translate = staticmethod(fnmatch.translate)

    def matches(self, value: str) -> bool:
        # fnmatch's `*` crosses every character: a value that is not a plain user name (an ARN, a
        # path) never matches, whatever the glob, so no ARN can be matched here by mistake.
        return ":" not in value and "/" not in value and super().matches(value)


@dataclass(frozen=True, slots=True)
class Integration:
    """One approved third-party integration."""

    name: str
    owner: str
    purpose: str
    users: GlobSet
    created_by: PrincipalGlobs
    any_creator: bool = False
    accounts: frozenset[str] = frozenset()
    path: str = ""
    max_access_keys: int = DEFAULT_MAX_ACCESS_KEYS
    console_access: bool = False
    expires: date | None = None
    ticket: str = ""
    services: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    used_from: str = ""

    def creator_allowed(self, principal_arn: str) -> bool:
        """`created_by: []` allows anyone; otherwise the caller must match a glob."""
        return self.any_creator or self.created_by.matches(principal_arn)

    def is_expired(self, on: date) -> bool:
        """`expires` is the last day the integration is approved (UTC)."""
        return self.expires is not None and on > self.expires


@dataclass(frozen=True, slots=True)
class Approvers:
    slack_user_ids: frozenset[str]
    iam_principals: PrincipalGlobs


@dataclass(frozen=True, slots=True)
class Allowlist:
    version: int
    mode: str
    exception_max_days: int
    approvers: Approvers
    provisioners: PrincipalGlobs
    integrations: tuple[Integration, ...]
    source: str = "<memory>"
    mfa_grace_days: int = 7
    max_key_age_days: int = 90
    max_unused_days: int = 90

    def candidates(self, user_name: str) -> list[Integration]:
        """Integrations whose user-name globs match, in file order."""
        return [i for i in self.integrations if i.users.matches(user_name)]


def load_allowlist(path: str | os.PathLike[str] | None = None) -> Allowlist:
    """Read and validate the allowlist at `path`, `GUARDRAIL_ALLOWLIST`, or the bundled file."""
    chosen = Path(path or os.environ.get("GUARDRAIL_ALLOWLIST") or DEFAULT_PATH)
    source = str(chosen)
    try:
        text = chosen.read_text(encoding="utf-8")
    except OSError as exc:
        raise AllowlistError(source, [f"cannot read the file: {exc.strerror or exc}"]) from None
    return parse_allowlist(text, source=source)


def parse_allowlist(text: str, *, source: str = "<memory>") -> Allowlist:
    try:
        data = yaml.load(text, Loader=_SAFE_LOADER)  # noqa: S506 - a safe loader (libyaml's when present)
    except yaml.YAMLError as exc:
        raise AllowlistError(source, [f"not valid YAML: {exc}"]) from None
    return validate_allowlist(data, source=source)


def validate_allowlist(data: Any, *, source: str = "<memory>") -> Allowlist:
    """Check the parsed document against the schema; collect every problem before raising."""
    v = _Validator()
    if not isinstance(data, Mapping):
        raise AllowlistError(source, ["the document must be a mapping with 'version' and 'integrations'"])
    v.unknown_keys(data, _TOP_KEYS, "top level")
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version not in SUPPORTED_VERSIONS:
        v.problem(f"version: unsupported value {version!r} (supported: {sorted(SUPPORTED_VERSIONS)})")
    mode = data.get("mode", ENFORCE)
    if not isinstance(mode, str) or mode not in MODES:
        v.problem(f"mode: must be one of {sorted(MODES)}, got {mode!r}")
    max_days = v.integer(data, "exception_max_days", "top level", default=30, low=1, high=MAX_EXCEPTION_DAYS)
    approvers = _approvers(v, data.get("approvers"))
    provisioners = PrincipalGlobs(v.principal_globs(data, "provisioners", "top level"))
    integrations = _integrations(v, data.get("integrations"), provisioners)
    hygiene = {
        key: v.integer(data, key, "top level", default=default, low=0, high=3650)
        for key, default in (("mfa_grace_days", 7), ("max_key_age_days", 90), ("max_unused_days", 90))
    }
    if v.problems:
        raise AllowlistError(source, v.problems)
    return Allowlist(
        version=int(version),
        mode=str(mode),
        exception_max_days=max_days,
        approvers=approvers,
        provisioners=provisioners,
        integrations=integrations,
        source=source,
        **hygiene,
    )


def _approvers(v: _Validator, raw: Any) -> Approvers:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        v.problem("approvers: must be a mapping with slack_user_ids and iam_principals")
        raw = {}
    v.unknown_keys(raw, _APPROVER_KEYS, "approvers")
    ids = v.strings(raw, "slack_user_ids", "approvers")
    for slack_id in ids:
        if not _SLACK_USER_RE.match(slack_id):
            v.problem(f"approvers.slack_user_ids: {slack_id!r} is not a Slack user id (U... or W...)")
    return Approvers(frozenset(ids), PrincipalGlobs(v.principal_globs(raw, "iam_principals", "approvers")))


def _integrations(v: _Validator, raw: Any, provisioners: PrincipalGlobs) -> tuple[Integration, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        v.problem("integrations: must be a list")
        return ()
    seen: set[str] = set()
    result = []
    for index, entry in enumerate(raw):
        label = f"integrations[{index}]"
        if not isinstance(entry, Mapping):
            v.problem(f"{label}: must be a mapping")
            continue
        name = entry.get("name")
        if isinstance(name, str):
            label = f"{label} ({name})"
        count = len(v.problems)
        integration = _integration(v, entry, label, provisioners)
        if isinstance(name, str) and name in seen:
            v.problem(f"{label}.name: duplicate name {name!r}")
        seen.add(name if isinstance(name, str) else "")
        if integration is not None and len(v.problems) == count:
            result.append(integration)
    return tuple(result)


def _integration(
    v: _Validator, entry: Mapping[str, Any], label: str, provisioners: PrincipalGlobs
) -> Integration | None:
    v.unknown_keys(entry, _INTEGRATION_KEYS, label)
    for key in _REQUIRED_INTEGRATION_KEYS:
        if key not in entry:
            v.problem(f"{label}.{key}: required")
    name = v.text(entry, "name", label)
    if name and not _NAME_RE.match(name):
        v.problem(f"{label}.name: {name!r} must be lower-case letters, digits, '_', '.', '-'")
    users = v.strings(entry, "users", label)
    if "users" in entry and not users:
        v.problem(f"{label}.users: must list at least one user-name glob")
    for glob in users:
        if not _USER_GLOB_RE.match(glob) or not _brackets_balanced(glob):
            v.problem(f"{label}.users: {glob!r} is not a valid IAM user-name glob")
        elif glob.strip("*?") == "":
            v.problem(f"{label}.users: {glob!r} would approve every user")
    accounts = v.strings(entry, "accounts", label)
    for account in accounts:
        if not _ACCOUNT_RE.match(account):
            v.problem(f"{label}.accounts: {account!r} is not a 12-digit account id (quote it in YAML)")
    path = v.text(entry, "path", label)
    if path and not _PATH_RE.match(path):
        v.problem(f"{label}.path: {path!r} must start and end with '/'")
    created_by = v.principal_globs(entry, "created_by", label) if "created_by" in entry else None
    if "created_by" in entry and entry["created_by"] is None:
        v.problem(f"{label}.created_by: empty value; write created_by: [] to allow anyone, or list principals")
    if created_by is None and not provisioners:
        v.problem(
            f"{label}.created_by: not set and there are no top-level provisioners; "
            "list who may create this integration's users, or write created_by: [] to allow anyone"
        )
    return Integration(
        name=name,
        owner=v.text(entry, "owner", label),
        purpose=v.text(entry, "purpose", label),
        users=GlobSet(users),
        created_by=provisioners if created_by is None else PrincipalGlobs(created_by),
        any_creator=entry.get("created_by") == [],
        accounts=frozenset(accounts),
        path=path,
        max_access_keys=v.integer(entry, "max_access_keys", label, default=DEFAULT_MAX_ACCESS_KEYS, low=0, high=2),
        console_access=v.boolean(entry, "console_access", label),
        expires=v.day(entry, "expires", label),
        ticket=v.text(entry, "ticket", label),
        services=tuple(v.strings(entry, "services", label)),
        resources=tuple(v.strings(entry, "resources", label)),
        used_from=v.text(entry, "used_from", label),
    )


def _brackets_balanced(glob: str) -> bool:
    depth = 0
    for char in glob:
        if char == "[":
            if depth:
                return False
            depth = 1
        elif char == "]" and depth:
            depth = 0
    return depth == 0


class _Validator:
    """Collects problems; each accessor returns a safe default after recording one."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, message: str) -> None:
        self.problems.append(message)

    def unknown_keys(self, obj: Mapping[str, Any], allowed: set[str], label: str) -> None:
        for key in obj:
            if key not in allowed:
                self.problem(f"{label}: unknown key {key!r} (allowed: {', '.join(sorted(allowed))})")

    def text(self, obj: Mapping[str, Any], key: str, label: str) -> str:
        value = obj.get(key)
        if value is None:
            return ""
        if not isinstance(value, str) or not value.strip():
            self.problem(f"{label}.{key}: must be a non-empty string, got {value!r}")
            return ""
        return value.strip()

    def strings(self, obj: Mapping[str, Any], key: str, label: str) -> list[str]:
        value = obj.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(f"{label}.{key}: must be a list of strings")
            return []
        result = []
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item:
                self.problem(f"{label}.{key}[{index}]: must be a non-empty string, got {item!r}")
            else:
                result.append(item)
        return result

    def principal_globs(self, obj: Mapping[str, Any], key: str, label: str) -> list[str]:
        """The valid principal globs under `key`; each invalid one is a problem naming entry and field."""
        valid = []
        for glob in self.strings(obj, key, label):
            problem = glob_problem(glob)
            if problem:
                self.problem(f"{label}.{key}: {glob!r} is not an IAM role or user ARN glob: {problem}")
            else:
                valid.append(glob)
        return valid

    def integer(self, obj: Mapping[str, Any], key: str, label: str, *, default: int, low: int, high: int) -> int:
        value = obj.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.problem(f"{label}.{key}: must be a whole number from {low} to {high}, got {value!r}")
            return default
        return value

    def boolean(self, obj: Mapping[str, Any], key: str, label: str) -> bool:
        value = obj.get(key, False)
        if not isinstance(value, bool):
            self.problem(f"{label}.{key}: must be true or false, got {value!r}")
            return False
        return value

    def day(self, obj: Mapping[str, Any], key: str, label: str) -> date | None:
        value = obj.get(key)
        if value is None:
            return None
        if isinstance(value, datetime):
            return value.date()
        if isinstance(value, date):
            return value
        if isinstance(value, str):
            try:
                return date.fromisoformat(value)
            except ValueError:
                pass
        self.problem(f"{label}.{key}: must be a date (YYYY-MM-DD), got {value!r}")
        return None
