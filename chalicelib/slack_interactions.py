"""`POST /slack/interactions`: the Approve / Keep quarantined buttons.

Order (STYLE.md 7): verify the signature over the raw body, then authorize (approver listed, not
the requester), then act idempotently (a decision is taken once), then audit. A bad or stale
signature gets 401 and nothing else; every signed request gets 200, and a refusal is told to the
clicker as an ephemeral message and audited.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlparse

from slack_sdk.signature import SignatureVerifier

from chalicelib.approvals import ApprovalError, Approvals, GrantRequest, ReleaseFailedError
from chalicelib.constants import ACTION_APPROVE_PREFIX, ACTION_KEEP_QUARANTINED, APPROVE_BUTTON_DAYS, QUARANTINE
from chalicelib.slack_message import DECISION_BLOCK_ID, SECTION_MAX, clip, mrkdwn, safe
from chalicelib.store import EVENT_SK, Store, StoreUnavailableError, event_pk, iso

log = logging.getLogger(__name__)

APPROVE_ACTIONS = {f"{ACTION_APPROVE_PREFIX}{days}": days for days in APPROVE_BUTTON_DAYS}
OUR_ACTIONS = frozenset({*APPROVE_ACTIONS, ACTION_KEEP_QUARANTINED})
_SLACK_ID_RE = re.compile(r"^[UW][A-Z0-9]{2,}$")
DECISION_SK = "DECISION"


def decision_pk(event_id: str) -> str:
    return f"DECISION#{event_id}"


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: str = ""


class RefusedError(Exception):
    """A signed request the guardrail will not act on; the text goes to the clicker."""


class SlackInteractions:
    def __init__(
        self,
        *,
        signing_secret: Callable[[], str],
        approvals: Approvals,
        store: Store,
        responder: Callable[[str, Mapping[str, Any]], None],
        email_of: Callable[[str], str | None] = lambda _: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._signing_secret = signing_secret
        self.approvals = approvals
        self.store = store
        self._respond = responder
        self._email_of = email_of
        self._clock = clock

    def handle(self, raw_body: bytes | str, headers: Mapping[str, str]) -> Reply:
        body = raw_body.decode("utf-8", "replace") if isinstance(raw_body, bytes) else raw_body
        lower = {k.lower(): v for k, v in headers.items()}
        if not self._signature_ok(body, lower):
            return Reply(401, "invalid signature")
        payload: dict[str, Any] = {}
        try:
            payload = _payload(body)
            self._act(payload)
        except RefusedError as refusal:
            self._refuse(payload, str(refusal))
        except StoreUnavailableError as exc:
            log.error("interaction failed: %s", exc)
            self._tell(payload, "The guardrail's table is unreachable; nothing was changed. Try again shortly.")
        except Exception:  # Slack shows the clicker an error either way; ours says what to do
            log.exception("interaction failed")
            self._tell(payload, ":x: The guardrail failed to act on this click; nothing was decided. Try again.")
        return Reply(200)

    # -- steps -------------------------------------------------------------------------------

    def _signature_ok(self, body: str, headers: Mapping[str, str]) -> bool:
        timestamp = headers.get("x-slack-request-timestamp", "")
        signature = headers.get("x-slack-signature", "")
        if not timestamp or not signature:
            return False
        try:
            verifier = SignatureVerifier(self._signing_secret(), clock=_Clock(self._clock))
        except Exception as exc:  # no (or an empty) secret, no verification: fail closed
            log.error("cannot verify Slack requests: %s", type(exc).__name__)
            return False
        try:
            return bool(verifier.is_valid(body=body, timestamp=timestamp, signature=signature))
        except (ValueError, TypeError):  # a non-numeric timestamp; a non-ASCII signature (compare_digest)
            return False

    def _act(self, payload: dict[str, Any]) -> None:
        if payload.get("type") != "block_actions":
            raise RefusedError(f"unsupported interaction type {safe(repr(str(payload.get('type'))), 60)}")
        actions = payload.get("actions")
        if not isinstance(actions, list) or len(actions) != 1 or not isinstance(actions[0], dict):
            raise RefusedError("expected exactly one action")
        action = actions[0]
        action_id = action.get("action_id")
        if action_id not in OUR_ACTIONS:
            raise RefusedError(f"unknown action {safe(repr(str(action_id)), 80)}")
        clicker = _slack_user(payload)
        if clicker not in self.approvals.allowlist.approvers.slack_user_ids:
            raise RefusedError("you are not an approver in the guardrail's allowlist")
        account, user, event_id = _button_value(action.get("value"))
        case = self.store.get(event_pk(event_id), EVENT_SK)
        if not case or case.get("account") != account or case.get("user") != user or case.get("verdict") != QUARANTINE:
            raise RefusedError("this button does not match a quarantine the guardrail recorded")
        try:
            email = self._email_of(clicker)
        except Exception:  # a configured lookup that fails must not wave the approval through
            log.warning("users.info failed for an approver; self-approval cannot be ruled out")
            raise RefusedError(
                "your Slack email could not be looked up, so self-approval cannot be ruled out: try again"
            ) from None
        if email and _is_requester(email, self._requester_names(case)):
            raise RefusedError("you created this user or credential: someone else must decide")
        self._claim(event_id, clicker, action_id)
        try:
            outcome = self._decide(action_id, account, user, event_id, clicker, case)
            if email is None and action_id != ACTION_KEEP_QUARANTINED:
                outcome += " (self-approval not checked: no Slack bot token to look up the approver's email)"
        except ReleaseFailedError as exc:
            outcome = f":x: Approved by <@{clicker}>, but the release is incomplete: {safe(str(exc), 500)}"
        except ApprovalError as exc:
            self.store.delete(decision_pk(event_id), DECISION_SK)
            raise RefusedError(safe(str(exc), 500)) from None
        except Exception:
            self.store.delete(decision_pk(event_id), DECISION_SK)  # undecided: the click may be repeated
            raise
        self._replace_buttons(payload, outcome)

    def _requester_names(self, case: Mapping[str, Any]) -> set[str]:
        """What names the requester: SSO session name, IAM user name, and email-like tags of that user."""
        names = {str(case.get(k, "")).strip().lower() for k in ("actor_session", "actor_user_name")}
        account, user_name = str(case.get("actor_account") or case.get("account", "")), case.get("actor_user_name")
        if user_name:
            names |= self.approvals.user_tag_values(account, str(user_name))
        return {n for n in names if n}

    def _claim(self, event_id: str, clicker: str, action_id: str) -> None:
        claim = {
            "pk": decision_pk(event_id),
            "sk": DECISION_SK,
            "by": clicker,
            "action": action_id,
            "at": iso(self.approvals.now()),
        }
        if not self.store.put(claim, condition="attribute_not_exists(pk)"):
            existing = self.store.get(decision_pk(event_id), DECISION_SK) or {}
            by, action, at = (existing.get(k, "?") for k in ("by", "action", "at"))
            raise RefusedError(f"already decided by <@{by}> ({action}) at {at}")

    def _decide(
        self, action_id: str, account: str, user: str, event_id: str, clicker: str, case: Mapping[str, Any]
    ) -> str:
        if action_id == ACTION_KEEP_QUARANTINED:
            self.approvals.keep_quarantined(account, user, approver=f"slack:{clicker}", case_event_id=event_id)
            return f":lock: Kept quarantined by <@{clicker}>"
        days = APPROVE_ACTIONS[action_id]
        granted = self.approvals.grant(
            GrantRequest(
                account=account,
                user=user,
                days=days,
                reason=f"approved in Slack for {days} days",
                approver=f"slack:{clicker}",
                requester=str(case.get("actor_arn") or case.get("actor", "")),
                source="slack",
                case_event_id=event_id,
            )
        )
        until = granted["expires_at"][:16].replace("T", " ")
        return f":white_check_mark: Approved by <@{clicker}> until {until} UTC, reason: {safe(granted['reason'], 300)}"

    def _replace_buttons(self, payload: Mapping[str, Any], outcome: str) -> None:
        message = payload.get("message") if isinstance(payload.get("message"), dict) else {}
        blocks = [
            b for b in message.get("blocks", []) if isinstance(b, dict) and b.get("block_id") != DECISION_BLOCK_ID
        ]
        blocks = [b for b in blocks if b.get("type") != "actions"]
        blocks.append({"type": "section", "text": mrkdwn(outcome)})
        self._post(payload, {"replace_original": True, "text": outcome, "blocks": blocks})

    def _refuse(self, payload: Mapping[str, Any], reason: str) -> None:
        user = payload.get("user") if isinstance(payload.get("user"), dict) else {}
        action = (payload.get("actions") or [{}])[0] if isinstance(payload.get("actions"), list) else {}
        record = {
            "kind": "refusal",
            "by": f"slack:{str(user.get('id', ''))[:40]}",
            "reason": reason,
            "action": str(action.get("action_id", ""))[:80] if isinstance(action, dict) else "",
            "value": str(action.get("value", ""))[:300] if isinstance(action, dict) else "",
        }
        try:
            self.store.append_audit(record)
        except StoreUnavailableError:
            log.error("refusal not audited (table unreachable): %s", json.dumps(record))
        self._tell(payload, f":no_entry: {reason}")

    def _tell(self, payload: Mapping[str, Any], text: str) -> None:
        reply = {"response_type": "ephemeral", "replace_original": False, "text": text}
        self._post(payload, {**reply, "blocks": [{"type": "section", "text": mrkdwn(clip(text, SECTION_MAX))}]})

    def _post(self, payload: Mapping[str, Any], message: Mapping[str, Any]) -> None:
        url = payload.get("response_url")
        if isinstance(url, str) and url:
            self._respond(url, message)


class _Clock:
    """slack_sdk's Clock interface over an injectable time source (tests pin it)."""

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now

    def now(self) -> float:
        return self._now()


def _payload(body: str) -> dict[str, Any]:
    fields = parse_qs(body, keep_blank_values=True)
    raw = fields.get("payload", [""])[0]
    try:
        payload = json.loads(raw)
    except ValueError:
        raise RefusedError("the request carries no JSON payload") from None
    if not isinstance(payload, dict):
        raise RefusedError("the payload is not a JSON object")
    return payload


def _slack_user(payload: Mapping[str, Any]) -> str:
    user = payload.get("user")
    clicker = user.get("id") if isinstance(user, dict) else None
    if not isinstance(clicker, str) or not _SLACK_ID_RE.match(clicker):
        raise RefusedError("the request names no Slack user")
    return clicker


def _button_value(value: Any) -> tuple[str, str, str]:
    try:
        data = json.loads(value) if isinstance(value, str) else None
    except ValueError:
        data = None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("a", "u", "e")):
        raise RefusedError("the button carries no account, user and event")
    return data["a"], data["u"], data["e"]


def _is_requester(email: str, names: set[str]) -> bool:
    """One of the requester's names is the clicker's email, or its local part (`alice` for
    `alice@example.com`): a false match refuses an approval someone else can give, a missed one
    lets a requester approve themself."""
    email = email.strip().lower()
    local = email.split("@", 1)[0]
    return any(name == email or name.split("@", 1)[0] == local for name in names if name)


def response_url_allowed(url: str, hosts: frozenset[str]) -> bool:
    """Post only to Slack's own hosts (or the test receiver named in settings)."""
    parsed = urlparse(url)
    if parsed.hostname not in hosts:
        return False
    return parsed.scheme == "https" or parsed.hostname in ("127.0.0.1", "localhost")
