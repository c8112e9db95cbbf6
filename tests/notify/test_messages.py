"""Builders and formatting, checked by hand: won with separators, KST wall time, Korean wording."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from autotrade.domain.models import Tier
from autotrade.notify import (
    OPERATOR,
    Audience,
    Notification,
    NotificationKind,
    Severity,
    Table,
    kst,
    render_text,
    signed_won,
    won,
)
from autotrade.notify.format import display_width, render_table, scrub_secrets
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


@pytest.mark.parametrize(
    ("amount", "text"),
    [(0, "0원"), (999, "999원"), (1_000, "1,000원"), (1_234_500, "1,234,500원"), (-3_500, "-3,500원")],
)
def test_won_has_thousands_separators(amount: int, text: str) -> None:
    assert won(amount) == text


def test_signed_won_always_shows_the_sign() -> None:
    assert signed_won(12_000) == "+12,000원"
    assert signed_won(-3_500) == "-3,500원"
    assert signed_won(0) == "+0원"


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2026, 11, 25, 0, 15, tzinfo=UTC), "2026-11-25 09:15 KST"),  # UTC+9
        (datetime(2026, 11, 24, 15, 0, tzinfo=UTC), "2026-11-25 00:00 KST"),  # crosses midnight
        (datetime(2026, 11, 25, 9, 15, tzinfo=timezone(timedelta(hours=9))), "2026-11-25 09:15 KST"),
        (datetime(2026, 11, 25, 1, 15, tzinfo=timezone(timedelta(hours=1))), "2026-11-25 09:15 KST"),
    ],
)
def test_kst_converts_to_seoul_wall_time(moment: datetime, text: str) -> None:
    assert kst(moment) == text


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        kst(datetime(2026, 11, 25, 9, 15))
    with pytest.raises(ValidationError):
        Notification(
            kind=NotificationKind.ERROR, audience=OPERATOR, title="x", occurred_at=datetime(2026, 1, 1)
        )


def test_buy_orders_placed(at: datetime) -> None:
    """14 x 71,000 = 994,000; 20 x 45,650 = 913,000; total 1,907,000."""
    n = buy_orders_placed(
        "u1", [OrderLine("005930", "삼성전자", 14, 71_000), OrderLine("035720", "카카오", 20, 45_650)], at
    )
    assert n.kind is NotificationKind.BUY_ORDERS_PLACED
    assert n.audience == Audience.user("u1")
    assert n.title == "매수 주문 2건 접수"
    assert n.lines == ("총 주문금액 1,907,000원",)
    assert n.table is not None
    assert n.table.rows == (
        ("삼성전자(005930)", "14주", "71,000원", "994,000원"),
        ("카카오(035720)", "20주", "45,650원", "913,000원"),
    )
    assert n.template_params == {"count": "2", "total": "1,907,000원", "time": "2026-11-25 09:15 KST"}


def test_fills_confirmed_names_partial_and_missing_fills(at: datetime) -> None:
    """Filled: 14 x 71,050 = 994,700 and 7 x 45,700 = 319,900; total 1,314,600; one stock unfilled."""
    n = fills_confirmed(
        "u1",
        [
            FillLine("005930", "삼성전자", 14, 14, 71_050),
            FillLine("035720", "카카오", 20, 7, 45_700),
            FillLine("000660", "SK하이닉스", 5, 0, 0),
        ],
        at,
    )
    assert n.lines == (
        "2/3종목 체결, 체결금액 1,314,600원",
        "미체결·부분체결: 카카오(035720), SK하이닉스(000660)",
    )
    assert n.severity is Severity.WARNING
    assert n.table is not None
    assert [row[-1] for row in n.table.rows] == ["체결", "부분체결", "미체결"]
    assert n.table.rows[2][3] == "-"


def test_exits_armed_shows_every_level_and_the_skipped_preserve(at: datetime) -> None:
    """Entry 71,000: stop 71,000 x 0.95 = 67,450, preserve x 1.04 = 73,840, take x 1.08 = 76,680.

    (The prices are whatever the exit engine armed, tick-snapped; the builder only formats them.)
    """
    n = exits_armed(
        "u1",
        [
            ArmedExit("005930", "삼성전자", 14, 71_000, 67_500, 73_900, 76_700),
            ArmedExit("000660", "SK하이닉스", 1, 180_000, 171_000, None, 194_500),
        ],
        at,
    )
    assert n.title == "자동 매도 설정 완료 (2종목)"
    assert n.table is not None
    assert n.table.headers == ("종목", "수량", "매수가", "손절가", "보존가", "익절가")
    assert n.table.rows[0] == ("삼성전자(005930)", "14주", "71,000원", "67,500원", "73,900원", "76,700원")
    assert n.table.rows[1][4] == "생략(1주)"
    assert render_text(n).endswith("2026-11-25 09:15 KST")


@pytest.mark.parametrize(
    ("tier", "label", "severity"),
    [
        (Tier.STOP_LOSS, "손절", Severity.WARNING),
        (Tier.PRESERVE, "보존", Severity.INFO),
        (Tier.TAKE_PROFIT, "익절", Severity.INFO),
    ],
)
def test_tier_triggered(at: datetime, tier: Tier, label: str, severity: Severity) -> None:
    """Preserve on 14 shares bought at 71,000: sell 7 at 73,900, gross P&L 7 x 2,900 = +20,300."""
    n = tier_triggered("u1", TierFill("005930", "삼성전자", tier, 7, 73_900, 20_300, 7), at)
    assert n.title == f"{label} 매도: 삼성전자(005930)"
    assert n.lines == (f"삼성전자(005930) 7주 73,900원에 {label} 매도", "실현손익 +20,300원, 잔여 7주")
    assert n.severity is severity
    assert n.template_params["pnl"] == "+20,300원"
    assert n.template_params["tier"] == label


def test_tier_triggered_all_sold_loss(at: datetime) -> None:
    """Stop on 14 at 67,450 after 71,000: 14 x -3,550 = -49,700."""
    n = tier_triggered("u1", TierFill("005930", "삼성전자", Tier.STOP_LOSS, 14, 67_450, -49_700, 0), at)
    assert n.lines[1] == "실현손익 -49,700원, 전량 매도"


def test_error_occurred_scrubs_credentials_and_goes_to_the_operator(at: datetime) -> None:
    err = RuntimeError(
        "token refused: Authorization: Bearer eyJhbGciOi.abc.def app_secret=S3cr3tValue "
        "xoxb-1111-2222-abcdefghijkl https://hooks.slack.com/services/T0/B0/XYZ AKIAABCDEFGHIJKLMNOP"
    )
    n = error_occurred("evening_signal_and_buy", "place_buy_orders", err, at, user_id="u7")
    assert n.audience.is_operator
    assert n.severity is Severity.ERROR
    text = n.lines[0]
    assert text.startswith("RuntimeError: token refused")
    for secret in ("eyJhbGciOi", "S3cr3tValue", "xoxb-1111", "hooks.slack.com", "AKIAABCDEFGHIJKLMNOP"):
        assert secret not in text
    assert [(f.label, f.value) for f in n.facts] == [
        ("플로우", "evening_signal_and_buy"),
        ("단계", "place_buy_orders"),
        ("사용자", "u7"),
    ]


def test_error_text_is_cut(at: datetime) -> None:
    n = error_occurred("f", "s", "x " * 500, at)
    assert len(n.lines[0]) == 300
    assert n.lines[0].endswith("…")


def test_security_alert(at: datetime) -> None:
    n = security_alert("u3", "off_hours_use", "키 비활성화, 토큰 폐기", at, detail="03:12 KST 주문 시도")
    assert n.kind is NotificationKind.SECURITY_ALERT
    assert n.audience == OPERATOR
    assert n.severity is Severity.CRITICAL
    assert n.lines == (
        "사용자 u3: 규칙 'off_hours_use' 감지",
        "조치: 키 비활성화, 토큰 폐기",
        "03:12 KST 주문 시도",
    )


def test_report_ready(at: datetime) -> None:
    summary = ReportSummary(date(2026, 11, 25), 12, 1_234_500, 58.333, 25.0, equity=10_512_300)
    n = report_ready(Audience.user("u1"), summary, "https://reports.example/u1/2026-11-25", at)
    assert n.title == "2026-11-25 일일 리포트"
    assert n.lines == ("거래 12건, 실현손익 +1,234,500원",)
    assert {f.label: f.value for f in n.facts} == {
        "거래 수": "12",
        "실현손익": "+1,234,500원",
        "승률": "58.3%",
        "손절 비율": "25.0%",
        "평가자산": "10,512,300원",
    }
    assert n.link == "https://reports.example/u1/2026-11-25"


def test_report_without_closed_trades_shows_dashes(at: datetime) -> None:
    n = report_ready(OPERATOR, ReportSummary(date(2026, 11, 25), 0, 0, None, None), "var/report.md", at)
    assert {f.label: f.value for f in n.facts}["승률"] == "-"


def test_table_aligns_hangul_by_display_width() -> None:
    assert display_width("삼성전자") == 8
    table = Table(headers=("종목", "금액"), rows=(("삼성전자", "994,000원"), ("LG", "1,000원")))
    lines = render_table(table).split("\n")
    # Every line is as wide on screen as the widest; amounts are right-aligned.
    assert {display_width(line) for line in lines} == {display_width(lines[1])}
    assert lines[2].endswith("  1,000원")


def test_table_must_be_rectangular() -> None:
    with pytest.raises(ValidationError):
        Table(headers=("a", "b"), rows=(("1",),))


def test_audience_user_named_operator_is_not_the_operator() -> None:
    assert not Audience.user("operator").is_operator
    assert str(Audience.user("operator")) == "user:operator"
    assert str(OPERATOR) == "operator"


def test_scrub_secrets_masks_known_values() -> None:
    assert scrub_secrets("failed with k3y!", ["k3y!"]) == "failed with ***"
