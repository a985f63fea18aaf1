"""Allowlist validation: every error names the entry and field; nothing invalid loads."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import yaml

from chalicelib.allowlist import DEFAULT_PATH, AllowlistError, load_allowlist, parse_allowlist
from chalicelib.cli import main
from tests.helpers import ALLOWLIST_YAML, allowlist


def mutate(change: dict) -> str:
    """The test allowlist with the first integration (or the top level, key '_top') changed."""
    data = yaml.safe_load(ALLOWLIST_YAML)
    top = change.pop("_top", {})
    data.update(top)
    for key, value in change.items():
        if value is DELETE:
            data["integrations"][0].pop(key)
        else:
            data["integrations"][0][key] = value
    return yaml.safe_dump(data)


DELETE = object()


def test_test_allowlist_and_bundled_example_are_valid() -> None:
    parsed = allowlist()
    assert [i.name for i in parsed.integrations] == ["datadog", "console-vendor", "scoped", "expired"]
    datadog = parsed.integrations[0]
    assert datadog.expires == date(2027, 6, 30)
    assert datadog.created_by.patterns == ("arn:aws:iam::*:role/terraform-deployer",)  # default: provisioners
    assert parsed.integrations[2].any_creator
    assert load_allowlist(DEFAULT_PATH).integrations


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"_top": {"version": 2}}, "version: unsupported value 2"),
        ({"_top": {"mode": "audit"}}, "mode: must be one of"),
        ({"_top": {"surprise": 1}}, "top level: unknown key 'surprise'"),
        ({"_top": {"exception_max_days": 0}}, "exception_max_days: must be a whole number"),
        ({"_top": {"provisioners": ["terraform"]}}, "provisioners: 'terraform' is not an IAM role or user ARN glob"),
        ({"_top": {"approvers": {"slack_user_ids": ["alice"]}}}, "approvers.slack_user_ids: 'alice'"),
        ({"_top": {"approvers": {"iam_principals": ["*"]}}}, "approvers.iam_principals: '*'"),
        ({"_top": {"approvers": {"emails": []}}}, "approvers: unknown key 'emails'"),
        ({"_top": {"integrations": {"name": "x"}}}, "integrations: must be a list"),
        ({"owner": DELETE}, "integrations[0] (datadog).owner: required"),
        ({"users": DELETE}, "integrations[0] (datadog).users: required"),
        ({"users": []}, "integrations[0] (datadog).users: must list at least one"),
        ({"users": ["*"]}, "integrations[0] (datadog).users: '*' would approve every user"),
        ({"users": ["svc-[abc"]}, "integrations[0] (datadog).users: 'svc-[abc' is not a valid IAM user-name glob"),
        ({"users": ["bad name"]}, "is not a valid IAM user-name glob"),
        ({"users": "svc-datadog"}, "integrations[0] (datadog).users: must be a list of strings"),
        ({"accounts": [111122223333]}, "integrations[0] (datadog).accounts[0]: must be a non-empty string"),
        ({"accounts": ["1234"]}, "integrations[0] (datadog).accounts: '1234' is not a 12-digit account id"),
        ({"path": "integrations"}, "integrations[0] (datadog).path: 'integrations' must start and end with '/'"),
        ({"max_access_keys": 3}, "integrations[0] (datadog).max_access_keys: must be a whole number from 0 to 2"),
        ({"max_access_keys": True}, "max_access_keys: must be a whole number"),
        ({"console_access": "yes"}, "integrations[0] (datadog).console_access: must be true or false"),
        ({"expires": "next year"}, "integrations[0] (datadog).expires: must be a date"),
        ({"created_by": None}, "integrations[0] (datadog).created_by: empty value"),
        ({"created_by": ["role/x"]}, "integrations[0] (datadog).created_by: 'role/x' is not an IAM role"),
        (
            {"created_by": ["arn:*:iam::*:role/x"]},
            "integrations[0] (datadog).created_by: 'arn:*:iam::*:role/x' is not an IAM role or user ARN glob: "
            "has a wildcard in the partition segment",
        ),
        ({"_top": {"provisioners": ["arn:aws:*::*:role/x"]}}, "provisioners: 'arn:aws:*::*:role/x' is not"),
        ({"_top": {"provisioners": ["arn:aws:*::*:role/x"]}}, "has a wildcard in the service segment"),
        ({"created_by": ["arn:aws:iam::*:role/x:role/y"]}, "(datadog).created_by: 'arn:aws:iam::*:role/x:role/y'"),
        ({"created_by": ["arn:aws:iam::*:role/x:role/y"]}, "':' only between segments"),
        ({"created_by": ["arn:aws:iam::*:role/svc-[ab]"]}, "character classes are not supported"),
        ({"created_by": ["arn:aws:iam::*:*/deployer"]}, "must name a role/ or user/ (the type is literal)"),
        ({"created_by": ["arn:aws:iam::1234:role/x"]}, "invalid account segment '1234'"),
        ({"created_by": ["arn:aws:iam::*:role//x"]}, "empty path segment"),
        ({"created_by": ["arn:aws:iam:us-east-1:*:role/x"]}, "has a region"),
        (
            {"_top": {"approvers": {"iam_principals": ["arn:aws:iam::*:role/sec admin"]}}},
            "approvers.iam_principals: 'arn:aws:iam::*:role/sec admin' is not an IAM role or user ARN glob",
        ),
        ({"name": "Data Dog"}, "integrations[0] (Data Dog).name: 'Data Dog' must be lower-case"),
        ({"colour": "blue"}, "integrations[0] (datadog): unknown key 'colour'"),
        ({"name": "console-vendor"}, "integrations[1] (console-vendor).name: duplicate name 'console-vendor'"),
        ({"_top": {"provisioners": []}}, "created_by: not set and there are no top-level provisioners"),
    ],
)
def test_each_error_names_entry_and_field(change: dict, expected: str) -> None:
    with pytest.raises(AllowlistError) as info:
        parse_allowlist(mutate(dict(change)), source="test.yaml")
    assert any(expected in p for p in info.value.problems), info.value.problems
    assert "invalid allowlist test.yaml" in str(info.value)


def test_all_problems_are_reported_at_once() -> None:
    text = mutate({"owner": DELETE, "path": "x", "_top": {"mode": "nope"}})
    with pytest.raises(AllowlistError) as info:
        parse_allowlist(text)
    assert len(info.value.problems) >= 3


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "version: [1\n", "just a string"])
def test_documents_that_are_not_mappings_fail(text: str) -> None:
    with pytest.raises(AllowlistError):
        parse_allowlist(text)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AllowlistError, match="cannot read the file"):
        load_allowlist(tmp_path / "absent.yaml")


def test_environment_variable_chooses_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "list.yaml"
    path.write_text(ALLOWLIST_YAML)
    monkeypatch.setenv("GUARDRAIL_ALLOWLIST", str(path))
    assert load_allowlist().source == str(path)


def test_check_allowlist_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(ALLOWLIST_YAML)
    bad.write_text(mutate({"path": "x"}))
    assert main(["check-allowlist", str(good)]) == 0
    assert "valid" in capsys.readouterr().out
    assert main(["check-allowlist", str(bad)]) == 1
    assert "integrations[0] (datadog).path" in capsys.readouterr().err


def test_globs_are_case_sensitive_and_anchored() -> None:
    parsed = allowlist()
    assert [i.name for i in parsed.candidates("svc-datadog-eu")] == ["datadog"]
    assert parsed.candidates("SVC-DATADOG") == []
    assert parsed.candidates("x-svc-datadog") == []


def test_user_name_globs_never_match_an_arn_or_a_path() -> None:
    from chalicelib.allowlist import GlobSet

    globs = GlobSet(["svc-*"])
    assert globs.matches("svc-datadog")
    assert not globs.matches("svc-x:role/terraform-deployer")
    assert not globs.matches("svc-x/evil")
