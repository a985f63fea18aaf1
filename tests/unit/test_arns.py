"""Principal globs are matched segment by segment: no wildcard ever reaches across ':' or '/'."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.arns import (
    ArnGlobError,
    PrincipalGlobs,
    glob_problem,
    glob_regex,
    parse_assumed_role_arn,
    parse_principal_arn,
)

ACCOUNT = "123456789012"
TERRAFORM = "arn:aws:iam::*:role/terraform-deployer"
SSO = "arn:aws:iam::*:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_SecurityAdmin_*"


@pytest.mark.parametrize(
    ("glob", "arn", "matches"),
    [
        (TERRAFORM, f"arn:aws:iam::{ACCOUNT}:role/terraform-deployer", True),
        # the attacks of issue 9: a role or a user at path /x:role/ named like the provisioner
        (TERRAFORM, f"arn:aws:iam::{ACCOUNT}:role/x:role/terraform-deployer", False),
        (TERRAFORM, f"arn:aws:iam::{ACCOUNT}:user/x:role/terraform-deployer", False),
        (TERRAFORM, f"arn:aws:iam::{ACCOUNT}:role/team/terraform-deployer", False),
        (TERRAFORM, f"arn:aws:iam::{ACCOUNT}:user/terraform-deployer", False),
        (TERRAFORM, f"arn:aws-cn:iam::{ACCOUNT}:role/terraform-deployer", False),
        (TERRAFORM, f"arn:aws:sts::{ACCOUNT}:assumed-role/terraform-deployer/run", False),
        (TERRAFORM, f"arn:aws:iam::{ACCOUNT}:role/terraform-deployer/", False),
        (SSO, f"arn:aws:iam::{ACCOUNT}:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_SecurityAdmin_0a1b", True),
        (SSO, f"arn:aws:iam::{ACCOUNT}:role/AWSReservedSSO_SecurityAdmin_0a1b", False),
        (
            SSO,
            f"arn:aws:iam::{ACCOUNT}:role/aws-reserved/sso.amazonaws.com/eu-west-1/AWSReservedSSO_SecurityAdmin_0",
            False,
        ),
        (SSO, f"arn:aws:iam::{ACCOUNT}:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_SecurityAdmin_x/y", False),
        ("arn:aws:iam::*:role/*", f"arn:aws:iam::{ACCOUNT}:role/anything", True),
        ("arn:aws:iam::*:role/*", f"arn:aws:iam::{ACCOUNT}:role/team/anything", False),
        ("arn:aws:iam::*:role/*/deployer", f"arn:aws:iam::{ACCOUNT}:role/ci/deployer", True),
        ("arn:aws:iam::*:role/*/deployer", f"arn:aws:iam::{ACCOUNT}:role/x:y/deployer", False),
        ("arn:aws:iam::*:role/*/deployer", f"arn:aws:iam::{ACCOUNT}:role/a/b/deployer", False),
        ("arn:aws:iam::1234567890??:role/x", f"arn:aws:iam::{ACCOUNT}:role/x", True),
        ("arn:aws:iam::1234567890??:role/x", "arn:aws:iam::123456789099:role/x", True),
        ("arn:aws:iam::*:role/x", "arn:aws:iam::attacker:role/x", False),  # account wildcards are digits
        ("arn:aws:iam::111122223333:role/x", f"arn:aws:iam::{ACCOUNT}:role/x", False),
        ("arn:aws:iam::*:role/deployer-?", f"arn:aws:iam::{ACCOUNT}:role/deployer-1", True),
        ("arn:aws:iam::*:role/deployer-?", f"arn:aws:iam::{ACCOUNT}:role/deployer-:", False),
        ("arn:aws:iam::*:role/a.b", f"arn:aws:iam::{ACCOUNT}:role/a.b", True),
        ("arn:aws:iam::*:role/a.b", f"arn:aws:iam::{ACCOUNT}:role/aXb", False),  # '.' is literal
        ("arn:aws:iam::*:role/Deployer", f"arn:aws:iam::{ACCOUNT}:role/deployer", False),  # case-sensitive
    ],
)
def test_globs_match_segment_by_segment(glob: str, arn: str, matches: bool) -> None:
    assert PrincipalGlobs([glob]).matches(arn) is matches


@pytest.mark.parametrize(
    ("glob", "problem"),
    [
        ("arn:*:iam::*:role/x", "wildcard in the partition segment"),
        ("arn:aws*:iam::*:role/x", "wildcard in the partition segment"),
        ("arn:aws:i?m::*:role/x", "wildcard in the service segment"),
        ("arn:aws:sts::*:assumed-role/x/y", "names service 'sts'"),
        ("arn:aws:iam::*:role/x:role/y", "':' only between segments"),
        ("arn:aws:iam::*:role/[ab]", "character classes are not supported"),
        ("arn:aws:iam::*:role*/x", "the type is literal"),
        ("arn:aws:iam::*:group/x", "the type is literal"),
        ("arn:aws:iam::*:root", "the type is literal"),
        ("arn:aws:iam::12345678901a:role/x", "invalid account segment"),
        ("arn:aws:iam::1234:role/x", "invalid account segment"),
        ("arn:aws:iam::*:role/a//x", "empty path segment"),
        ("arn:aws:iam::*:role/x/", "invalid role name ''"),
        ("arn:aws:iam::*:role/bad name", "whitespace"),
        ("arn:aws:iam::*:role/x\u00e9", "invalid role name"),
        ("arn:gov:iam::*:role/x", "unknown partition 'gov'"),
        ("terraform-deployer", "':' only between segments"),
        ("", "is empty"),
    ],
)
def test_invalid_globs_say_why(glob: str, problem: str) -> None:
    assert problem in glob_problem(glob)
    with pytest.raises(ArnGlobError, match=re.escape(problem)):
        PrincipalGlobs([glob])


def test_exact_arns_refuse_every_wildcard() -> None:
    assert glob_problem("arn:aws:iam::123456789012:role/x", exact=True) == ""
    assert "exact ARN" in glob_problem("arn:aws:iam::*:role/x", exact=True)
    assert "exact ARN" in glob_problem("arn:aws:iam::123456789012:role/x-?", exact=True)


def test_arns_parse_into_segments() -> None:
    role = parse_principal_arn(f"arn:aws:iam::{ACCOUNT}:role/x:role/terraform-deployer")
    assert role is not None and (role.type, role.path, role.name) == ("role", ("x:role",), "terraform-deployer")
    assert role.arn == f"arn:aws:iam::{ACCOUNT}:role/x:role/terraform-deployer"
    assert role.path_text == "/x:role/"
    assert parse_principal_arn(f"arn:aws:sts::{ACCOUNT}:assumed-role/r/s") is None
    assert parse_principal_arn(f"arn:aws:iam::{ACCOUNT}:root") is None
    assert parse_principal_arn(f"arn:aws:iam::{ACCOUNT}:role//x") is None
    session = parse_assumed_role_arn(f"arn:aws:sts::{ACCOUNT}:assumed-role/security-admin/ann@example.com")
    assert session is not None and (session.account, session.role, session.session) == (
        ACCOUNT,
        "security-admin",
        "ann@example.com",
    )
    assert parse_assumed_role_arn(f"arn:aws:iam::{ACCOUNT}:role/security-admin") is None


# -- property: no glob compiled from random segments matches across ':' or '/' ------------------

_LITERAL = "abcXYZ019_+=,.@-"
_glob_segment = st.text(alphabet=_LITERAL + "*?", min_size=1, max_size=8)
_account_glob = st.one_of(
    st.just(ACCOUNT),
    st.just("*"),
    st.text(alphabet="0123456789*?", min_size=1, max_size=12).filter(lambda a: "*" in a or "?" in a),
)


@st.composite
def globs(draw: st.DrawFn) -> str:
    partition = draw(st.sampled_from(["aws", "aws-cn", "aws-us-gov"]))
    kind = draw(st.sampled_from(["role", "user"]))
    path = draw(st.lists(_glob_segment, max_size=3))
    name = draw(_glob_segment)
    return f"arn:{partition}:iam::{draw(_account_glob)}:{kind}/{'/'.join([*path, name])}"


_plain = st.text(alphabet=_LITERAL, max_size=6)
_plain_one = st.sampled_from(list(_LITERAL))
_digits = st.text(alphabet="0123456789", max_size=6)
_digit = st.sampled_from(list("0123456789"))


def _fill(glob: str, draw: st.DrawFn) -> str:
    """Replace each wildcard with text that stays inside its segment (digits in the account)."""
    head, rest = glob[: glob.index("::") + 2], glob[glob.index("::") + 2 :]
    account, resource = rest.split(":", 1)
    account = "".join(draw(_digits) if c == "*" else draw(_digit) if c == "?" else c for c in account)
    resource = "".join(draw(_plain) if c == "*" else draw(_plain_one) if c == "?" else c for c in resource)
    return f"{head}{account}:{resource}"


_crossing = st.builds(lambda a, sep, b: a + sep + b, _plain, st.sampled_from([":", "/"]), _plain)


@given(globs(), st.data())
def test_a_glob_matches_what_its_wildcards_stand_for_within_a_segment(glob: str, data: st.DataObject) -> None:
    arn = _fill(glob, data.draw)
    assert PrincipalGlobs([glob]).matches(arn), (glob, arn)


@given(globs(), st.data())
def test_a_wildcard_never_crosses_a_colon_or_a_slash(glob: str, data: st.DataObject) -> None:
    wildcards = [i for i, c in enumerate(glob) if c in "*?" and i > glob.index("::")]
    if not wildcards:
        glob = glob + "*"  # every drawn glob gets at least one wildcard (in the name)
        wildcards = [len(glob) - 1]
    crossing = data.draw(st.sampled_from(wildcards))
    head = glob[: glob.index("::") + 2]
    parts = []
    for i, c in enumerate(glob[len(head) :], start=len(head)):
        if i == crossing:
            parts.append(data.draw(_crossing) if c == "*" else data.draw(st.sampled_from([":", "/"])))
        elif c == "*":
            parts.append(data.draw(_digits if i < glob.index(":", len(head)) else _plain))
        elif c == "?":
            parts.append(data.draw(_digit if i < glob.index(":", len(head)) else _plain_one))
        else:
            parts.append(c)
    arn = head + "".join(parts)
    assert not PrincipalGlobs([glob]).matches(arn), (glob, arn)
    # the same holds for the regular expression taken alone, and for a set of several globs
    assert not re.fullmatch(glob_regex(glob), arn)
    assert not PrincipalGlobs([glob, "arn:aws:iam::111122223333:role/other"]).matches(arn)
