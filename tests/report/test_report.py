"""Daily reports against numbers worked out by hand, on SQLite and PostgreSQL: per-user figures, the
operator's totals, equity and drawdown charts as real PNG files, and users never seeing each other."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, time
from pathlib import Path

import pytest

from autotrade.domain.exits import StrategyStatus
from autotrade.domain.krx import KST
from autotrade.domain.models import ExitReason, TradeAction
from autotrade.report import build_daily_reports
from autotrade.report.metrics import HoldingDays, Position, drawdowns, max_drawdown, performance
from autotrade.store.db import Database
from autotrade.store.migrate import upgrade
from autotrade.store.models import EquitySnapshot, ThreeTierStrategy, TradeRecordRow
from autotrade.store.repositories import Users

THU, FRI, MON = date(2026, 11, 19), date(2026, 11, 20), date(2026, 11, 23)
PNG = b"\x89PNG\r\n\x1a\n"


def _strategy(s, sid, user, acct, code, name, entry_day, price, qty, held):  # type: ignore[no-untyped-def]
    st = ThreeTierStrategy(
        id=sid, user_id=user, account_no=acct, buy_intent_key=f"buy-{sid}", code=code, name=name,
        quantity=qty, entry_price=price, entry_date=entry_day, stop_loss_price=price * 95 // 100,
        preserve_price=price * 104 // 100, take_profit_price=price * 108 // 100, held_quantity=held,
        preserve_target=qty // 2, status=StrategyStatus.ACTIVE if held else StrategyStatus.COMPLETED,
    )  # fmt: skip
    s.add(st)
    s.flush()
    return st


def _trade(s, n, st, day, action, qty, price, pnl=None, reason=None):  # type: ignore[no-untyped-def]
    row = TradeRecordRow(
        trade_id=f"t{n}", user_id=st.user_id, account_no=st.account_no, code=st.code, name=st.name,
        action=action, quantity=qty, price=price, amount=qty * price, fee=qty * price * 15 // 100_000,
        tax=0 if action is TradeAction.BUY else qty * price * 2 // 1000,
        executed_at=datetime.combine(day, time(10, n), tzinfo=KST), trading_day=day,
        exit_reason=reason, profit_loss=pnl, strategy_id=st.id,
    )  # fmt: skip
    s.add(row)


def _equity(s, user, acct, day, value):  # type: ignore[no-untyped-def]
    s.add(EquitySnapshot(user_id=user, account_no=acct, trading_day=day, cash=value, holdings_value=0,
                         equity=value))  # fmt: skip


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    upgrade(db_url)
    database = Database(db_url)
    with database.unit_of_work() as s:
        users = Users(s)
        for user, acct in (("alice", "11111111"), ("bob", "22222222")):
            users.ensure(user)
            users.ensure_account(user, acct)
        s.flush()
        a1 = _strategy(s, 1, "alice", "11111111", "005930", "삼성전자", THU, 10_000, 10, 0)
        a2 = _strategy(s, 2, "alice", "11111111", "000660", "SK하이닉스", FRI, 20_000, 5, 0)
        a3 = _strategy(s, 3, "alice", "11111111", "035420", "NAVER", MON, 50_000, 4, 4)
        b1 = _strategy(s, 4, "bob", "22222222", "068270", "셀트리온", FRI, 30_000, 3, 0)
        _trade(s, 1, a1, THU, TradeAction.BUY, 10, 10_000)
        _trade(s, 2, a1, FRI, TradeAction.PRESERVE, 5, 10_400, 1_900, ExitReason.PRESERVE)
        _trade(s, 3, a1, MON, TradeAction.SELL, 5, 10_800, 3_800, ExitReason.TAKE_PROFIT)
        _trade(s, 4, a2, MON, TradeAction.SELL, 5, 19_000, -5_300, ExitReason.STOP_LOSS)
        _trade(s, 5, a3, MON, TradeAction.BUY, 4, 50_000)
        _trade(s, 6, b1, MON, TradeAction.SELL, 3, 28_500, -2_000, ExitReason.STOP_LOSS)
        for day, value in ((THU, 1_000_000), (FRI, 1_100_000), (MON, 990_000)):
            _equity(s, "alice", "11111111", day, value)
        _equity(s, "bob", "22222222", MON, 500_000)
    try:
        yield database
    finally:
        database.engine.dispose()


def test_each_figure_matches_the_hand_computation(db: Database, tmp_path: Path) -> None:
    reports = build_daily_reports(db, MON, tmp_path, prices={"035420": 52_000})
    alice, bob = sorted(reports.users, key=lambda r: r.user_id)
    assert alice.user_id == "alice" and bob.user_id == "bob"

    assert [t.code for t in alice.trades] == ["005930", "000660", "035420"]  # today's only, in time order
    assert alice.realized_today == 3_800 - 5_300
    assert alice.realized_total == 1_900 + 3_800 - 5_300
    assert alice.unrealized == (52_000 - 50_000) * 4
    p = alice.performance
    assert (p.closed, p.wins, p.stops) == (2, 1, 1)
    assert (p.win_rate, p.stop_trigger_rate) == (50.0, 50.0)
    assert p.average_holding_days == 1.5  # Thu->Mon is 2 trading days, Fri->Mon is 1
    assert alice.max_drawdown == pytest.approx(-10.0)  # 1.1M peak to 0.99M
    assert [x.code for x in alice.open_positions] == ["035420"]
    assert alice.summary.trades == 3 and alice.summary.realized_pnl == -1_500
    assert alice.summary.equity == 990_000

    op = reports.operator
    assert len(op.trades) == 4 and op.realized_today == -1_500 - 2_000
    assert (op.performance.closed, op.performance.wins, op.performance.stops) == (3, 1, 2)
    assert op.performance.win_rate == 33.3 and op.performance.stop_trigger_rate == 66.7
    assert op.equity == [(THU, 1_000_000), (FRI, 1_100_000), (MON, 1_490_000)]
    assert op.summary.equity == 1_490_000


def test_files_are_written_and_users_never_see_each_other(db: Database, tmp_path: Path) -> None:
    reports = build_daily_reports(db, MON, tmp_path, prices={})
    alice, bob = sorted(reports.users, key=lambda r: r.user_id)
    for r in (alice, bob, reports.operator):
        assert r.html_path.exists() and r.html_path.parent == tmp_path
        assert len(r.charts) == 2
        for chart in r.charts:
            assert chart.read_bytes()[:8] == PNG and chart.stat().st_size > 5_000
            assert chart.name in r.html_path.read_text(encoding="utf-8")
    a_html = alice.html_path.read_text(encoding="utf-8")
    b_html = bob.html_path.read_text(encoding="utf-8")
    assert "삼성전자" in a_html and "50.0%" in a_html and "셀트리온" not in a_html and "bob" not in a_html
    assert "셀트리온" in b_html and "삼성전자" not in b_html and "alice" not in b_html
    assert "셀트리온" in reports.operator.markdown and "삼성전자" in reports.operator.markdown

    only = build_daily_reports(db, MON, tmp_path / "one", prices={}, users=["bob"])
    assert [r.user_id for r in only.users] == ["bob"] and len(only.operator.trades) == 1


def test_markup_in_a_stock_name_is_escaped(db: Database, tmp_path: Path) -> None:
    with db.unit_of_work() as s:
        st = _strategy(s, 9, "bob", "22222222", "000001", "<script>x</script>", MON, 1_000, 1, 1)
        _trade(s, 9, st, MON, TradeAction.BUY, 1, 1_000)
    reports = build_daily_reports(db, MON, tmp_path, prices={}, users=["bob"])
    page = reports.users[0].html_path.read_text(encoding="utf-8")
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_a_user_without_history_gets_a_report_without_charts(db: Database, tmp_path: Path) -> None:
    with db.unit_of_work() as s:
        Users(s).ensure("carol")
    reports = build_daily_reports(db, MON, tmp_path, prices={}, users=["carol"])
    (carol,) = reports.users
    assert carol.trades == [] and carol.charts == [] and carol.performance.win_rate is None
    assert "equity -" in carol.markdown and carol.html_path.exists()


def test_metrics_by_hand() -> None:
    assert drawdowns([100, 120, 90, 130, 117]) == [0.0, 0.0, -25.0, 0.0, -10.0]
    assert max_drawdown([100, 120, 90, 130, 117]) == -25.0 and max_drawdown([]) == 0.0
    days = HoldingDays([THU, FRI, MON])
    assert days(THU, MON) == 2 and days(FRI, MON) == 1
    base = dict(code="1", name="n", entry_price=1, quantity=1, status="CLOSED", tiers={})
    pos = [
        Position(strategy_id=1, entry_date=THU, held=0, realized_pnl=10, stopped=False, closed_on=FRI,
                 **base),
        Position(strategy_id=2, entry_date=THU, held=0, realized_pnl=0, stopped=True, closed_on=MON,
                 **base),
        Position(strategy_id=3, entry_date=FRI, held=1, realized_pnl=-5, stopped=False, closed_on=None,
                 **base),
    ]  # fmt: skip
    perf = performance(pos, days)
    assert (perf.closed, perf.wins, perf.stops) == (2, 1, 1)  # break-even is not a win; open ones don't count
    assert perf.average_holding_days == 1.5
