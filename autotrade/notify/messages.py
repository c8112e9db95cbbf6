"""Message builders: one pure function per event, plain values in, a worded ``Notification`` out.

Builders know nothing of the database or of channels; the services that own the events pass the
numbers in the small dataclasses below. Wording is Korean, money integer KRW shown as won.
Each builder also fills ``template_params`` with the variables its KakaoTalk template uses; the keys are
part of the template contract (see ``kakao.py``) and are listed in each docstring.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from autotrade.domain.models import Tier
from autotrade.notify.format import kst, scrub_secrets, shares, signed_won, stock_label, won
from autotrade.notify.model import (
    OPERATOR,
    Audience,
    Fact,
    Notification,
    NotificationKind,
    Severity,
    Table,
)

TIER_LABELS: dict[Tier, str] = {Tier.STOP_LOSS: "손절", Tier.PRESERVE: "보존", Tier.TAKE_PROFIT: "익절"}

# Longer error texts are cut: an alert is a pointer to the logs, not a traceback dump.
ERROR_TEXT_LIMIT = 300


@dataclass(frozen=True, slots=True)
class OrderLine:
    code: str
    name: str
    qty: int
    price: int

    @property
    def amount(self) -> int:
        return self.qty * self.price


@dataclass(frozen=True, slots=True)
class FillLine:
    code: str
    name: str
    ordered_qty: int
    filled_qty: int
    avg_price: int

    @property
    def amount(self) -> int:
        return self.filled_qty * self.avg_price


@dataclass(frozen=True, slots=True)
class ArmedExit:
    """Exit levels of one position; ``preserve_price`` is None when the preserve tier is skipped (Q = 1)."""

    code: str
    name: str
    qty: int
    entry_price: int
    stop_price: int
    preserve_price: int | None
    take_profit_price: int


@dataclass(frozen=True, slots=True)
class TierFill:
    code: str
    name: str
    tier: Tier
    qty: int
    price: int
    realized_pnl: int
    remaining_qty: int


@dataclass(frozen=True, slots=True)
class ReportSummary:
    trading_day: date
    trades: int
    realized_pnl: int
    win_rate: float | None  # percent; None when nothing closed
    stop_trigger_rate: float | None  # percent of closed positions that ended on the stop
    equity: int | None = None


def buy_orders_placed(user_id: str, orders: Sequence[OrderLine], at: datetime) -> Notification:
    """Evening buy orders sent to the broker. Template keys: ``count``, ``total``, ``time``."""
    total = sum(o.amount for o in orders)
    table = Table(
        headers=("종목", "수량", "주문가", "금액"),
        rows=tuple((stock_label(o.code, o.name), shares(o.qty), won(o.price), won(o.amount)) for o in orders),
    )
    return Notification(
        kind=NotificationKind.BUY_ORDERS_PLACED,
        audience=Audience.user(user_id),
        title=f"매수 주문 {len(orders)}건 접수",
        lines=(f"총 주문금액 {won(total)}",),
        facts=(Fact(label="종목 수", value=f"{len(orders)}"), Fact(label="총 주문금액", value=won(total))),
        table=table,
        occurred_at=at,
        template_params={"count": str(len(orders)), "total": won(total), "time": kst(at)},
    )


def _fill_state(fill: FillLine) -> str:
    if fill.filled_qty == 0:
        return "미체결"
    if fill.filled_qty < fill.ordered_qty:
        return "부분체결"
    return "체결"


def fills_confirmed(user_id: str, fills: Sequence[FillLine], at: datetime) -> Notification:
    """Morning fill confirmation. Template keys: ``filled``, ``ordered``, ``total``, ``time``."""
    filled = [f for f in fills if f.filled_qty > 0]
    total = sum(f.amount for f in fills)
    short = [f for f in fills if f.filled_qty < f.ordered_qty]
    lines = [f"{len(filled)}/{len(fills)}종목 체결, 체결금액 {won(total)}"]
    if short:
        # Partial and missing fills are the ones a user acts on; name them in the prose, not just the table.
        lines.append("미체결·부분체결: " + ", ".join(stock_label(f.code, f.name) for f in short))
    table = Table(
        headers=("종목", "주문", "체결", "평균가", "금액", "상태"),
        rows=tuple(
            (
                stock_label(f.code, f.name),
                shares(f.ordered_qty),
                shares(f.filled_qty),
                won(f.avg_price) if f.filled_qty else "-",
                won(f.amount),
                _fill_state(f),
            )
            for f in fills
        ),
    )
    return Notification(
        kind=NotificationKind.FILLS_CONFIRMED,
        audience=Audience.user(user_id),
        title="체결 확인",
        lines=tuple(lines),
        facts=(
            Fact(label="체결 종목", value=f"{len(filled)}/{len(fills)}"),
            Fact(label="체결금액", value=won(total)),
        ),
        table=table,
        severity=Severity.WARNING if short else Severity.INFO,
        occurred_at=at,
        template_params={
            "filled": str(len(filled)),
            "ordered": str(len(fills)),
            "total": won(total),
            "time": kst(at),
        },
    )


def exits_armed(user_id: str, exits: Sequence[ArmedExit], at: datetime) -> Notification:
    """The 09:15 notice: every position's entry and its stop / preserve / take-profit prices.

    Template keys: ``count``, ``time``.
    """
    rows = tuple(
        (
            stock_label(e.code, e.name),
            shares(e.qty),
            won(e.entry_price),
            won(e.stop_price),
            won(e.preserve_price) if e.preserve_price is not None else "생략(1주)",
            won(e.take_profit_price),
        )
        for e in exits
    )
    return Notification(
        kind=NotificationKind.EXITS_ARMED,
        audience=Audience.user(user_id),
        title=f"자동 매도 설정 완료 ({len(exits)}종목)",
        lines=(f"{len(exits)}종목에 손절·보존·익절 주문 감시를 시작했습니다.",),
        table=Table(headers=("종목", "수량", "매수가", "손절가", "보존가", "익절가"), rows=rows),
        occurred_at=at,
        template_params={"count": str(len(exits)), "time": kst(at)},
    )


def tier_triggered(user_id: str, fill: TierFill, at: datetime) -> Notification:
    """One tier sold.

    Template keys: ``stock``, ``tier``, ``qty``, ``price``, ``pnl``, ``remaining``, ``time``.
    """
    label = TIER_LABELS[fill.tier]
    stock = stock_label(fill.code, fill.name)
    remaining = "전량 매도" if fill.remaining_qty == 0 else f"잔여 {shares(fill.remaining_qty)}"
    return Notification(
        kind=NotificationKind.TIER_TRIGGERED,
        audience=Audience.user(user_id),
        title=f"{label} 매도: {stock}",
        lines=(
            f"{stock} {shares(fill.qty)} {won(fill.price)}에 {label} 매도",
            f"실현손익 {signed_won(fill.realized_pnl)}, {remaining}",
        ),
        facts=(
            Fact(label="구분", value=label),
            Fact(label="수량", value=shares(fill.qty)),
            Fact(label="가격", value=won(fill.price)),
            Fact(label="실현손익", value=signed_won(fill.realized_pnl)),
        ),
        severity=Severity.WARNING if fill.tier is Tier.STOP_LOSS else Severity.INFO,
        occurred_at=at,
        template_params={
            "stock": stock,
            "tier": label,
            "qty": shares(fill.qty),
            "price": won(fill.price),
            "pnl": signed_won(fill.realized_pnl),
            "remaining": remaining,
            "time": kst(at),
        },
    )


def error_occurred(
    flow: str,
    step: str,
    error: str | BaseException,
    at: datetime,
    *,
    user_id: str | None = None,
) -> Notification:
    """A flow or task failed. The error text is scrubbed of anything credential-shaped and cut short,
    because callers pass raw exception text and the operator channel is not a vault.

    Template keys: ``flow``, ``step``, ``error``, ``time``.
    """
    text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else error
    text = scrub_secrets(text)
    if len(text) > ERROR_TEXT_LIMIT:
        text = text[: ERROR_TEXT_LIMIT - 1] + "…"
    facts = [Fact(label="플로우", value=flow), Fact(label="단계", value=step)]
    if user_id is not None:
        facts.append(Fact(label="사용자", value=user_id))
    return Notification(
        kind=NotificationKind.ERROR,
        audience=OPERATOR,
        title=f"오류: {flow} / {step}",
        lines=(text,),
        facts=tuple(facts),
        severity=Severity.ERROR,
        occurred_at=at,
        template_params={"flow": flow, "step": step, "error": text, "time": kst(at)},
    )


def security_alert(
    user_id: str,
    rule: str,
    action_taken: str,
    at: datetime,
    *,
    detail: str = "",
    audience: Audience = OPERATOR,
) -> Notification:
    """An anomaly rule fired on a user's key. Goes to the operator by default; pass the user's audience to
    tell the user too (the dispatcher copies security alerts to the operator either way).

    Template keys: ``user``, ``rule``, ``action``, ``time``.
    """
    lines = [f"사용자 {user_id}: 규칙 '{rule}' 감지", f"조치: {action_taken}"]
    if detail:
        lines.append(scrub_secrets(detail)[:ERROR_TEXT_LIMIT])
    return Notification(
        kind=NotificationKind.SECURITY_ALERT,
        audience=audience,
        title=f"보안 경보: {rule}",
        lines=tuple(lines),
        facts=(
            Fact(label="사용자", value=user_id),
            Fact(label="규칙", value=rule),
            Fact(label="조치", value=action_taken),
        ),
        severity=Severity.CRITICAL,
        occurred_at=at,
        template_params={"user": user_id, "rule": rule, "action": action_taken, "time": kst(at)},
    )


def key_disabled(
    user_id: str, account_no: str, rule: str, positions: Sequence[str], at: datetime
) -> Notification:
    """The kill switch disabled a user's key: what still works (the open positions' exits), what stopped
    (buys, auto-trading) and how to get the key back. A security alert: the operator gets a copy.

    Template keys: ``account``, ``rule``, ``positions``, ``time``.
    """
    held = ", ".join(positions) if positions else "없음"
    return Notification(
        kind=NotificationKind.SECURITY_ALERT,
        audience=Audience.user(user_id),
        title="API 키가 보안 규칙으로 비활성화되었습니다",
        lines=(
            f"계좌 {account_no}의 API 키가 보안 규칙 '{rule}'에 걸려 비활성화되었습니다.",
            "신규 매수와 자동매매는 중지되었습니다.",
            f"자동매매로 보유 중인 종목({held})의 손절·보존·익절 매도는 계속 감시·실행됩니다.",
            "복구 방법: 본인이 한 요청이 아니면 ① 키움증권 비밀번호를 변경하고 ② 키움 앱에서 앱키를 "
            "재발급한 뒤 ③ 새 키를 다시 등록하세요. "
            "본인 사용이 맞다면 운영자에게 재활성화를 요청하세요. 재활성화 후 자동매매를 다시 켜야 합니다.",
        ),
        facts=(
            Fact(label="계좌", value=account_no),
            Fact(label="규칙", value=rule),
            Fact(label="감시 중인 보유 종목", value=held),
        ),
        severity=Severity.CRITICAL,
        occurred_at=at,
        template_params={"account": account_no, "rule": rule, "positions": held, "time": kst(at)},
    )


def key_enabled(user_id: str, account_no: str, at: datetime) -> Notification:
    """An operator re-enabled the key. Template keys: ``account``, ``time``."""
    return Notification(
        kind=NotificationKind.SECURITY_ALERT,
        audience=Audience.user(user_id),
        title="API 키가 다시 활성화되었습니다",
        lines=(
            f"계좌 {account_no}의 API 키를 운영자가 확인 후 다시 활성화했습니다.",
            "자동매매는 꺼진 상태입니다. 계속하려면 자동매매를 다시 켜세요.",
        ),
        facts=(Fact(label="계좌", value=account_no),),
        severity=Severity.INFO,
        occurred_at=at,
        template_params={"account": account_no, "time": kst(at)},
    )


def positions_unmanaged(
    user_id: str, account_no: str, positions: Sequence[str], at: datetime
) -> Notification:
    """A deleted key leaves its open positions without exits: the user must manage them.

    Template keys: ``account``, ``positions``, ``time``.
    """
    held = ", ".join(positions) if positions else "없음"
    lines = [f"계좌 {account_no}의 API 키를 삭제했습니다 (복구할 수 없습니다)."]
    if positions:
        lines.append(
            f"보유 종목 {held}은(는) 더 이상 자동으로 관리되지 않습니다: 손절·익절 매도가 실행되지 "
            "않으니 직접 관리하세요."
        )
    return Notification(
        kind=NotificationKind.SECURITY_ALERT,
        audience=Audience.user(user_id),
        title="API 키 삭제: 자동 관리가 끝난 보유 종목" if positions else "API 키 삭제",
        lines=tuple(lines),
        facts=(Fact(label="계좌", value=account_no), Fact(label="관리되지 않는 보유 종목", value=held)),
        severity=Severity.WARNING if positions else Severity.INFO,
        occurred_at=at,
        template_params={"account": account_no, "positions": held, "time": kst(at)},
    )


def _rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1f}%"


def report_ready(audience: Audience, summary: ReportSummary, link: str, at: datetime) -> Notification:
    """The daily report is written. Template keys: ``day``, ``trades``, ``pnl``, ``win_rate``, ``link``."""
    day = summary.trading_day.isoformat()
    facts = [
        Fact(label="거래 수", value=f"{summary.trades:,}"),
        Fact(label="실현손익", value=signed_won(summary.realized_pnl)),
        Fact(label="승률", value=_rate(summary.win_rate)),
        Fact(label="손절 비율", value=_rate(summary.stop_trigger_rate)),
    ]
    if summary.equity is not None:
        facts.append(Fact(label="평가자산", value=won(summary.equity)))
    return Notification(
        kind=NotificationKind.REPORT_READY,
        audience=audience,
        title=f"{day} 일일 리포트",
        lines=(f"거래 {summary.trades:,}건, 실현손익 {signed_won(summary.realized_pnl)}",),
        facts=tuple(facts),
        occurred_at=at,
        link=link,
        template_params={
            "day": day,
            "trades": f"{summary.trades:,}",
            "pnl": signed_won(summary.realized_pnl),
            "win_rate": _rate(summary.win_rate),
            "link": link,
        },
    )


def delivery_failed(
    failed: Notification, channel: str, error: str, attempts: int, at: datetime
) -> Notification:
    """Tells the operator that a user's notification could not be delivered. Carries no part of the
    original body: the operator needs who/what/where, and the body may hold a user's positions."""
    return Notification(
        kind=NotificationKind.ERROR,
        audience=OPERATOR,
        title=f"알림 전송 실패: {channel}",
        lines=(
            f"{failed.audience} 대상 {failed.kind} 알림을 {attempts}회 시도 후 전송하지 못했습니다.",
            error,
        ),
        facts=(
            Fact(label="채널", value=channel),
            Fact(label="대상", value=str(failed.audience)),
            Fact(label="종류", value=failed.kind.value),
            Fact(label="시도", value=f"{attempts}회"),
        ),
        severity=Severity.ERROR,
        occurred_at=at,
        template_params={
            "channel": channel,
            "audience": str(failed.audience),
            "kind": failed.kind.value,
            "error": error,
            "time": kst(at),
        },
    )


def indicators_missed(day: date, missed: Sequence[tuple[str, str, str]], at: datetime) -> Notification:
    """The day's operating indicators that missed their target, as ``(name, value and target, basis)``.
    Template keys: ``day``, ``missed`` (the names), ``time``."""
    names = ", ".join(name for name, _, _ in missed)
    return Notification(
        kind=NotificationKind.ERROR,
        audience=OPERATOR,
        title=f"{day.isoformat()} 운영 지표 미달: {names}",
        lines=tuple(f"{name}: {shown} ({basis})" for name, shown, basis in missed),
        facts=tuple(Fact(label=name, value=shown) for name, shown, _ in missed),
        severity=Severity.WARNING,
        occurred_at=at,
        template_params={"day": day.isoformat(), "missed": names, "time": kst(at)},
    )


__all__ = [
    "TIER_LABELS",
    "ArmedExit",
    "FillLine",
    "OrderLine",
    "ReportSummary",
    "TierFill",
    "buy_orders_placed",
    "delivery_failed",
    "error_occurred",
    "exits_armed",
    "fills_confirmed",
    "indicators_missed",
    "key_disabled",
    "key_enabled",
    "positions_unmanaged",
    "report_ready",
    "security_alert",
    "tier_triggered",
]
