"""Whatever YAML the allowlist file holds, loading it either succeeds or raises `AllowlistError`
naming the problems: never a KeyError, TypeError or a crash from deeper down."""

from __future__ import annotations

import copy
from datetime import date
from typing import Any

import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from chalicelib.allowlist import Allowlist, AllowlistError, parse_allowlist, validate_allowlist
from tests.helpers import ALLOWLIST_YAML
from tests.property.strategies import hostile_text

VALID = yaml.safe_load(ALLOWLIST_YAML)
KEYS = (
    "version",
    "mode",
    "exception_max_days",
    "approvers",
    "slack_user_ids",
    "iam_principals",
    "provisioners",
    "integrations",
    "name",
    "owner",
    "purpose",
    "users",
    "accounts",
    "path",
    "max_access_keys",
    "console_access",
    "expires",
    "created_by",
    "mfa_grace_days",
)
yaml_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False),
    st.dates(),
    st.text(max_size=20),
    st.sampled_from(("enforce", "monitor", "/integrations/", "U0SECLEAD", "arn:aws:iam::*:role/x", "svc-*", "[a-")),
)
yaml_documents = st.recursive(
    yaml_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), inner, max_size=6),
    ),
    max_leaves=25,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


@st.composite
def mutated_allowlists(draw: st.DrawFn) -> Any:
    """The test allowlist with a few values replaced by anything YAML can hold."""
    doc = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(doc)[1:]))
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        parent[path[-1]] = draw(yaml_documents)
    return doc


def loads_or_names_problems(doc: Any) -> None:
    try:
        loaded = validate_allowlist(doc)
    except AllowlistError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
    else:
        assert isinstance(loaded, Allowlist)


@given(doc=st.one_of(yaml_documents, mutated_allowlists()))
@example(doc={"version": [1], "integrations": []})
@example(doc={"version": 1, "mode": ["enforce"], "integrations": []})
@example(doc={"version": {"a": 1}, "mode": {}, "integrations": []})
def test_any_document_loads_or_raises_allowlist_error(doc: Any) -> None:
    loads_or_names_problems(doc)
    text = yaml.safe_dump(doc, allow_unicode=True)
    try:
        parse_allowlist(text)
    except AllowlistError as exc:
        assert exc.problems


@given(text=st.one_of(hostile_text, st.text(alphabet=":-[]{}!&*|>'\"%@`#,? \n\tab1", max_size=60)))
@example(text="version: 1\nintegrations: []\n? [a, b]\n: c\n")
@example(text="!!python/object/apply:os.system ['true']")
def test_any_text_loads_or_raises_allowlist_error(text: str) -> None:
    try:
        parse_allowlist(text)
    except AllowlistError as exc:
        assert exc.problems


def test_version_true_is_not_version_1() -> None:
    """YAML `true` equals 1 in Python; the schema wants the number."""
    try:
        validate_allowlist({"version": True, "integrations": []})
    except AllowlistError as exc:
        assert "version" in str(exc)
    else:
        raise AssertionError("version: true was accepted")


def test_a_date_is_still_a_date() -> None:
    loaded = validate_allowlist(
        {**copy.deepcopy(VALID), "integrations": [{**VALID["integrations"][0], "expires": date(2027, 1, 1)}]}
    )
    assert loaded.integrations[0].expires == date(2027, 1, 1)
