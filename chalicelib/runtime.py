"""Per-container wiring: settings, boto3 clients, the allowlist and the guardrail, built once.

Lambda keeps a container warm between invocations; everything here is built lazily on first use
and reused. A failure (an invalid allowlist, say) is not cached, so it is reported on every
invocation until it is fixed.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib import observability
from chalicelib.alerts import AlertDeliveryError, AlertSink, Notifier, NullNotifier, Sink
from chalicelib.allowlist import Allowlist, load_allowlist
from chalicelib.arns import parse_assumed_role_arn
from chalicelib.constants import REMEDIATION_SESSION_NAME
from chalicelib.guardrail import Guardrail
from chalicelib.iam import AccountAccessError, IamActions, error_code
from chalicelib.identity import OwnIdentity
from chalicelib.selfguard import guarded_roles
from chalicelib.settings import FROM_SECRET, Settings
from chalicelib.store import Store, utcnow

if TYPE_CHECKING:  # the approval, sweep, Slack and sink modules load only where they are used
    from chalicelib.approvals import Approvals, CaseListener
    from chalicelib.fanout import AccountSweep, ScheduleReport
    from chalicelib.organization import AccountPlan
    from chalicelib.outbox import BurstGate, FlushReport
    from chalicelib.rest import RestApi
    from chalicelib.securityhub import SecurityHub
    from chalicelib.silence import PipelineWatch, SilenceCheck
    from chalicelib.sinks import Fanout
    from chalicelib.slack_interactions import SlackInteractions
    from chalicelib.sweep import Reconciler, SweepReport

log = logging.getLogger(__name__)
T = TypeVar("T")
# At debug level botocore and urllib3 log request and response bodies: Secrets Manager values,
# Slack tokens. Whatever level the function is configured with, they stay at INFO or above.
for _noisy in ("botocore", "boto3", "urllib3"):
    logging.getLogger(_noisy).setLevel(max(logging.INFO, logging.getLogger(_noisy).level))


class SlackSecretError(RuntimeError):
    """The Slack secret could not be read or lacks what is needed."""


class LazySlackNotifier:
    """Chooses the Slack destination on first send, so a Secrets Manager outage never blocks IAM actions."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._notifier: Notifier | None = None

    def send(self, message: Mapping[str, Any]) -> None:
        if self._notifier is None:
            try:
                self._notifier = self._runtime.build_notifier()
            except SlackSecretError as exc:
                raise AlertDeliveryError(str(exc)) from None
        self._notifier.send(message)


class Lazy(Generic[T]):
    """An iterable whose items are built on first iteration (the sinks: only when an alert is sent)."""

    def __init__(self, build: Callable[[], Iterable[T]]) -> None:
        self._build = build

    def __iter__(self) -> Iterator[T]:
        return iter(self._build())


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._session = boto3.session.Session()
        self._config = Config(
            retries={"mode": "standard", "max_attempts": settings.iam_max_attempts},
            connect_timeout=5,
            read_timeout=15,
        )
        self._clients: dict[str, Any] = {}
        self._emails: dict[str, str | None] = {}
        self._bot_token: str | None = None
        self._members: dict[str, tuple[IamActions, dict[str, str], datetime]] = {}
        #: Member account -> the id of the remediation role the guardrail assumed there (AROA...).
        self._member_role_ids: dict[str, str] = {}
        self._caller: dict[str, Any] | None = None
        self._home_account = settings.home_account
        self._lock = threading.Lock()

    def client(self, service: str) -> Any:
        with self._lock:
            if service not in self._clients:
                self._clients[service] = self._session.client(service, config=self._config)
            return self._clients[service]

    @cached_property
    def allowlist(self) -> Allowlist:
        return load_allowlist(self.settings.allowlist_path or None)

    @cached_property
    def store(self) -> Store:
        return Store(self.client("dynamodb"), self.settings.table)

    @cached_property
    def iam(self) -> IamActions:
        return IamActions(self.client("iam"), policy_name=self.settings.quarantine_policy_name)

    def learn_home_account(self, lambda_context: Any) -> None:
        """Lambda's context names the function's ARN, and so the account, at no cost."""
        arn = str(getattr(lambda_context, "invoked_function_arn", "") or "")
        parts = arn.split(":")
        if not self._home_account and len(parts) > 4 and parts[4].isdigit() and len(parts[4]) == 12:
            self._home_account = parts[4]

    @property
    def home_account(self) -> str:
        """The account the guardrail runs in: from settings, the Lambda context, or STS once."""
        if not self._home_account:
            self._home_account = self._caller_identity()["Account"]
        return self._home_account

    def _caller_identity(self) -> dict[str, Any]:
        """sts:GetCallerIdentity, once per container (it needs no permission)."""
        if self._caller is None:
            self._caller = dict(self.client("sts").get_caller_identity())
        return self._caller

    def own_role_id(self, account: str, role_name: str) -> str:
        """The id of one of the guardrail's own roles, where it is known ('' otherwise).

        At home, the function's own role (GetCallerIdentity's UserId); in a member account, the
        remediation role as the last AssumeRole there returned it.
        """
        if account != self.home_account:
            return self._member_role_ids.get(account, "")
        try:
            caller = self._caller_identity()
        except (ClientError, BotoCoreError) as exc:
            log.warning("GetCallerIdentity failed; own role ids unknown: %s", error_code(exc))
            return ""
        assumed = parse_assumed_role_arn(str(caller.get("Arn", "")))
        if assumed is None or assumed.role != role_name:
            return ""
        return str(caller.get("UserId", "")).split(":", 1)[0]

    @cached_property
    def own_identity(self) -> OwnIdentity:
        """Who the guardrail is, pinned to the home account and its member sessions."""
        return OwnIdentity.from_settings(self.settings, lambda: self.home_account, self.own_role_id)

    def iam_for(self, account: str) -> IamActions:
        """IAM actions in `account`: directly at home, through GuardrailRemediationRole elsewhere.

        Assumed-role credentials are cached until five minutes before they expire.
        """
        if not account or account == self.home_account:
            return self.iam
        return self._member(account)[0]

    def member_client(self, account: str, service: str, region: str = "us-east-1") -> Any:
        """A client for `service` in a member account, with the remediation role's credentials."""
        credentials = self._member(account)[1]
        with self._lock:
            return self.member_session.client(service, region_name=region, config=self._config, **credentials)

    @cached_property
    def member_session(self) -> boto3.session.Session:
        """One session for every member account's clients (its loaders and caches are shared: a
        session per account costs far more than the calls); the credentials are per client."""
        return boto3.session.Session()

    def _member(self, account: str) -> tuple[IamActions, dict[str, str]]:
        cached = self._members.get(account)
        if cached and cached[2] - timedelta(minutes=5) > utcnow():
            return cached[0], cached[1]
        role_arn = f"arn:aws:iam::{account}:role/{self.settings.remediation_role}"
        kwargs: dict[str, Any] = {
            "RoleArn": role_arn,
            "RoleSessionName": REMEDIATION_SESSION_NAME,
            "DurationSeconds": 3600,
        }
        if self.settings.external_id:
            kwargs["ExternalId"] = self.settings.external_id
        try:
            assumed = self.client("sts").assume_role(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise AccountAccessError(
                f"cannot assume {role_arn}: {error_code(exc)} (account outside the organization, or no role)"
            ) from None
        credentials = assumed["Credentials"]
        role_id = str(assumed.get("AssumedRoleUser", {}).get("AssumedRoleId", "")).split(":", 1)[0]
        if role_id:
            self._member_role_ids[account] = role_id
        keys = {
            "aws_access_key_id": credentials["AccessKeyId"],
            "aws_secret_access_key": credentials["SecretAccessKey"],
            "aws_session_token": credentials["SessionToken"],
        }
        with self._lock:
            iam_client = self.member_session.client("iam", config=self._config, **keys)
        actions = IamActions(iam_client, policy_name=self.settings.quarantine_policy_name)
        expires = credentials["Expiration"]
        self._members[account] = (actions, keys, expires if expires.tzinfo else expires.replace(tzinfo=UTC))
        return actions, keys

    @cached_property
    def notifier(self) -> Notifier:
        return LazySlackNotifier(self)

    @cached_property
    def guardrail(self) -> Guardrail:
        return Guardrail(
            allowlist=self.allowlist,
            iam_for=self.iam_for,
            store=self.store,
            notifier=self.notifier,
            own_roles=self.own_identity,
            policy_name=self.settings.quarantine_policy_name,
            mode=self.settings.mode or None,
            sinks=Lazy(lambda: self.alert_sinks),
            guarded_roles=guarded_roles(
                self.settings.remediation_role, self.settings.own_roles, self.settings.own_role_names
            ),
            self_approval_checkable=lambda: bool(self.slack_bot_token()),
            burst=self.burst_gate,
        )

    @cached_property
    def sinks(self) -> dict[str, Sink]:
        """PagerDuty and the JSON webhook, where configured, by the name outbox items carry."""
        s = self.settings
        if not (s.pagerduty_routing_key or s.webhook_url):
            return {}
        from chalicelib.sinks import PAGERDUTY, WEBHOOK, HttpPoster, PagerDutySink, WebhookSink

        options = {"timeout": s.sink_timeout, "retries": s.sink_retries}
        built: dict[str, Sink] = {}
        if s.pagerduty_routing_key:
            key = self._sink_secret("pagerduty_routing_key", s.pagerduty_routing_key)
            built[PAGERDUTY] = PagerDutySink(HttpPoster("PagerDuty", **options), key, s.pagerduty_url)
        if s.webhook_url:
            url = self._sink_secret("alert_webhook_url", s.webhook_url)
            token = self._sink_secret("alert_webhook_token", s.webhook_url, optional=True)
            built[WEBHOOK] = WebhookSink(HttpPoster("alert webhook", **options), url, token)
        return built

    def _sink_secret(self, key: str, value: str, *, optional: bool = False) -> Callable[[], str]:
        """The setting itself, or (value `secret`) `key` from the guardrail's secret, read when sending."""

        def read() -> str:
            if value != FROM_SECRET:
                return "" if optional else value
            try:
                found = self.slack_secret.get(key, "")
            except SlackSecretError as exc:
                raise AlertDeliveryError(str(exc)) from None
            if not found and not optional:
                raise AlertDeliveryError(f"the guardrail's secret has no {key}")
            return found

        return read

    @cached_property
    def fanout(self) -> Fanout | None:
        if not self.sinks:
            return None
        from chalicelib.sinks import Fanout

        return Fanout(self.sinks, self.store)  # type: ignore[arg-type]

    @cached_property
    def security_hub(self) -> SecurityHub | None:
        """The home account's Security Hub (GUARDRAIL_SECURITY_HUB=true), else None."""
        if not self.settings.security_hub:
            return None
        from chalicelib.securityhub import SecurityHub

        # Few attempts and short timeouts: a throttling hub must not hold the event past Lambda's timeout.
        config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=3, read_timeout=5)
        return SecurityHub(
            self._session.client("securityhub", config=config),
            home_account=lambda: self.home_account,
            region=self._session.region_name or "us-east-1",
            decision_url=self.settings.decision_url,
        )

    @cached_property
    def alert_sinks(self) -> list[AlertSink]:
        """Where an event's alert goes besides Slack."""
        return [sink for sink in (self.fanout, self.security_hub) if sink is not None]

    @cached_property
    def case_listeners(self) -> list[CaseListener]:
        """Told when an approver closes a case or an exception ends."""
        return [listener for listener in (self.fanout, self.security_hub) if listener is not None]

    @cached_property
    def slack_secret(self) -> dict[str, str]:
        """The Secrets Manager JSON (`bot_token`, `signing_secret`, `channel`, `webhook_url`)."""
        secret_id = self.settings.slack_secret_id
        try:
            raw = self.client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"]
        except Exception as exc:  # botocore errors of every kind
            raise SlackSecretError(f"cannot read Slack secret: {error_code(exc)}") from None
        try:
            data = json.loads(raw)
        except ValueError:
            raise SlackSecretError("the Slack secret is not a JSON object") from None
        if not isinstance(data, dict):
            raise SlackSecretError("the Slack secret is not a JSON object")
        return {k: str(v) for k, v in data.items() if isinstance(v, str)}

    @cached_property
    def approvals(self) -> Approvals:
        from chalicelib.approvals import Approvals

        return Approvals(
            store=self.store,
            iam_for=self.iam_for,
            allowlist=self.allowlist,
            listeners=Lazy(lambda: self.case_listeners),
        )

    @cached_property
    def rest_api(self) -> RestApi:
        from chalicelib.rest import CallerRoles, RestApi

        return RestApi(self.approvals, CallerRoles(self.iam_for))

    @cached_property
    def slack_interactions(self) -> SlackInteractions:
        from chalicelib.slack_interactions import SlackInteractions

        return SlackInteractions(
            signing_secret=lambda: self.slack_secret["signing_secret"],
            approvals=self.approvals,
            store=self.store,
            responder=self.respond_to_slack,
            email_of=self.slack_email,
        )

    def reconciler(
        self, account: str = "", *, dry_run: bool = False, clock: Callable[[], datetime] = utcnow
    ) -> Reconciler:
        """The reconciler of one account (home by default; members through their remediation role)."""
        from chalicelib.sweep import Reconciler

        mode = self.settings.mode or self.allowlist.mode
        return Reconciler(
            iam=self.iam_for(account) if account else self.iam,
            store=self.store,
            allowlist=self.allowlist,
            mode=mode,
            dry_run=dry_run,
            clock=clock,
            account=account or self.home_account,
        )

    def sweep_plan(self) -> AccountPlan:
        """The accounts to sweep: home, the organization's (discovery), the explicit list, minus exclusions."""
        from chalicelib.organization import Organization, plan_accounts

        s = self.settings
        return plan_accounts(
            home=self.home_account,
            discovery=s.org_discovery,
            organization=Organization(self.client("organizations")) if s.org_discovery != "false" else None,
            explicit=s.sweep_accounts,
            exclude=s.sweep_exclude,
        )

    def account_sweep(
        self, account: str, *, dry_run: bool = False, notify: bool = True, clock: Callable[[], datetime] = utcnow
    ) -> AccountSweep:
        """One account's sweep: its users, and for a member account the silence checks."""
        from chalicelib.fanout import AccountSweep

        member = bool(account) and account != self.home_account
        return AccountSweep(
            account=account or self.home_account,
            reconciler=lambda: self.reconciler(account, dry_run=dry_run, clock=clock),
            silence=(lambda: self.silence_check(account, clock=clock)) if member else None,
            store=self.store,
            notifier=self.notifier if notify else None,
            dry_run=dry_run,
            clock=clock,
        )

    def silence_check(self, account: str, *, clock: Callable[[], datetime] = utcnow) -> SilenceCheck:
        from chalicelib.silence import IAM_REGION, SilenceCheck

        actions = self.iam_for(account)  # raises AccountAccessError
        return SilenceCheck(
            account=account,
            events=self.member_client(account, "events", IAM_REGION),
            cloudtrail=self.member_client(account, "cloudtrail", IAM_REGION),
            iam=actions.client,
            dynamodb=self.client("dynamodb"),
            table=self.settings.table,
            policy_name=self.settings.quarantine_policy_name,
            clock=clock,
        )

    def run_sweep(self) -> SweepReport | ScheduleReport:
        """The hourly function: fan out through SQS when a queue is set, else sweep here."""
        from chalicelib.fanout import SweepQueue, schedule_sweep
        from chalicelib.sweep import run_sweep

        plan = self.sweep_plan()
        if self.settings.sweep_queue:
            return schedule_sweep(
                approvals=self.approvals,
                store=self.store,
                notifier=self.notifier,
                queue=SweepQueue(self.client("sqs"), self.settings.sweep_queue),
                accounts=plan.accounts,
                discovered=plan.discovered,
                errors=plan.errors,
            )
        builders = [lambda account=account: self.account_sweep(account) for account in plan.accounts]
        report = run_sweep(
            approvals=self.approvals,
            store=self.store,
            notifier=self.notifier,
            reconcilers=builders,  # type: ignore[arg-type]
            sinks=self.sinks,
            observers=self.sweep_observers(plan.accounts),
        )
        report.errors += plan.errors
        return report

    def sweep_observers(self, accounts: list[str]) -> list[Callable[[SweepReport], None]]:
        """Who sees a sweep's report besides Slack: the sinks, and Security Hub for the accounts swept."""
        hub, sinks = self.security_hub, self.fanout
        observers: list[Callable[[SweepReport], None]] = [sinks.sweep] if sinks else []
        if hub:
            observers.append(lambda report: hub.sweep(report, accounts))
        return observers

    def run_worker(self, records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        """The SQS worker: one account per message; failures reported per message."""
        from chalicelib.fanout import handle_messages, worker_sweep

        def sweep_one(account: str) -> None:
            report = worker_sweep(self.account_sweep(account), self.store, self.notifier)
            for observe in self.sweep_observers([account]):
                observe(report)

        return handle_messages(records, sweep_one)

    @cached_property
    def burst_gate(self) -> BurstGate:
        from chalicelib.outbox import BurstGate

        return BurstGate(self.store, self.client("dynamodb"))

    def flush_alerts(self) -> FlushReport:
        from chalicelib.outbox import Flusher

        return Flusher(self.store, self.notifier, sinks=self.sinks).flush()

    @cached_property
    def pipeline_watch(self) -> PipelineWatch:
        from chalicelib.silence import PipelineWatch

        return PipelineWatch(
            store=self.store,
            notifier=self.notifier,
            policy_name=self.settings.quarantine_policy_name,
            remediation_role=self.settings.remediation_role,
        )

    def handle_event(self, raw: Any) -> dict[str, Any]:
        """on_iam_event: heartbeats and rule tampering go to the pipeline watch, the rest to the guardrail."""
        from chalicelib.silence import pipeline_event

        if pipeline_event(raw):
            return self.pipeline_watch.handle(raw)
        return self.guardrail.handle(raw).to_dict()

    def respond_to_slack(self, url: str, message: Mapping[str, Any]) -> None:
        """Post to an interaction's response_url (Slack's own hosts only)."""
        from chalicelib.notify import WebhookNotifier
        from chalicelib.slack_interactions import response_url_allowed

        if not response_url_allowed(url, self.settings.slack_response_hosts):
            log.warning("refused to post to a response_url outside %s", sorted(self.settings.slack_response_hosts))
            return
        try:
            WebhookNotifier(url, timeout=self.settings.slack_timeout, max_retries=1).send(message)
        except AlertDeliveryError as exc:
            log.error("could not update the Slack message: %s", exc)

    def slack_email(self, slack_user_id: str) -> str | None:
        """The clicker's email through users.info; None when no bot token is configured.

        With a bot token, a failed lookup raises: the caller refuses rather than skip the
        self-approval check.
        """
        if slack_user_id in self._emails:
            return self._emails[slack_user_id]
        token = self.slack_bot_token()
        if not token:
            return None
        from slack_sdk.web import WebClient

        client = WebClient(token=token, base_url=self.settings.slack_api_url, timeout=3)
        email = client.users_info(user=slack_user_id)["user"]["profile"].get("email")
        if not isinstance(email, str) or "@" not in email:
            raise LookupError("users.info returned no email (the app needs users:read.email)")
        self._emails[slack_user_id] = email
        return email

    def slack_bot_token(self) -> str:
        """The bot token from the Slack secret ('' when there is none or it cannot be read).

        Read once per container (a deployment with a bot token reads the secret to send anyway).
        """
        if self._bot_token is None:
            self._bot_token = ""
            if self.settings.slack_secret_id:
                try:
                    self._bot_token = self.slack_secret.get("bot_token", "")
                except SlackSecretError:
                    log.warning("the Slack secret cannot be read: self-approval cannot be checked")
        return self._bot_token

    def build_notifier(self) -> Notifier:
        from chalicelib.notify import BotNotifier, WebhookNotifier

        s = self.settings
        options = {"timeout": s.slack_timeout, "max_retries": s.slack_retries}
        if s.slack_webhook_url:
            return WebhookNotifier(s.slack_webhook_url, **options)
        if s.slack_secret_id:
            secret = self.slack_secret
            if secret.get("bot_token") and secret.get("channel"):
                return BotNotifier(secret["bot_token"], secret["channel"], base_url=s.slack_api_url, **options)
            if secret.get("webhook_url"):
                return WebhookNotifier(secret["webhook_url"], **options)
            raise SlackSecretError("the Slack secret has neither bot_token + channel nor webhook_url")
        return NullNotifier()


_lock = threading.Lock()
_runtime: Runtime | None = None


def get(lambda_context: Any = None) -> Runtime:
    """The container's runtime, built from the environment on first use."""
    global _runtime
    with _lock:
        if _runtime is None:
            observability.setup()
            _runtime = Runtime(Settings.from_env())
        if lambda_context is not None:
            _runtime.learn_home_account(lambda_context)
        return _runtime


def reset() -> None:
    """Forget the container state (tests, and the demo between scenarios)."""
    global _runtime
    with _lock:
        _runtime = None
