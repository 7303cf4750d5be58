"""The OPC-UA client source's subscription: each publish answer becomes one ``Publish``
on the session's queue (samples, values of another type, text values), never one task per
value as asyncua's handler mode does; a Publish the server answers with a status that
means our session or subscription is gone becomes the session's loss at once.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from asyncua import Client, ua
from asyncua.common.subscription import Subscription

from edge.model import SampleBatch
from edge.protocols.opcua.client import Columns, status_name
from edge.sources.opcua_types import TextTag


@dataclass(slots=True)
class Publish:
    """What one publish answer (or one Read of a polling group) brought."""

    batch: SampleBatch
    odd: list[tuple[int, ua.DataValue]]  # (tag id, value) of values that were no number
    texts: list[tuple[TextTag, ua.DataValue]]


Out = asyncio.Queue[Publish | str]  # a str: the session is lost, and why


# Publish answers that mean the server no longer has our session or subscriptions.
# asyncua's publish loop retries the first two every second, and stops silently on
# BadNoSubscription: either way the source would only notice by the keepalive rule.
_GONE = frozenset({
    ua.StatusCodes.BadSessionIdInvalid, ua.StatusCodes.BadSessionClosed,
    ua.StatusCodes.BadSessionNotActivated, ua.StatusCodes.BadNoSubscription,
    ua.StatusCodes.BadSubscriptionIdInvalid,
})


def watch_publish(client: Client, out: Out) -> None:
    """Report a Publish answered with a ``_GONE`` status as the session's loss, at once."""
    session = client.uaclient.session
    publish = session.publish

    async def watched(acks: list[ua.SubscriptionAcknowledgement]) -> ua.PublishResponse:
        try:
            return await publish(acks)
        except ua.UaStatusCodeError as exc:
            if exc.code in _GONE:
                out.put_nowait(f"the server answered Publish with {status_name(exc.code)}")
            raise

    session.publish = watched


class BatchSubscription(Subscription):  # type: ignore[misc]  # asyncua is untyped here
    """A subscription whose publish answers become one batch each (not one task per
    value, as asyncua's handler mode does)."""

    def __init__(self, client: Client, params: ua.CreateSubscriptionParameters,
                 out: Out) -> None:
        super().__init__(client.uaclient.session, params, handler=None, queue_maxsize=1)
        self.tag_of_handle: dict[int, int] = {}
        self.text_of_handle: dict[int, TextTag] = {}
        self.last_publish_at = 0.0
        self.keepalive_s = 0.0
        self._out = out

    async def publish_callback(self, publish_result: ua.PublishResult) -> None:
        self.last_publish_at = time.monotonic()
        data = publish_result.NotificationMessage.NotificationData
        if not data:
            return  # a keepalive
        arrival = time.time_ns()
        cols = Columns()
        texts: list[tuple[TextTag, ua.DataValue]] = []
        tag_of = self.tag_of_handle
        for notif in data:
            if isinstance(notif, ua.DataChangeNotification):
                for item in notif.MonitoredItems:
                    tag = tag_of.get(item.ClientHandle)
                    if tag is not None:
                        cols.add(tag, item.Value, arrival)
                    elif (text := self.text_of_handle.get(item.ClientHandle)) is not None:
                        texts.append((text, item.Value))
            elif isinstance(notif, ua.StatusChangeNotification) and not notif.Status.is_good():
                self._out.put_nowait(f"subscription {self.subscription_id} reported "
                                     f"{status_name(notif.Status)}")
        if len(cols) or texts:
            self._out.put_nowait(Publish(cols.batch(), cols.odd, texts))
