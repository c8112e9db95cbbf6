"""Dispatcher: per-user routing, operator copies, retry-then-record, circuit breaker, and no secret leaks."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

import pytest
from pydantic import SecretStr

from autotrade.domain.models import Tier
from autotrade.notify import (
    Audience,
    ConsoleNotifier,
    InMemoryFailureRecorder,
    KakaoAlimtalkNotifier,
    Notification,
    NotificationDispatcher,
    NotificationError,
    NotificationKind,
    Notifier,
    NotifySettings,
    RetryPolicy,
    Route,
    SlackWebApiNotifier,
    SlackWebhookNotifier,
    StaticRoutes,
    build_dispatcher,
    build_notifiers,
)
from autotrade.notify.dispatcher import DeliveryFailure, RoutesFor
from autotrade.notify.messages import (
    OrderLine,
    TierFill,
    buy_orders_placed,
    error_occurred,
    security_alert,
    tier_triggered,
)
from tests.notify.conftest import free_port


@dataclass
class RecordingNotifier:
    """Delivers by remembering; fails the first ``fail_times`` calls with the given error."""

    channel: str
    fail_times: int = 0
    error: Exception = field(default_factory=lambda: NotificationError("x", "HTTP 503", retryable=True))
    sent: list[tuple[Notification, str | None]] = field(default_factory=list)
    calls: int = 0

    def send(self, notification: Notification, to: str | None = None) -> None:
        self.calls += 1
        if self.calls <= self.fail_times:
            raise self.error
        self.sent.append((notification, to))


@dataclass
class Harness:
    notifiers: dict[str, RecordingNotifier]
    recorder: InMemoryFailureRecorder
    sleeps: list[float]
    dispatcher: NotificationDispatcher

    def sent(self, channel: str) -> list[tuple[str, str | None]]:
        return [(n.kind.value, to) for n, to in self.notifiers[channel].sent]


PREFERENCES = StaticRoutes(
    {
        "u1": [Route("slack", "U0USER1"), Route("kakao", "010-1111-2222")],
        "u2": [Route("sns", "+821033334444")],
        "u3": [
            Route("slack", "U0USER3"),
            Route("kakao", "010-5555-6666", frozenset({NotificationKind.TIER_TRIGGERED})),
        ],
    }
)


def harness(
    *notifiers: RecordingNotifier,
    routes: RoutesFor = PREFERENCES,
    operator: tuple[Route, ...] = (Route("slack", "#ops"),),
    attempts: int = 3,
    breaker_threshold: int = 5,
) -> Harness:
    by_name = {n.channel: n for n in notifiers} or {
        c: RecordingNotifier(c) for c in ("console", "slack", "kakao", "sns")
    }
    recorder = InMemoryFailureRecorder()
    sleeps: list[float] = []
    dispatcher = NotificationDispatcher(
        by_name.values(),
        user_routes=routes,
        operator_routes=operator,
        recorder=recorder,
        retry=RetryPolicy(attempts=attempts, backoff_seconds=0.5, multiplier=2.0),
        breaker_threshold=breaker_threshold,
        sleep=sleeps.append,
    )
    return Harness(by_name, recorder, sleeps, dispatcher)


def all_channels(**overrides: RecordingNotifier) -> list[RecordingNotifier]:
    return [overrides.get(c, RecordingNotifier(c)) for c in ("console", "slack", "kakao", "sns")]


def _buy(user: str, at: datetime) -> Notification:
    return buy_orders_placed(user, [OrderLine("005930", "삼성전자", 14, 71_000)], at)


def test_recording_notifier_satisfies_the_protocol() -> None:
    assert isinstance(RecordingNotifier("slack"), Notifier)
    assert isinstance(ConsoleNotifier(), Notifier)


def test_each_user_gets_their_own_channels(at: datetime) -> None:
    h = harness(*all_channels())

    r1 = h.dispatcher.dispatch(_buy("u1", at))
    r2 = h.dispatcher.dispatch(_buy("u2", at))

    assert r1.ok and r2.ok
    assert h.sent("slack") == [("BUY_ORDERS_PLACED", "U0USER1")]
    assert h.sent("kakao") == [("BUY_ORDERS_PLACED", "010-1111-2222")]
    assert h.sent("sns") == [("BUY_ORDERS_PLACED", "+821033334444")]
    assert h.sent("console") == []
    assert [(d.channel, d.audience, d.attempts) for d in r1.delivered] == [
        ("slack", "user:u1", 1),
        ("kakao", "user:u1", 1),
    ]


def test_route_kind_filter(at: datetime) -> None:
    """u3 wants KakaoTalk only for tier triggers; Slack for everything."""
    h = harness(*all_channels())
    h.dispatcher.dispatch(_buy("u3", at))
    h.dispatcher.dispatch(
        tier_triggered("u3", TierFill("005930", "삼성전자", Tier.STOP_LOSS, 14, 67_450, -49_700, 0), at)
    )
    assert h.sent("slack") == [("BUY_ORDERS_PLACED", "U0USER3"), ("TIER_TRIGGERED", "U0USER3")]
    assert h.sent("kakao") == [("TIER_TRIGGERED", "010-5555-6666")]


def test_user_without_preferences_falls_back_to_console(at: datetime) -> None:
    h = harness(*all_channels())
    report = h.dispatcher.dispatch(_buy("nobody", at))
    assert report.ok
    assert h.sent("console") == [("BUY_ORDERS_PLACED", None)]


def test_operator_notices_go_to_operator_routes_only(at: datetime) -> None:
    h = harness(*all_channels())
    h.dispatcher.dispatch(error_occurred("daily_report", "render", "boom", at))
    assert h.sent("slack") == [("ERROR", "#ops")]
    assert h.sent("kakao") == h.sent("sns") == []


def test_security_alert_for_a_user_is_copied_to_the_operator(at: datetime) -> None:
    h = harness(*all_channels())
    h.dispatcher.dispatch(security_alert("u1", "burst", "키 비활성화", at, audience=Audience.user("u1")))
    assert h.sent("slack") == [("SECURITY_ALERT", "U0USER1"), ("SECURITY_ALERT", "#ops")]
    assert h.sent("kakao") == [("SECURITY_ALERT", "010-1111-2222")]


def test_transient_failure_is_retried_then_delivered(at: datetime) -> None:
    h = harness(*all_channels(slack=RecordingNotifier("slack", fail_times=2)))
    report = h.dispatcher.dispatch(_buy("u1", at))
    assert report.ok
    assert report.delivered[0].attempts == 3
    assert h.sleeps == [0.5, 1.0]  # backoff 0.5 x 2^(n-1)
    assert h.recorder.failures == []


def test_exhausted_retries_are_recorded_and_the_operator_is_told(at: datetime) -> None:
    kakao = RecordingNotifier("kakao", fail_times=99)
    h = harness(*all_channels(kakao=kakao))
    n = _buy("u1", at)

    report = h.dispatcher.dispatch(n)  # must not raise

    assert kakao.calls == 3
    assert h.sleeps == [0.5, 1.0]
    (failure,) = h.recorder.failures
    assert failure == DeliveryFailure(
        notification_id=n.id,
        channel="kakao",
        audience="user:u1",
        kind=NotificationKind.BUY_ORDERS_PLACED,
        error="x: HTTP 503",
        attempts=3,
        at=failure.at,
    )
    assert report.failed == [failure]
    assert [d.channel for d in report.delivered] == ["slack"]  # the other channel still got it
    # The operator hears about the lost notice, without its body.
    notice = h.notifiers["slack"].sent[-1]
    assert notice[1] == "#ops"
    assert notice[0].title == "알림 전송 실패: kakao"
    assert "삼성전자" not in notice[0].model_dump_json()


def test_permanent_failure_is_not_retried(at: datetime) -> None:
    slack = RecordingNotifier(
        "slack", fail_times=99, error=NotificationError("slack", "invalid_auth", retryable=False)
    )
    h = harness(*all_channels(slack=slack))
    h.dispatcher.dispatch(_buy("u2", at))  # u2 is SNS-only: untouched
    report = h.dispatcher.dispatch(_buy("u1", at))
    assert slack.calls == 2  # one for u1, one for the operator notice, no retries
    assert h.sleeps == []
    assert [f.attempts for f in report.failed] == [1]


def test_unknown_channel_is_recorded_not_raised(at: datetime) -> None:
    h = harness(*all_channels(), routes=StaticRoutes({"u9": [Route("pigeon", "roof")]}))
    report = h.dispatcher.dispatch(_buy("u9", at))
    assert [(f.channel, f.error, f.attempts) for f in report.failed] == [
        ("pigeon", "pigeon: no such channel configured", 0)
    ]


def test_failing_preference_lookup_uses_the_fallback(at: datetime) -> None:
    def broken(user_id: str) -> list[Route]:
        raise ConnectionError("database is down")

    h = harness(*all_channels(), routes=broken)
    report = h.dispatcher.dispatch(_buy("u1", at))
    assert report.ok
    assert h.sent("console") == [("BUY_ORDERS_PLACED", None)]


def test_failing_recorder_does_not_raise(at: datetime) -> None:
    class BrokenRecorder:
        def record(self, failure: DeliveryFailure) -> None:
            raise RuntimeError("db down")

    dispatcher = NotificationDispatcher(
        [RecordingNotifier("slack", fail_times=99)],
        user_routes=PREFERENCES,
        operator_routes=(),
        recorder=BrokenRecorder(),
        retry=RetryPolicy(attempts=1),
        sleep=lambda _: None,
    )
    report = dispatcher.dispatch(_buy("u1", at))
    assert len(report.failed) == 2  # slack failed; kakao is not configured in this dispatcher


def test_circuit_opens_after_consecutive_failures_and_operator_is_told_once(at: datetime) -> None:
    """Threshold 2: u1 and u3 burn the retries, then Slack fails fast for everyone during the cooldown."""
    slack = RecordingNotifier("slack", fail_times=10_000)
    h = harness(*all_channels(slack=slack), operator=(Route("console"),), breaker_threshold=2)

    h.dispatcher.dispatch(_buy("u1", at))
    h.dispatcher.dispatch(_buy("u3", at))
    calls_when_opened = slack.calls
    report = h.dispatcher.dispatch(_buy("u1", at))

    assert calls_when_opened == 6  # 3 attempts x 2 users
    assert slack.calls == calls_when_opened  # no further attempts
    assert [(f.channel, f.attempts) for f in report.failed] == [("slack", 0)]
    titles = [n.title for n, _ in h.notifiers["console"].sent]
    assert titles == ["알림 전송 실패: slack", "알림 전송 실패: slack"]
    assert "채널 차단" in h.notifiers["console"].sent[1][0].lines[1]


def test_success_closes_the_streak(at: datetime) -> None:
    slack = RecordingNotifier("slack", fail_times=3)  # u1's three attempts fail, then Slack recovers
    h = harness(*all_channels(slack=slack), operator=(Route("console"),), breaker_threshold=2)
    h.dispatcher.dispatch(_buy("u1", at))
    h.dispatcher.dispatch(_buy("u3", at))
    report = h.dispatcher.dispatch(_buy("u1", at))
    assert report.ok


def test_no_secret_reaches_logs_records_or_errors(at: datetime, caplog: pytest.LogCaptureFixture) -> None:
    """Real Slack, webhook and KakaoTalk notifiers pointed at a dead port, with secrets configured, and
    a stub that raises an exception carrying a secret in its text: everything is logged at DEBUG."""
    token, hook, app_key, secret_key, sender_key = (
        "xoxb-9999-8888-TopSecretBotToken",
        "WebhookPathSecret42",
        "KakaoAppKeySecret",
        "KakaoSecretKeyValue",
        "K" * 40,
    )
    dead = f"http://127.0.0.1:{free_port()}"
    leaky = RecordingNotifier(
        "sns", fail_times=99, error=RuntimeError(f"failed with {token} and {secret_key}")
    )
    notifiers: list[Notifier] = [
        SlackWebApiNotifier(SecretStr(token), default_channel="#ops", base_url=f"{dead}/api/"),
        SlackWebhookNotifier(SecretStr(f"{dead}/services/{hook}")),
        KakaoAlimtalkNotifier(
            app_key=SecretStr(app_key),
            secret_key=SecretStr(secret_key),
            sender_key=SecretStr(sender_key),
            templates={NotificationKind.BUY_ORDERS_PLACED: "AT_BUY"},
            base_url=dead,
        ),
        leaky,
    ]
    routes = StaticRoutes(
        {
            "u1": [
                Route("slack", "U1"),
                Route("slack_webhook"),
                Route("kakao", "01012345678"),
                Route("sns", "+8210"),
            ]
        }
    )
    recorder = InMemoryFailureRecorder()
    dispatcher = NotificationDispatcher(
        notifiers,
        user_routes=routes,
        operator_routes=[Route("slack")],
        recorder=recorder,
        retry=RetryPolicy(attempts=2, backoff_seconds=0),
        sleep=lambda _: None,
    )
    caplog.set_level(logging.DEBUG)

    report = dispatcher.dispatch(_buy("u1", at))

    assert {f.channel for f in report.failed} >= {"slack", "slack_webhook", "kakao", "sns"}
    assert "sns: unexpected RuntimeError" in [f.error for f in report.failed]
    evidence = caplog.text + repr(recorder.failures) + repr(report)
    assert "not delivered" in caplog.text
    for secret in (token, hook, app_key, secret_key, sender_key):
        assert secret not in evidence


def test_settings_keep_secrets_out_of_repr_and_build_configured_channels() -> None:
    settings = NotifySettings(
        slack_token=SecretStr("xoxb-1-2-SettingsToken"),
        kakao_app_key=SecretStr("a"),
        kakao_secret_key=SecretStr("b"),
        kakao_sender_key=SecretStr("c" * 40),
    )
    assert "SettingsToken" not in repr(settings)
    assert "SettingsToken" not in settings.model_dump_json()
    assert [n.channel for n in build_notifiers(settings)] == ["console", "slack", "kakao"]


def test_build_dispatcher_from_default_settings_prints_to_console(
    at: datetime, capsys: pytest.CaptureFixture[str]
) -> None:
    dispatcher = build_dispatcher(NotifySettings(), StaticRoutes({}))
    report = dispatcher.dispatch(error_occurred("morning_fill_and_arm", "confirm_fills", "timeout", at))
    assert report.ok
    out = capsys.readouterr().out
    assert "[오류: morning_fill_and_arm / confirm_fills]" in out
    assert "2026-11-25 09:15 KST" in out
