"""The gateway's security alerts as notifications: the operator hears of every alerted finding, of every
sell a disabled key makes, of each kill and re-enable; the user hears when the key is disabled (with what
still runs and the way back) and when it is back.

The sink only hands notifications to the runtime's dispatcher (``dispatch`` queues and returns), so the
request that tripped a rule is not held up by a notification channel.
"""

from __future__ import annotations

from collections.abc import Callable

from autotrade.notify import messages
from autotrade.notify.model import Notification
from autotrade.vault.anomaly import AlertEvent, AlertSink, SecurityAlert


def security_notices(send: Callable[[Notification], object]) -> AlertSink:
    """An :data:`AlertSink` that words each alert and passes it to ``send`` (a dispatcher's ``dispatch``)."""

    def sink(alert: SecurityAlert) -> None:
        for notification in notices_for(alert):
            send(notification)

    return sink


def notices_for(alert: SecurityAlert) -> list[Notification]:
    operator = messages.security_alert(alert.user_id, alert.rule, alert.action, alert.at, detail=alert.detail)
    if alert.event is AlertEvent.DISABLED:
        user = messages.key_disabled(alert.user_id, alert.account_no, alert.rule, alert.positions, alert.at)
        return [operator, user]
    if alert.event is AlertEvent.ENABLED:
        return [operator, messages.key_enabled(alert.user_id, alert.account_no, alert.at)]
    return [operator]
