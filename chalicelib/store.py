"""The guardrail's DynamoDB table: processed events, user records, exceptions, audit, outbox.

One table, keys `pk`/`sk`:

| item | pk | sk |
|---|---|---|
| processed CloudTrail event (TTL), with its decision | `EVENT#<eventID>` | `EVENT` |
| a decision taken on an alert (decided once) | `DECISION#<eventID>` | `DECISION` |
| the guardrail's record of a user | `USER` | `<account>#<user>` |
| exception | `EXCEPTION` | `<account>#<user>` |
| audit record (append-only) | `AUDIT` | `<ISO time>#<id>` |
| alert not yet delivered (`sink`: slack, pagerduty, webhook) | `OUTBOX` | `<ISO time>#<id>[#<sink>]` |
| an event's arrival from an account (TTL; silence detection) | `SEEN#<account>` | `<ISO time>#<eventID>` |
| an account's latest sweep result and heartbeat (fanout.py, silence.py) | `ACCOUNT` | `<account>` |
| a creator's alert count in a 10-minute window (TTL; outbox.py) | `BURST` | `<window>#<creator>` |
| an alert held for its creator's roll-up (outbox.py) | `ROLLUP` | `<window>#<creator>#<eventID>` |

The fixed partitions keep bulk reads (the sweep, `GET /exceptions`) to one paginated Query.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.alerts import SLACK_SINK
from chalicelib.constants import EVENT_RECORD_TTL_DAYS
from chalicelib.iam import error_code
from chalicelib.policy import ActiveException

log = logging.getLogger(__name__)

EVENT_SK: Final = "EVENT"
USER_PK: Final = "USER"
EXCEPTION_PK: Final = "EXCEPTION"
AUDIT_PK: Final = "AUDIT"
OUTBOX_PK: Final = "OUTBOX"
META_PK: Final = "META"
_SER = TypeSerializer()
_DESER = TypeDeserializer()


class StoreUnavailableError(RuntimeError):
    """The table could not be read or written."""


@contextmanager
def _unavailable(verb: str, table: str) -> Iterator[None]:
    """Turn botocore's errors into StoreUnavailableError (callers decide what a failure means)."""
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise StoreUnavailableError(f"cannot {verb} table {table}: {error_code(exc)}") from exc


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def user_sk(account: str, user: str) -> str:
    """IAM user names are unique without regard to case, and calls may spell them either way."""
    return f"{account}#{user.lower()}"


def watch_sk(account: str) -> str:
    return f"WATCHING#{account}"


def event_pk(event_id: str) -> str:
    return f"EVENT#{event_id}"


def is_active_exception(item: Mapping[str, Any] | None) -> bool:
    return bool(item) and item.get("state", "active") == "active"  # type: ignore[union-attr]


@dataclass(frozen=True, slots=True)
class EventState:
    """What the table knows that bears on one event."""

    processed: bool = False
    exception: ActiveException | None = None
    user_record: Mapping[str, Any] = field(default_factory=dict)
    #: The exception item as stored (moved with the user on a rename).
    exception_item: Mapping[str, Any] = field(default_factory=dict)

    @property
    def deactivated_keys(self) -> frozenset[str]:
        return frozenset(self.user_record.get("deactivated_keys", ()))


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to write once an event has been handled."""

    event_id: str
    account: str
    user: str
    audit: Mapping[str, Any]
    event: Mapping[str, Any] = field(default_factory=dict)
    user_update: Mapping[str, Any] = field(default_factory=dict)
    deactivated_keys: tuple[str, ...] = ()
    #: Access keys the guardrail approved (never taken for the new key of a record without its id).
    approved_keys: tuple[str, ...] = ()
    #: Credentials switched off by their owner: no longer approved (switching one back on is judged anew).
    unapproved_keys: tuple[str, ...] = ()
    unsent_alert: Mapping[str, Any] | None = None
    alert_error: str = ""
    #: CreateUser: the record starts afresh (a re-created name inherits nothing).
    fresh_record: bool = False
    #: UpdateUser: the record and exception move from this name to `user`.
    moved_from: str = ""
    #: The record as it was (what a move carries over), and the exception item to move.
    previous_record: Mapping[str, Any] = field(default_factory=dict)
    previous_exception: Mapping[str, Any] = field(default_factory=dict)
    #: DeleteUser: the record and any exception are closed.
    close: bool = False


def exception_from_item(item: Mapping[str, Any]) -> ActiveException:
    return ActiveException(
        account=item["account"],
        user_name=item["user"],
        expires_at=parse_iso(item["expires_at"]),
        approved_by=str(item.get("approver", "")),
        reason=item.get("reason", ""),
        ticket=item.get("ticket", ""),
        user_id=str(item.get("user_id", "")),
    )


class Store:
    """Reads and writes the guardrail table through a low-level DynamoDB client."""

    def __init__(self, client: Any, table: str, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._ddb = client
        self.table = table
        self._clock = clock

    # -- reads -------------------------------------------------------------------------------

    def load(self, event_id: str, account: str, user: str) -> EventState:
        """The event's processed flag, the user's exception and record: one BatchGetItem."""
        keys = [(event_pk(event_id), EVENT_SK)]
        if user:
            keys += [(EXCEPTION_PK, user_sk(account, user)), (USER_PK, user_sk(account, user))]
        found = self.get_many(keys)
        exception_item = found.get((EXCEPTION_PK, user_sk(account, user)))
        return EventState(
            processed=(event_pk(event_id), EVENT_SK) in found,
            exception=exception_from_item(exception_item) if is_active_exception(exception_item) else None,
            user_record=found.get((USER_PK, user_sk(account, user)), {}),
            exception_item=exception_item if is_active_exception(exception_item) else {},
        )

    def get_many(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        """Strongly consistent read of up to 100 items, keyed by (pk, sk)."""
        request = {self.table: {"Keys": [_encode({"pk": pk, "sk": sk}) for pk, sk in keys], "ConsistentRead": True}}
        items: list[dict[str, Any]] = []
        with _unavailable("read", self.table):
            for _ in range(5):
                reply = self._ddb.batch_get_item(RequestItems=request)
                items += [_decode(i) for i in reply.get("Responses", {}).get(self.table, [])]
                request = reply.get("UnprocessedKeys") or {}
                if not request:
                    break
        if request:
            raise StoreUnavailableError(f"table {self.table} left keys unprocessed")
        return {(item["pk"], item["sk"]): item for item in items}

    def watching_since(self, account: str) -> datetime:
        """When the guardrail began to watch `account` (set on first ask, by bootstrap or the sweep).

        A user created after it whose CreateUser the guardrail never saw had its event lost.
        """
        item = self.get(META_PK, watch_sk(account))
        if item is None:
            now = self._clock()
            self.put({"pk": META_PK, "sk": watch_sk(account), "since": iso(now)}, condition="attribute_not_exists(pk)")
            item = self.get(META_PK, watch_sk(account)) or {"since": iso(now)}
        return parse_iso(item["since"])

    def get(self, pk: str, sk: str) -> dict[str, Any] | None:
        return self.get_many([(pk, sk)]).get((pk, sk))

    def query(self, pk: str, *, since: str = "") -> Iterator[dict[str, Any]]:
        """Every item of one partition, oldest first (paginated)."""
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk" + (" AND sk >= :since" if since else ""),
            "ExpressionAttributeValues": _encode({"pk": pk, **({"since": since} if since else {})}, prefix=":"),
        }
        with _unavailable("query", self.table):
            for page in self._ddb.get_paginator("query").paginate(**kwargs):
                for item in page.get("Items", []):
                    yield _decode(item)

    # -- writes ------------------------------------------------------------------------------

    def record(self, outcome: Outcome) -> bool:
        """Mark the event processed and append its audit record, atomically.

        Returns False when another delivery of the same event got there first.
        """
        now = self._clock()
        ttl = int((now + timedelta(days=EVENT_RECORD_TTL_DAYS)).timestamp())
        event_item = {**outcome.event, "pk": event_pk(outcome.event_id), "sk": EVENT_SK, "at": iso(now), "ttl": ttl}
        items: list[dict[str, Any]] = [
            self.put_op(event_item, condition="attribute_not_exists(pk)"),
            {"Put": self._audit_put(outcome.audit, now, outcome.event_id)},
        ]
        items += self._user_ops(outcome, now)
        if outcome.account:  # when the account's last event arrived (silence detection reads it)
            seen = {"pk": f"SEEN#{outcome.account}", "sk": f"{iso(now)}#{outcome.event_id}", "ttl": ttl}
            items.append({"Put": {"TableName": self.table, "Item": _encode(seen)}})
        if outcome.unsent_alert is not None:
            item = self._outbox_item(outcome.event_id, outcome.unsent_alert, outcome.alert_error, now)
            items.append({"Put": {"TableName": self.table, "Item": _encode(item)}})
        return self.transact(items)

    def _user_ops(self, outcome: Outcome, now: datetime) -> list[dict[str, Any]]:
        """The writes that keep the user record and exception with the user (by id, not by name)."""
        account, user = outcome.account, outcome.user
        if not user:
            return []
        if outcome.close:
            closed = {"status": "deleted", "closed_at": iso(now), "closed_by_event": outcome.event_id}
            ops: list[dict[str, Any]] = [{"Update": self.user_update(account, user, closed)}]
            if outcome.previous_exception:
                ops.append(
                    self.update_op(
                        EXCEPTION_PK,
                        user_sk(account, user),
                        {"state": "closed", "ended_at": iso(now), "ended_by": "DeleteUser"},
                    )
                )
            return ops
        if outcome.moved_from and user_sk(account, outcome.moved_from) != user_sk(account, user):
            old = user_sk(account, outcome.moved_from)
            moved = {**outcome.previous_record, **outcome.user_update, "account": account, "user": user}
            keys = sorted({*moved.get("deactivated_keys", ()), *outcome.deactivated_keys})
            moved.update(pk=USER_PK, sk=user_sk(account, user), renamed_from=outcome.moved_from, updated_at=iso(now))
            moved.pop("deactivated_keys", None)
            if keys:
                moved["deactivated_keys"] = set(keys)
            ops = [
                {"Put": {"TableName": self.table, "Item": _encode(moved)}},
                {"Delete": {"TableName": self.table, "Key": _encode({"pk": USER_PK, "sk": old})}},
            ]
            if outcome.previous_exception:
                exception = {**outcome.previous_exception, "user": user, "sk": user_sk(account, user)}
                ops += [
                    {"Put": {"TableName": self.table, "Item": _encode(exception)}},
                    {"Delete": {"TableName": self.table, "Key": _encode({"pk": EXCEPTION_PK, "sk": old})}},
                ]
            return ops
        if outcome.fresh_record:
            fresh = {
                **outcome.user_update,
                "account": account,
                "user": user,
                "updated_at": iso(now),
                "seen_at": iso(now),
            }
            fresh.update(pk=USER_PK, sk=user_sk(account, user))
            if outcome.deactivated_keys:
                fresh["deactivated_keys"] = set(outcome.deactivated_keys)
            return [{"Put": {"TableName": self.table, "Item": _encode(fresh)}}]
        if outcome.user_update or outcome.approved_keys or outcome.unapproved_keys:
            update = self.user_update(
                account,
                user,
                outcome.user_update,
                add_keys=outcome.deactivated_keys,
                add={"approved_keys": outcome.approved_keys},
                discard={"approved_keys": outcome.unapproved_keys},
            )
            return [{"Update": update}]
        return []

    def transact(self, items: list[dict[str, Any]]) -> bool:
        """Write atomically; False when the first item's condition failed (someone got there first)."""
        try:
            with _unavailable("write", self.table):
                self._ddb.transact_write_items(TransactItems=items)
        except StoreUnavailableError as exc:
            cause = exc.__cause__
            reasons = cause.response.get("CancellationReasons") or [] if isinstance(cause, ClientError) else []
            if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                return False
            raise
        return True

    def put(
        self,
        item: Mapping[str, Any],
        *,
        condition: str = "",
        values: Mapping[str, Any] | None = None,
        names: Mapping[str, str] | None = None,
    ) -> bool:
        """Put one item; False when `condition` failed."""
        kwargs = self.put_op(item, condition=condition, values=values, names=names)["Put"]
        try:
            self._write(self._ddb.put_item, **kwargs)
        except StoreUnavailableError as exc:
            if exc.__cause__ is not None and error_code(exc.__cause__) == "ConditionalCheckFailedException":  # type: ignore[arg-type]
                return False
            raise
        return True

    def delete(self, pk: str, sk: str) -> None:
        self._write(self._ddb.delete_item, TableName=self.table, Key=_encode({"pk": pk, "sk": sk}))

    def put_op(
        self,
        item: Mapping[str, Any],
        *,
        condition: str = "",
        values: Mapping[str, Any] | None = None,
        names: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """A `Put` for `transact`."""
        op: dict[str, Any] = {"TableName": self.table, "Item": _encode(item)}
        if condition:
            op["ConditionExpression"] = condition
        if values:
            op["ExpressionAttributeValues"] = _encode(values, prefix=":")
        if names:
            op["ExpressionAttributeNames"] = dict(names)
        return {"Put": op}

    def update_op(
        self, pk: str, sk: str, values: Mapping[str, Any], *, require: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """An `Update` that sets `values`, only where the item's attributes equal `require`."""
        names = {f"#{k}": k for k in values}
        encoded = _encode(values, prefix=":")
        op: dict[str, Any] = {
            "TableName": self.table,
            "Key": _encode({"pk": pk, "sk": sk}),
            "UpdateExpression": "SET " + ", ".join(f"#{k} = :{k}" for k in values),
        }
        if require:
            names.update({f"#{k}": k for k in require})
            encoded.update(_encode(require, prefix=":require_"))
            op["ConditionExpression"] = " AND ".join(f"#{k} = :require_{k}" for k in require)
        op["ExpressionAttributeNames"] = names
        op["ExpressionAttributeValues"] = encoded
        return {"Update": op}

    def audit_op(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """A `Put` of a new audit record for `transact`."""
        return {"Put": self._audit_put(record, self._clock(), uuid.uuid4().hex)}

    def append_audit(self, record: Mapping[str, Any]) -> None:
        now = self._clock()
        self._write(self._ddb.put_item, **self._audit_put(record, now, uuid.uuid4().hex))

    def save_unsent_alert(self, event_id: str, message: Mapping[str, Any], error: str, *, sink: str = "") -> None:
        """Queue an alert; `sink` names a destination other than Slack (alerts.deliver_queued)."""
        item = self._outbox_item(event_id, message, error, self._clock(), sink)
        self._write(self._ddb.put_item, TableName=self.table, Item=_encode(item))

    @staticmethod
    def _outbox_item(
        event_id: str, message: Mapping[str, Any], error: str, now: datetime, sink: str = ""
    ) -> dict[str, Any]:
        return {
            "pk": OUTBOX_PK,
            "sk": f"{iso(now)}#{event_id}" + (f"#{sink}" if sink else ""),
            "sink": sink or SLACK_SINK,
            "event_id": event_id,
            "message": json.dumps(message, separators=(",", ":")),
            "error": error[:500],
            "attempts": 1,
            "first_failed_at": iso(now),
        }

    def _audit_put(self, record: Mapping[str, Any], now: datetime, unique: str) -> dict[str, Any]:
        item = {**record, "pk": AUDIT_PK, "sk": f"{iso(now)}#{unique}", "at": iso(now)}
        return {"TableName": self.table, "Item": _encode(item), "ConditionExpression": "attribute_not_exists(pk)"}

    def user_update(
        self,
        account: str,
        user: str,
        values: Mapping[str, Any],
        *,
        add_keys: tuple[str, ...] = (),
        remove: tuple[str, ...] = (),
        add: Mapping[str, tuple[str, ...]] | None = None,
        discard: Mapping[str, tuple[str, ...]] | None = None,
    ) -> dict[str, Any]:
        """An `Update` of the guardrail's record of a user, for `transact` (`add`: members added to string sets)."""
        values = {**values, "account": account, "user": user, "updated_at": iso(self._clock())}
        names = {f"#{k}": k for k in values}
        encoded = _encode(values, prefix=":")
        # When the guardrail began to watch this user: credentials older than that predate it.
        names["#seen_at"] = "seen_at"
        expression = "SET " + ", ".join(
            [*(f"#{k} = :{k}" for k in values), "#seen_at = if_not_exists(#seen_at, :updated_at)"]
        )
        sets = {"deactivated_keys": add_keys, **(add or {})}
        additions = [name for name, members in sets.items() if members]
        for name in additions:
            names[f"#{name}"] = name
            encoded[f":{name}"] = {"SS": sorted(set(sets[name]))}
        if additions:
            expression += " ADD " + ", ".join(f"#{name} :{name}" for name in additions)
        removals = [name for name, members in (discard or {}).items() if members]
        for name in removals:
            names[f"#{name}"] = name
            encoded[f":discard_{name}"] = {"SS": sorted(set((discard or {})[name]))}
        if removals:
            expression += " DELETE " + ", ".join(f"#{name} :discard_{name}" for name in removals)
        if remove:
            names.update({f"#{k}": k for k in remove})
            expression += " REMOVE " + ", ".join(f"#{k}" for k in remove)
        return {
            "TableName": self.table,
            "Key": _encode({"pk": USER_PK, "sk": user_sk(account, user)}),
            "UpdateExpression": expression,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": encoded,
        }

    def _write(self, method: Callable[..., Any], **kwargs: Any) -> None:
        with _unavailable("write", self.table):
            method(**kwargs)


def _encode(values: Mapping[str, Any], *, prefix: str = "") -> dict[str, Any]:
    return {f"{prefix}{k}": _SER.serialize(v) for k, v in values.items()}


def _decode(item: Mapping[str, Any]) -> dict[str, Any]:
    decoded = {k: _DESER.deserialize(v) for k, v in item.items()}
    for key, value in decoded.items():
        if isinstance(value, set):
            decoded[key] = sorted(value)
    return decoded
