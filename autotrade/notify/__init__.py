"""Notifications: one typed ``Notification``, Korean message builders, channels behind one ``Notifier``
contract (console, Slack Web API and webhooks, AWS SNS, KakaoTalk alimtalk) and a dispatcher that routes
per user and never lets a delivery failure reach the trading code."""

from autotrade.notify.background import BackgroundDispatcher
from autotrade.notify.base import Channel, NotificationError, Notifier
from autotrade.notify.console import ConsoleNotifier
from autotrade.notify.dispatcher import (
    Delivery,
    DeliveryFailure,
    DispatchReport,
    FailureRecorder,
    InMemoryFailureRecorder,
    NotificationDispatcher,
    RetryPolicy,
    Route,
    RoutesFor,
    StaticRoutes,
)
from autotrade.notify.format import kst, render_text, signed_won, won
from autotrade.notify.kakao import KakaoAlimtalkNotifier
from autotrade.notify.messages import (
    ArmedExit,
    FillLine,
    OrderLine,
    ReportSummary,
    TierFill,
    buy_orders_placed,
    error_occurred,
    exits_armed,
    fills_confirmed,
    report_ready,
    security_alert,
    tier_triggered,
)
from autotrade.notify.model import OPERATOR, Audience, Fact, Notification, NotificationKind, Severity, Table
from autotrade.notify.settings import (
    NotifySettings,
    build_background_dispatcher,
    build_dispatcher,
    build_notifiers,
)
from autotrade.notify.slack import SlackWebApiNotifier, SlackWebhookNotifier, slack_blocks
from autotrade.notify.sns import SnsNotifier

__all__ = [
    "OPERATOR",
    "ArmedExit",
    "Audience",
    "BackgroundDispatcher",
    "Channel",
    "ConsoleNotifier",
    "Delivery",
    "DeliveryFailure",
    "DispatchReport",
    "Fact",
    "FailureRecorder",
    "FillLine",
    "InMemoryFailureRecorder",
    "KakaoAlimtalkNotifier",
    "Notification",
    "NotificationDispatcher",
    "NotificationError",
    "NotificationKind",
    "Notifier",
    "NotifySettings",
    "OrderLine",
    "ReportSummary",
    "RetryPolicy",
    "Route",
    "RoutesFor",
    "Severity",
    "SlackWebApiNotifier",
    "SlackWebhookNotifier",
    "SnsNotifier",
    "StaticRoutes",
    "Table",
    "TierFill",
    "build_background_dispatcher",
    "build_dispatcher",
    "build_notifiers",
    "buy_orders_placed",
    "error_occurred",
    "exits_armed",
    "fills_confirmed",
    "kst",
    "render_text",
    "report_ready",
    "security_alert",
    "signed_won",
    "slack_blocks",
    "tier_triggered",
    "won",
]
