"""iam-user-guardrail: Chalice wiring only; the logic lives in chalicelib/."""

from chalice import Chalice
from chalice.app import CloudWatchEvent

from chalicelib import runtime
from chalicelib.constants import CLOUDTRAIL_DETAIL_TYPE, EVENTBRIDGE_SOURCE, IAM_EVENT_SOURCE, SUBSCRIBED_EVENTS

app = Chalice(app_name="iam-user-guardrail")

IAM_EVENT_PATTERN = {
    "source": [EVENTBRIDGE_SOURCE],
    "detail-type": [CLOUDTRAIL_DETAIL_TYPE],
    "detail": {"eventSource": [IAM_EVENT_SOURCE], "eventName": sorted(SUBSCRIBED_EVENTS)},
}


@app.on_cw_event(IAM_EVENT_PATTERN, name="on_iam_event")
def on_iam_event(event: CloudWatchEvent) -> dict:
    return runtime.get().guardrail.handle(event.to_dict()).to_dict()
