"""IAM principal ARNs and the allowlist globs that match them, segment by segment.

A principal glob has the shape of the ARN it matches:
`arn:<partition>:iam::<account>:<type>/<path segment>/.../<name>`.

- The partition and the service (`iam`) are literal; the region is empty.
- The account is matched on its own: 12 digits, or a glob of digits, `*` and `?` (which stand for
  digits only).
- The type (`role`, `user`) is literal: a `role/` glob never matches a user.
- The path and the name are matched segment by segment: `role/terraform-deployer` matches only the
  role of that name at path `/`; `role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_Admin_*`
  matches roles at exactly that path. To allow several paths, list each one.
- `*` matches any run of characters and `?` one character, but neither ever matches `:` or `/`,
  so no wildcard reaches into another segment.
- `[` and `]` are rejected: character classes are not supported (IAM names cannot contain them,
  and a class would be one more way to match `:` or `/`).

Matching is case-sensitive, like IAM policy ARNs. User-name globs, which cannot contain `:` or
`/`, are matched elsewhere (`allowlist.GlobSet`); no ARN is ever matched by a general-purpose glob.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar, Final

PARTITIONS: Final = frozenset({"aws", "aws-cn", "aws-us-gov"})
PRINCIPAL_TYPES: Final = frozenset({"role", "user"})
WILDCARDS: Final = frozenset("*?")

_ACCOUNT_RE = re.compile(r"^\d{12}$")
_ACCOUNT_GLOB_RE = re.compile(r"^[\d*?]{1,12}$")
_NAME_GLOB_RE = re.compile(r"^[\w+=,.@*?-]{1,128}$", re.ASCII)
#: IAM path characters are printable ASCII; in a glob, `/` separates segments and `:` is refused.
_PATH_SEGMENT_RE = re.compile(r"^[\x21-\x7e]{1,512}$")
_SEGMENT_FORBIDDEN = frozenset(":/[]")
_ASSUMED_ROLE_RE = re.compile(r"^arn:([\w-]+):sts::(\d{12}):assumed-role/([\w+=,.@-]{1,64})/([\w+=,.@-]{2,64})$")


class ArnGlobError(ValueError):
    """A principal glob (or exact principal ARN) does not have the shape of an IAM role or user ARN."""


@dataclass(frozen=True, slots=True)
class PrincipalArn:
    """An IAM role or user ARN split into its segments."""

    partition: str
    account: str
    type: str
    path: tuple[str, ...]
    name: str

    @property
    def path_text(self) -> str:
        """The IAM path as IAM writes it: `/` or `/a/b/`."""
        return "/" + "".join(f"{segment}/" for segment in self.path)

    @property
    def arn(self) -> str:
        return f"arn:{self.partition}:iam::{self.account}:{self.type}{self.path_text}{self.name}"


@dataclass(frozen=True, slots=True)
class AssumedRoleArn:
    """`arn:<partition>:sts::<account>:assumed-role/<role>/<session>`: it carries no role path."""

    partition: str
    account: str
    role: str
    session: str


def parse_principal_arn(arn: str) -> PrincipalArn | None:
    """Split an IAM role or user ARN into segments; None for anything else (sts, root, malformed)."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "iam" or parts[3] != "":
        return None
    partition, account, resource = parts[1], parts[4], parts[5]
    kind, slash, rest = resource.partition("/")
    segments = rest.split("/")
    if not slash or kind not in PRINCIPAL_TYPES or not _ACCOUNT_RE.match(account) or "" in segments:
        return None
    return PrincipalArn(partition, account, kind, tuple(segments[:-1]), segments[-1])


def parse_assumed_role_arn(arn: str) -> AssumedRoleArn | None:
    match = _ASSUMED_ROLE_RE.match(arn)
    return AssumedRoleArn(*match.groups()) if match else None


def glob_problem(pattern: str, *, exact: bool = False) -> str:
    """Why `pattern` is not a principal glob ('' when it is). `exact` refuses every wildcard."""
    if not isinstance(pattern, str) or not pattern:
        return "is empty"
    if any(c.isspace() for c in pattern):
        return "contains whitespace"
    if exact and WILDCARDS & set(pattern):
        return "must be an exact ARN (no '*' or '?')"
    if "[" in pattern or "]" in pattern:
        return "uses '[' or ']': character classes are not supported in principal globs"
    parts = pattern.split(":")
    if len(parts) != 6:
        return "must be arn:<partition>:iam::<account>:<role or user>/<path><name> (':' only between segments)"
    prefix, partition, service, region, account, resource = parts
    if prefix != "arn":
        return "must start with 'arn:'"
    if WILDCARDS & set(partition):
        return "has a wildcard in the partition segment"
    if partition not in PARTITIONS:
        return f"has an unknown partition {partition!r} (one of {', '.join(sorted(PARTITIONS))})"
    if WILDCARDS & set(service):
        return "has a wildcard in the service segment"
    if service != "iam":
        return f"names service {service!r}, not iam"
    if region:
        return "has a region; IAM ARNs have none (arn:aws:iam::<account>:...)"
    wild_account = bool(WILDCARDS & set(account)) and _ACCOUNT_GLOB_RE.match(account)
    if not _ACCOUNT_RE.match(account) and not wild_account:
        return f"has an invalid account segment {account!r} (12 digits, or a glob of digits, '*' and '?')"
    kind, slash, rest = resource.partition("/")
    if not slash or kind not in PRINCIPAL_TYPES:
        return "must name a role/ or user/ (the type is literal)"
    *path, name = rest.split("/")
    for segment in path:
        if not segment:
            return "has an empty path segment ('//' or a trailing '/')"
        if not _PATH_SEGMENT_RE.match(segment) or _SEGMENT_FORBIDDEN & set(segment):
            return f"has an invalid path segment {segment!r}"
    if not _NAME_GLOB_RE.match(name):
        return f"has an invalid {kind} name {name!r}"
    return ""


def _segment_regex(segment: str, one: str = "[^:/]") -> str:
    return "".join(f"{one}*" if c == "*" else one if c == "?" else re.escape(c) for c in segment)


def glob_regex(pattern: str) -> str:
    """The regular expression of one valid glob: each segment on its own, wildcards never cross ':' or '/'."""
    problem = glob_problem(pattern)
    if problem:
        raise ArnGlobError(f"{pattern!r} {problem}")
    _, partition, _, _, account, resource = pattern.split(":")
    kind, _, rest = resource.partition("/")
    resource_regex = "/".join(_segment_regex(segment) for segment in rest.split("/"))
    account_regex = _segment_regex(account, one=r"\d")
    return f"arn:{re.escape(partition)}:iam::{account_regex}:{kind}/{resource_regex}"


class PatternSet:
    """Patterns compiled into one regular expression; a subclass says how one pattern translates."""

    __slots__ = ("_regex", "patterns")
    translate: ClassVar[Callable[[str], str]]

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        joined = "|".join(f"(?:{self.translate(p)})" for p in self.patterns)
        self._regex = re.compile(joined) if self.patterns else None

    def matches(self, value: str) -> bool:
        return bool(value) and self._regex is not None and self._regex.fullmatch(value) is not None

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self.patterns)!r})"


class PrincipalGlobs(PatternSet):
    """Principal globs (`provisioners`, `created_by`, `approvers.iam_principals`), matched against an
    IAM role or user ARN with its path.

    Raises `ArnGlobError` for an invalid glob: validate first (`glob_problem`) to report them all.
    """

    __slots__ = ()
    translate = staticmethod(glob_regex)
