"""iam-user-guardrail: Chalice wiring only; the logic lives in chalicelib/."""

from typing import Any

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


class UncheckedEvent(CloudWatchEvent):
    """Chalice's CloudWatchEvent raises KeyError on an envelope that lacks a field; our parser
    judges the raw input instead and rejects it with a reason."""

    def _extract_attributes(self, event_dict: Any) -> None:
        pass


@app.on_cw_event(IAM_EVENT_PATTERN, name="on_iam_event")
def on_iam_event(event: CloudWatchEvent) -> dict:
    return runtime.get().guardrail.handle(event.to_dict()).to_dict()


app.handler_map["on_iam_event"].event_class = UncheckedEvent
