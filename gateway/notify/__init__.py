"""Webhook notifications of gateway alerts (JSON, WeCom and DingTalk robots).

The service builds one :class:`Notifier` from the ``[notify]`` section, calls
``start()``, then ``notify(alert)`` for every alert it raises, and ``stop()`` at the end.
See docs/notifications.md.
"""

from gateway.notify.config import NotifyConfig, WebhookConfig
from gateway.notify.errors import NotifyError
from gateway.notify.formats import WebhookRequest, answer_error, render, verify_signature
from gateway.notify.notifier import Notifier
from gateway.notify.queue import Delivery, DeliveryQueue, QueueError

__all__ = [
    "Delivery",
    "DeliveryQueue",
    "Notifier",
    "NotifyConfig",
    "NotifyError",
    "QueueError",
    "WebhookConfig",
    "WebhookRequest",
    "answer_error",
    "render",
    "verify_signature",
]
