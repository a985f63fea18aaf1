"""Create the guardrail's table and quarantine policy (idempotent).

`infra/resources.yaml` declares the same resources for CloudFormation; names and the policy
document come from `chalicelib.constants` in both.
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.constants import QUARANTINE_POLICY_DOCUMENT
from chalicelib.iam import DONE, INTACT, IamActions, error_code

TABLE_KEY_SCHEMA = [
    {"AttributeName": "pk", "KeyType": "HASH"},
    {"AttributeName": "sk", "KeyType": "RANGE"},
]
TABLE_ATTRIBUTES = [
    {"AttributeName": "pk", "AttributeType": "S"},
    {"AttributeName": "sk", "AttributeType": "S"},
]
TTL_ATTRIBUTE = "ttl"


def ensure_table(dynamodb: Any, table: str) -> str:
    """Create the table if missing; return 'created' or 'exists'."""
    try:
        dynamodb.create_table(
            TableName=table,
            KeySchema=TABLE_KEY_SCHEMA,
            AttributeDefinitions=TABLE_ATTRIBUTES,
            BillingMode="PAY_PER_REQUEST",
            SSESpecification={"Enabled": True},
        )
    except ClientError as exc:
        if error_code(exc) != "ResourceInUseException":
            raise
        return "exists"
    dynamodb.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    dynamodb.update_time_to_live(
        TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE}
    )
    dynamodb.update_continuous_backups(
        TableName=table, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
    )
    return "created"


class QuarantinePolicyError(RuntimeError):
    """The existing quarantine policy could not be read or restored."""


def ensure_quarantine_policy(iam: Any, account: str, name: str) -> str:
    """Create the deny-all managed policy if missing; return 'created', 'exists' or 'restored'.

    An existing policy of that name is trusted only after its default version was read: anything
    but deny-all is replaced by a deny-all default version ('restored').
    """
    try:
        iam.create_policy(
            PolicyName=name,
            PolicyDocument=json.dumps(QUARANTINE_POLICY_DOCUMENT),
            Description="iam-user-guardrail quarantine: denies every action",
        )
    except ClientError as exc:
        if error_code(exc) != "EntityAlreadyExists":
            raise
        checked = IamActions(iam, policy_name=name).check_quarantine_policy(account)
        if checked.status == INTACT:
            return "exists"
        if checked.status == DONE:
            return f"restored ({checked.detail})"
        raise QuarantinePolicyError(checked.describe()) from None
    return "created"


def bootstrap(*, iam: Any, dynamodb: Any, sts: Any, table: str, policy_name: str) -> dict[str, str]:
    account = sts.get_caller_identity()["Account"]
    return {
        "account": account,
        "table": f"{table}: {ensure_table(dynamodb, table)}",
        "policy": f"arn:aws:iam::{account}:policy/{policy_name}: {ensure_quarantine_policy(iam, account, policy_name)}",
    }
