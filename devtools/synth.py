"""Build CloudTrail records shaped like the ones AWS writes (for the demo, tests and benchmarks)."""

from __future__ import annotations

import gzip
import json
import random
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from chalicelib.constants import (
    CLOUDTRAIL_DETAIL_TYPE,
    CREATE_ACCESS_KEY,
    CREATE_LOGIN_PROFILE,
    CREATE_USER,
    EVENTBRIDGE_SOURCE,
    IAM_EVENT_SOURCE,
)

DEFAULT_ACCOUNT = "123456789012"
CLI_USER_AGENT = "aws-cli/2.15.30 Python/3.11.8 Linux/6.1 exe/x86_64.amzn.2 prompt/off command/iam.{command}"
TERRAFORM_USER_AGENT = "APN/1.0 HashiCorp/1.0 Terraform/1.7.5 (+https://www.terraform.io) terraform-provider-aws/5.40.0"


def role_identity(account: str, role: str, session: str = "session", *, path: str = "/") -> dict[str, Any]:
    """`userIdentity` of an assumed-role session."""
    role_id = "AROA" + uuid.uuid5(uuid.NAMESPACE_URL, role).hex[:17].upper()
    return {
        "type": "AssumedRole",
        "principalId": f"{role_id}:{session}",
        "arn": f"arn:aws:sts::{account}:assumed-role/{role}/{session}",
        "accountId": account,
        "accessKeyId": "ASIA" + uuid.uuid5(uuid.NAMESPACE_URL, session).hex[:16].upper(),
        "sessionContext": {
            "sessionIssuer": {
                "type": "Role",
                "principalId": role_id,
                "arn": f"arn:aws:iam::{account}:role{path}{role}",
                "accountId": account,
                "userName": role,
            },
            "attributes": {"creationDate": "2026-11-29T09:00:00Z", "mfaAuthenticated": "false"},
        },
    }


def user_identity(account: str, user: str) -> dict[str, Any]:
    """`userIdentity` of an IAM user calling with its own access key."""
    return {
        "type": "IAMUser",
        "principalId": "AIDA" + uuid.uuid5(uuid.NAMESPACE_URL, user).hex[:17].upper(),
        "arn": f"arn:aws:iam::{account}:user/{user}",
        "accountId": account,
        "accessKeyId": "AKIA" + uuid.uuid5(uuid.NAMESPACE_URL, user).hex[:16].upper(),
        "userName": user,
    }


def root_identity(account: str) -> dict[str, Any]:
    return {
        "type": "Root",
        "principalId": account,
        "arn": f"arn:aws:iam::{account}:root",
        "accountId": account,
        "accessKeyId": "ASIA" + uuid.uuid5(uuid.NAMESPACE_URL, account).hex[:16].upper(),
    }


def user_id_for(account: str, user: str) -> str:
    """The stable `AIDA...` id the synthetic CreateUser record gives `user` in `account`."""
    return "AIDA" + uuid.uuid5(uuid.NAMESPACE_URL, account + user).hex[:17].upper()


def cloudtrail_record(
    event_name: str,
    *,
    user: str,
    identity: Mapping[str, Any],
    account: str = DEFAULT_ACCOUNT,
    event_id: str | None = None,
    event_time: datetime | None = None,
    access_key_id: str = "",
    path: str = "/",
    tags: Iterable[tuple[str, str]] = (),
    error_code: str = "",
    user_agent: str = "",
    source_ip: str = "203.0.113.10",
    user_id: str = "",
) -> dict[str, Any]:
    """One bare CloudTrail record for an IAM write, as it appears in a log file.

    `user_id`: the id IAM gave the user (CreateUser), where the user really exists.
    """
    when = (event_time or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    request: dict[str, Any] = {"userName": user}
    response: dict[str, Any] | None = None
    tag_list = [{"key": k, "value": v} for k, v in tags]
    if event_name == CREATE_USER:
        if path != "/":
            request["path"] = path
        if tag_list:
            request["tags"] = tag_list
        response = {
            "user": {
                "path": path,
                "userName": user,
                "userId": user_id or user_id_for(account, user),
                "arn": f"arn:aws:iam::{account}:user{path}{user}",
                "createDate": "Nov 29, 2026 9:00:00 AM",
                **({"tags": tag_list} if tag_list else {}),
            }
        }
    elif event_name == CREATE_ACCESS_KEY:
        response = {
            "accessKey": {
                "userName": user,
                "accessKeyId": access_key_id or "AKIA" + uuid.uuid4().hex[:16].upper(),
                "status": "Active",
                "createDate": "Nov 29, 2026 9:00:00 AM",
            }
        }
    elif event_name == CREATE_LOGIN_PROFILE:
        request["passwordResetRequired"] = True
        response = {
            "loginProfile": {"userName": user, "createDate": "Nov 29, 2026 9:00:00 AM", "passwordResetRequired": True}
        }
    record: dict[str, Any] = {
        "eventVersion": "1.09",
        "userIdentity": dict(identity),
        "eventTime": when,
        "eventSource": IAM_EVENT_SOURCE,
        "eventName": event_name,
        "awsRegion": "us-east-1",
        "sourceIPAddress": source_ip,
        "userAgent": user_agent or CLI_USER_AGENT.format(command=_kebab(event_name)),
        "requestParameters": request,
        "responseElements": None if error_code else response,
        "requestID": str(uuid.uuid4()),
        "eventID": event_id or str(uuid.uuid4()),
        "readOnly": False,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": account,
        "eventCategory": "Management",
    }
    if error_code:
        record["errorCode"] = error_code
        record["errorMessage"] = f"{event_name} failed: {error_code}"
    return record


def envelope(record: Mapping[str, Any]) -> dict[str, Any]:
    """Wrap a record the way EventBridge delivers it to the Lambda function."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": CLOUDTRAIL_DETAIL_TYPE,
        "source": EVENTBRIDGE_SOURCE,
        "account": record.get("recipientAccountId", DEFAULT_ACCOUNT),
        "time": record.get("eventTime"),
        "region": "us-east-1",
        "resources": [],
        "detail": dict(record),
    }


def _kebab(name: str) -> str:
    return "".join(f"-{c.lower()}" if c.isupper() else c for c in name).lstrip("-")


# -- synthetic CloudTrail log files (tests and benchmarks) ----------------------------------------

_NOISE = (
    ("s3.amazonaws.com", "GetObject", {"bucketName": "example-data-lake", "key": "raw/2026/11/29/part-0001.parquet"}),
    ("s3.amazonaws.com", "PutObject", {"bucketName": "example-logs", "key": "app/2026/11/29/app.log.gz"}),
    ("ec2.amazonaws.com", "DescribeInstances", {"instancesSet": {}, "filterSet": {}}),
    ("sts.amazonaws.com", "AssumeRole", {"roleArn": "arn:aws:iam::123456789012:role/app", "roleSessionName": "app"}),
    ("kms.amazonaws.com", "Decrypt", {"encryptionAlgorithm": "SYMMETRIC_DEFAULT"}),
    ("lambda.amazonaws.com", "Invoke", {"functionName": "orders-api"}),
    ("dynamodb.amazonaws.com", "DescribeTable", {"tableName": "orders"}),
    ("logs.amazonaws.com", "CreateLogStream", {"logGroupName": "/aws/lambda/orders-api"}),
)


def synthetic_records(
    count: int, *, seed: int = 7, iam_share: float = 0.02, account: str = DEFAULT_ACCOUNT
) -> Iterator[dict[str, Any]]:
    """`count` records: mostly other services' noise, `iam_share` IAM events of every kind."""
    rng = random.Random(seed)  # noqa: S311 - synthetic test data, not security
    start = datetime(2026, 11, 1, tzinfo=UTC)
    terraform = role_identity(account, "terraform-deployer", "tf-apply")
    developer = role_identity(
        account, "AWSReservedSSO_Developer_5f2a9c1e", "dev@example.com", path="/aws-reserved/sso.amazonaws.com/"
    )
    app_role = role_identity(account, "app", "i-0123456789abcdef0")
    ci_user = user_identity(account, "legacy-ci-bot")
    terraform_ua = {"user_agent": TERRAFORM_USER_AGENT}
    iam_kinds: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
        (CREATE_USER, "svc-datadog-{n}", terraform, {"path": "/integrations/", **terraform_ua}),
        (CREATE_USER, "dev-{n}", developer, {}),
        (CREATE_ACCESS_KEY, "svc-datadog-{n}", terraform, terraform_ua),
        (CREATE_ACCESS_KEY, "dev-{n}", ci_user, {}),
        (CREATE_LOGIN_PROFILE, "dev-{n}", developer, {}),
        (CREATE_USER, "x-{n}", developer, {"error_code": "AccessDenied"}),
    ]
    for index in range(count):
        when = start + timedelta(seconds=index * 2)
        event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        if rng.random() >= iam_share:
            source, name, params = _NOISE[index % len(_NOISE)]
            yield {
                "eventVersion": "1.09",
                "userIdentity": app_role,
                "eventTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "eventSource": source,
                "eventName": name,
                "awsRegion": "us-east-1",
                "sourceIPAddress": f"10.0.{index % 250}.{index % 200}",
                "userAgent": "aws-sdk-java/2.25.0 Linux/5.10 OpenJDK_64-Bit_Server_VM/17.0.10",
                "requestParameters": params,
                "responseElements": None,
                "requestID": event_id,
                "eventID": event_id,
                "readOnly": name.startswith(("Get", "Describe")),
                "eventType": "AwsApiCall",
                "managementEvent": source != "s3.amazonaws.com",
                "recipientAccountId": account,
                "eventCategory": "Management",
            }
            continue
        kind = rng.randrange(10)
        n = rng.randrange(50)
        if kind < len(iam_kinds):
            name, user, identity, extra = iam_kinds[kind]
            yield cloudtrail_record(
                name, user=user.format(n=n), identity=identity, event_time=when, event_id=event_id, **extra
            )
        else:
            name = ("AttachUserPolicy", "DetachUserPolicy", "TagUser", "GetUser")[kind - len(iam_kinds)]
            record = cloudtrail_record(name, user=f"dev-{n}", identity=developer, event_time=when, event_id=event_id)
            record["requestParameters"] = {"userName": f"dev-{n}"}
            if name.endswith("UserPolicy"):
                record["requestParameters"]["policyArn"] = "arn:aws:iam::aws:policy/ReadOnlyAccess"
            elif name == "TagUser":
                record["requestParameters"]["tags"] = [{"key": "team", "value": "payments"}]
            yield record


def write_logs(
    out: str | Path, records: int, *, per_file: int = 250, seed: int = 7, account: str = DEFAULT_ACCOUNT
) -> list[Path]:
    """Write `records` synthetic records as CloudTrail writes them to S3: small gzipped objects."""
    folder = Path(out) / "AWSLogs" / account / "CloudTrail" / "us-east-1" / "2026" / "11"
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    batch: list[dict[str, Any]] = []
    for record in synthetic_records(records, seed=seed, account=account):
        batch.append(record)
        if len(batch) == per_file:
            written.append(_write_log_file(folder, account, len(written), batch))
            batch = []
    if batch:
        written.append(_write_log_file(folder, account, len(written), batch))
    return written


def _write_log_file(folder: Path, account: str, number: int, records: list[dict[str, Any]]) -> Path:
    stamp = records[0]["eventTime"].replace("-", "").replace(":", "")[:13]
    path = folder / f"{account}_CloudTrail_us-east-1_{stamp}Z_{number:08d}.json.gz"
    path.write_bytes(gzip.compress(json.dumps({"Records": records}, separators=(",", ":")).encode(), compresslevel=6))
    return path
