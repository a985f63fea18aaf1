"""iam-user-guardrail: Chalice wiring only; the logic lives in chalicelib/."""

from typing import Any

from chalice import Chalice, IAMAuthorizer, Rate, Response
from chalice.app import CloudWatchEvent, SQSEvent

from chalicelib import runtime
from chalicelib.constants import (
    CLOUDTRAIL_DETAIL_TYPE,
    EVENTBRIDGE_SOURCE,
    EVENTS_EVENT_SOURCE,
    EVENTS_SOURCE,
    FORWARDED_EVENTS,
    IAM_EVENT_SOURCE,
    SWEEP_WORKER_CONCURRENCY,
)

app = Chalice(app_name="iam-user-guardrail")

#: The IAM events, the heartbeat's TagPolicy, and DisableRule/DeleteRule/RemoveTargets (silence).
IAM_EVENT_PATTERN = {
    "source": [EVENTBRIDGE_SOURCE, EVENTS_SOURCE],
    "detail-type": [CLOUDTRAIL_DETAIL_TYPE],
    "detail": {"eventSource": [IAM_EVENT_SOURCE, EVENTS_EVENT_SOURCE], "eventName": sorted(FORWARDED_EVENTS)},
}
#: Chalice writes it into an Fn::Sub: CloudFormation resolves ${Stage} (infra/resources.yaml's SweepQueue).
SWEEP_QUEUE = "iam-user-guardrail-${Stage}-sweep"


class UncheckedEvent(CloudWatchEvent):
    """Chalice's CloudWatchEvent raises KeyError on an envelope that lacks a field; our parser
    judges the raw input instead and rejects it with a reason."""

    def _extract_attributes(self, event_dict: Any) -> None:
        pass


@app.on_cw_event(IAM_EVENT_PATTERN, name="on_iam_event")
def on_iam_event(event: CloudWatchEvent) -> dict:
    return runtime.get(event.context).handle_event(event.to_dict())


app.handler_map["on_iam_event"].event_class = UncheckedEvent
iam_auth = IAMAuthorizer()


@app.schedule(Rate(1, unit=Rate.HOURS), name="sweep")
def sweep(event: Any) -> dict:
    return runtime.get(event.context).run_sweep().to_dict()


@app.on_sqs_message(queue=SWEEP_QUEUE, batch_size=5, name="sweep_worker", maximum_concurrency=SWEEP_WORKER_CONCURRENCY)
def sweep_worker(event: SQSEvent) -> dict:
    return runtime.get(event.context).run_worker(record.to_dict() for record in event)


@app.schedule(Rate(1, unit=Rate.MINUTES), name="flush_alerts")
def flush_alerts(event: Any) -> dict:
    return runtime.get(event.context).flush_alerts().to_dict()


@app.route("/slack/interactions", methods=["POST"], content_types=["application/x-www-form-urlencoded"])
def slack_interactions() -> Response:
    request = app.current_request
    reply = runtime.get().slack_interactions.handle(request.raw_body, request.headers)
    return Response(body=reply.body, status_code=reply.status, headers={"Content-Type": "text/plain"})


@app.route("/exceptions", methods=["POST"], authorizer=iam_auth)
def grant_exception() -> Response:
    request = app.current_request
    return json_response(*runtime.get().rest_api.grant(request.context.get("identity", {}), request.raw_body))


@app.route("/exceptions", methods=["GET"], authorizer=iam_auth)
def list_exceptions() -> Response:
    request = app.current_request
    return json_response(*runtime.get().rest_api.list(request.context.get("identity", {}), request.query_params))


@app.route("/exceptions/{account_id}/{user_name}", methods=["DELETE"], authorizer=iam_auth)
def revoke_exception(account_id: str, user_name: str) -> Response:
    identity = app.current_request.context.get("identity", {})
    return json_response(*runtime.get().rest_api.revoke(identity, account_id, user_name))


def json_response(status: int, body: dict) -> Response:
    return Response(body=body, status_code=status, headers={"Content-Type": "application/json"})
