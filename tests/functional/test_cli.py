"""CLI commands that talk to AWS, against moto server."""

from __future__ import annotations

import json

import pytest

from chalicelib.cli import main
from tests.functional.conftest import Aws


def test_bootstrap_is_idempotent(aws: Aws, capsys: pytest.CaptureFixture[str]) -> None:
    aws.ddb.delete_table(TableName=aws.table)
    assert main(["bootstrap"]) == 0
    first = capsys.readouterr().out
    assert f"table: {aws.table}: created" in first
    assert "policy/iam-user-guardrail-quarantine: exists" in first
    assert main(["bootstrap"]) == 0
    assert f"table: {aws.table}: exists" in capsys.readouterr().out
    ttl = aws.ddb.describe_time_to_live(TableName=aws.table)["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "ttl"
    backups = aws.ddb.describe_continuous_backups(TableName=aws.table)["ContinuousBackupsDescription"]
    assert backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"
    assert aws.ddb.describe_table(TableName=aws.table)["Table"]["SSEDescription"]["Status"] == "ENABLED"
    policy = aws.iam.get_policy(PolicyArn="arn:aws:iam::123456789012:policy/iam-user-guardrail-quarantine")
    version = aws.iam.get_policy_version(
        PolicyArn=policy["Policy"]["Arn"], VersionId=policy["Policy"]["DefaultVersionId"]
    )["PolicyVersion"]["Document"]
    document = json.loads(version) if isinstance(version, str) else version
    assert document["Statement"][0] == {
        "Sid": "IamUserGuardrailQuarantine",
        "Effect": "Deny",
        "Action": "*",
        "Resource": "*",
    }
