"""A trader through the browser on the running product: sign up, register a Kiwoom key (checked by the
simulator), turn auto-trading on; the evening and the morning flows buy and arm; the dashboard shows the
positions with their tiers; a price move on the simulator fires a tier and the page shows it without a reload
within 2 s; another user's positions never appear. Screenshots of each page at desktop and phone widths go to
/tmp/web-shots/."""

from __future__ import annotations

import asyncio
import json
import time as walltime
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from autotrade.api import auth as api_auth
from autotrade.domain.exits import TierStatus
from autotrade.domain.krx import KST
from autotrade.domain.models import ExitReason, Side, Tier, TradeAction
from autotrade.store.models import (
    EquitySnapshot,
    OrderIntentRow,
    ThreeTierStrategy,
    TradeRecordRow,
    User,
    UserNotice,
)
from flows.daily_report import daily_report
from flows.evening_signal_and_buy import evening_signal_and_buy
from flows.intraday_reconcile import intraday_reconcile
from flows.morning_fill_and_arm import morning_fill_and_arm
from tests.web.conftest import DAY1, DAY2, DESKTOP, PHONE, Product, evening_scan, wait_for

EMAIL, PASSWORD = "trader@example.com", "correct horse battery"
ACCOUNT = "8100000099"


def strategies_of(product: Product, user_id: str) -> list[ThreeTierStrategy]:
    with product.stack.db.unit_of_work() as s:
        rows = s.scalars(
            sa.select(ThreeTierStrategy)
            .where(ThreeTierStrategy.user_id == user_id, ThreeTierStrategy.closed_at.is_(None))
            .order_by(ThreeTierStrategy.id)
        ).all()
        for r in rows:
            _ = r.orders
        s.expunge_all()
        return list(rows)


async def wait_for_count(locator: Any, n: int, seconds: float = 10.0) -> None:
    for _ in range(int(seconds * 20)):
        if await locator.count() == n:
            return
        await asyncio.sleep(0.05)
    assert await locator.count() == n


async def run_flow(flow: Any, **params: Any) -> dict[str, Any]:
    state = await flow(**params, return_state=True)
    result = await state.result(raise_on_failure=False)
    assert state.is_completed(), state.message
    return dict(result)


async def test_sign_up_register_trade_and_watch_live(product: Product, browser: Any) -> None:
    stack, base = product.stack, product.base_url
    errors: list[str] = []
    ctx = await browser.new_context(viewport=DESKTOP, locale="ko-KR", timezone_id="UTC")
    page = await ctx.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))

    # Sign up (the home page sends a visitor to the login page).
    await page.goto(base + "/")
    await page.wait_for_url("**/login/")
    await product.shot(page, "login-desktop")
    await page.get_by_role("link", name="회원가입").first.click()
    await page.wait_for_url("**/signup/")
    await product.shot(page, "signup-desktop")
    await page.get_by_label("이메일").fill(EMAIL)
    await page.get_by_label("비밀번호").fill(PASSWORD)
    await page.get_by_role("button", name="회원가입").click()
    await page.wait_for_url("**/keys/")

    # A Kiwoom account at the simulator; its key registered through the page, checked by the broker.
    stack.sim.admin.create_account(ACCOUNT, "웹 트레이더", 30_000_000)
    key = stack.sim.admin.create_appkey(ACCOUNT)
    await page.get_by_label("앱키 (App Key)").fill("BADKEY-not-at-the-broker")
    await page.get_by_label("시크릿키 (Secret Key)").fill("not-a-secret-either")
    await page.get_by_label("계좌번호").fill(ACCOUNT)
    await page.get_by_role("button", name="증권사 확인 후 등록").click()
    # the broker's refusal, nothing stored. Next's route announcer is a role=alert too, and it reads out
    # the page's alert text at times: it is not the page's own message.
    await page.locator('[role="alert"]:not(#__next-route-announcer__)').filter(
        has_text="요청이 실패했습니다"
    ).wait_for()
    assert "등록된 계좌가 없습니다" in await page.content()
    await wait_for(lambda: bool(errors), 5, "the browser's console line for the 400")
    assert errors == ["Failed to load resource: the server responded with a status of 400 (Bad Request)"]
    errors.clear()  # the refusal's 400, logged by the browser; any other console error fails the test

    await page.get_by_label("앱키 (App Key)").fill(key["appkey"])
    await page.get_by_label("시크릿키 (Secret Key)").fill(key["secretkey"])
    await page.get_by_label("계좌번호").fill(ACCOUNT)
    await page.get_by_role("button", name="증권사 확인 후 등록").click()
    answer = page.get_by_test_id("broker-answer")
    await answer.wait_for()
    text = await answer.inner_text()
    # The broker's answer: the account's cash (the balance inquiry names no account holder).
    assert ACCOUNT in text and "₩30,000,000" in text, text
    assert key["secretkey"] not in await page.content()  # the secret is gone from the page
    assert await page.get_by_label("시크릿키 (Secret Key)").input_value() == ""
    row = page.get_by_test_id(f"account-{ACCOUNT}")
    assert await row.get_by_test_id("auto-state").inner_text() == "꺼짐"
    await row.get_by_role("button", name="자동매매 켜기").click()
    await wait_for_text(row.get_by_test_id("auto-state"), "켜짐")
    # Notification channels: KakaoTalk needs the mobile number, stored in its plain digits.
    prefs = page.get_by_test_id("notifications")
    await prefs.get_by_label("카카오톡").check()
    await prefs.get_by_label("휴대폰 번호").fill("010-1234-5678")
    await prefs.get_by_role("button", name="저장").click()
    await prefs.get_by_role("status").filter(has_text="저장했습니다").wait_for()
    await product.shot(page, "keys-desktop")
    user_id = json.loads(await page.evaluate("atob(localStorage['autotrade.session'].split('.')[1])"))["sub"]
    with stack.db.unit_of_work() as s:
        me = s.get(User, user_id)
        assert me is not None and (me.notify_channels, me.phone) == ("console,kakao", "01012345678")

    # Another user trading the same day: their positions must never reach this trader's page.
    (other, other_account), = await stack.register_users(1)

    # The evening run buys for both, the morning run arms the exits.
    evening_scan(stack, DAY1)
    evening = await run_flow(evening_signal_and_buy, trading_day=DAY1)
    assert evening["accounts"] == 2 and evening["accounts_with_errors"] == 0, evening
    stack.at(DAY2, time(9, 5))
    morning = await run_flow(morning_fill_and_arm, trading_day=DAY2)
    mine, theirs = strategies_of(product, user_id), strategies_of(product, other)
    assert mine and theirs, (morning, mine, theirs)
    assert morning["armed"] == len(mine) + len(theirs)

    # The dashboard: my positions with their three tiers, and only mine.
    await page.get_by_role("link", name="대시보드").click()
    await page.wait_for_url("**/dashboard/")
    await wait_for_text(page.get_by_test_id("live-state"), "실시간")
    cards = page.locator("[data-testid^=position-]")
    await cards.first.wait_for()
    assert await cards.count() == len(mine)
    for st in mine:
        card = page.get_by_test_id(f"position-{st.code}")
        body = await card.inner_text()
        assert st.name in body and f"₩{st.entry_price:,}" in body, body
        for o in st.orders:
            tier = card.get_by_test_id(f"tier-{o.order_type.value}")
            cells = await tier.inner_text()
            assert f"₩{o.trigger_price:,}" in cells and str(o.quantity) in cells and "ACTIVE" in cells, cells
    mine_codes = {st.code for st in mine}
    for st in theirs:
        if st.code not in mine_codes:
            assert await page.get_by_test_id(f"position-{st.code}").count() == 0
    assert other_account not in await page.content()
    # The notices this trader was sent (as recorded when they went out), and no one else's.
    with stack.db.unit_of_work() as s:
        told = s.execute(
            sa.select(UserNotice.kind, UserNotice.item).where(UserNotice.user_id == user_id)
        ).all()
        bought = dict(
            s.execute(
                sa.select(OrderIntentRow.code, OrderIntentRow.quantity).where(
                    OrderIntentRow.user_id == user_id, OrderIntentRow.side == Side.BUY
                )
            ).all()
        )
    assert {k for k, _ in told} >= {"BUY_ORDERS_PLACED", "FILLS_CONFIRMED", "EXITS_ARMED"}, told
    notices = page.get_by_test_id("notice")
    await wait_for_count(notices, len(told))
    placed = page.locator("[data-testid=notice][data-kind=BUY_ORDERS_PLACED]")
    shown = {}
    for i in range(await placed.count()):
        row = placed.nth(i)
        qty = await row.get_by_test_id("notice-qty").inner_text()
        shown[await row.get_attribute("data-code")] = int(qty.rstrip("주"))
    assert shown == bought, (shown, bought)
    assert "매수 주문 접수" in await page.get_by_test_id("notices").inner_text()
    await product.shot(page, "dashboard-desktop")

    # The watch runs (real-time market); a move to the first position's preserve price fires that tier.
    target = mine[0]
    until = datetime.combine(DAY2, time(9, 5), tzinfo=KST) + timedelta(seconds=90)
    watch = asyncio.create_task(run_flow(intraday_reconcile, trading_day=DAY2, until=until))
    try:
        await wait_for(lambda: stack.sim.admin.clock() > datetime.combine(DAY2, time(9, 5), tzinfo=KST),
                       60, "the watch to start the market")  # fmt: skip
        await asyncio.sleep(1.0)  # the feed's subscription is in place
        card = page.get_by_test_id(f"position-{target.code}")
        status = card.get_by_test_id(f"tier-{Tier.PRESERVE.value}").get_by_test_id("tier-status")
        assert await status.inner_text() == "ACTIVE"
        moved = walltime.monotonic()
        stack.sim.admin.set_price(target.code, target.preserve_price + 100)
        await status.filter(has_text=TierStatus.EXECUTED.value).wait_for(timeout=2000)
        seen = walltime.monotonic() - moved
        print(f"price move -> page shows the preserve tier EXECUTED: {seen:.2f} s")
        # the database agrees (the page did not make it up)
        (now,) = [s for s in strategies_of(product, user_id) if s.id == target.id]
        assert {o.order_type: o.status for o in now.orders}[Tier.PRESERVE] is TierStatus.EXECUTED
        await wait_for_text(card.get_by_test_id("held"), f"{now.held_quantity} / {now.quantity}")
        await product.shot(page, "dashboard-after-tier-desktop")
    finally:
        stack.sim.admin.set_clock(until)  # the watch ends at its `until`
        await asyncio.wait_for(watch, 60)

    # The tier's sell is in the trade history, and the 16:30 report's equity reaches the chart, live.
    trades = page.get_by_test_id("trades")
    await trades.get_by_role("row").filter(has_text=target.name).filter(has_text="PRESERVE").first.wait_for()
    # Filters and the CSV export: the export holds exactly the trades the filter shows, the user's own.
    await page.get_by_label("구분").select_option("PRESERVE")
    with stack.db.unit_of_work() as s:
        preserves = s.scalars(
            sa.select(TradeRecordRow).where(
                TradeRecordRow.user_id == user_id, TradeRecordRow.action == TradeAction.PRESERVE
            )
        ).all()
        all_mine = s.scalar(
            sa.select(sa.func.count(TradeRecordRow.id)).where(TradeRecordRow.user_id == user_id)
        )
    assert await trades.locator("tbody tr").count() == len(preserves)
    async with page.expect_download() as dl:
        await page.get_by_role("button", name="CSV 내보내기").click()
    csv_path = Path(await (await dl.value).path())
    csv_text = csv_path.read_text(encoding="utf-8-sig")  # noqa: ASYNC240 - a small local file
    lines = csv_text.strip().splitlines()
    assert lines[0].startswith("executed_at,code,name") and len(lines) == 1 + len(preserves)
    assert any(f'"{target.code}"' in line and '"PRESERVE"' in line for line in lines[1:])
    await page.get_by_label("구분").select_option("")
    assert await trades.locator("tbody tr").count() == all_mine
    assert await page.get_by_test_id("equity-summary").count() == 0
    stack.at(DAY2, time(16, 30))
    report = await run_flow(daily_report, trading_day=DAY2)
    assert report["users"] == 2, report
    summary = page.get_by_test_id("equity-summary")
    await summary.wait_for(timeout=3000)
    with stack.db.unit_of_work() as s:
        equity = s.scalar(sa.select(EquitySnapshot.equity).where(EquitySnapshot.user_id == user_id))
    assert equity and f"₩{equity:,}" in await summary.inner_text()
    await product.shot(page, "dashboard-report-desktop")

    # Phone width: every page, and nothing wider than the screen.
    await page.set_viewport_size(PHONE)
    for name in ("dashboard", "keys"):
        await page.goto(f"{base}/{name}/")
        await page.wait_for_load_state("networkidle") if name == "keys" else await cards.first.wait_for()
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], (name, width)
        await product.shot(page, f"{name}-phone")

    # The operator's page: the same person made an operator (the role is read at log-in).
    with stack.db.unit_of_work() as s:
        s.execute(sa.update(User).where(User.user_id == user_id).values(role="operator"))
    # the API caches a user's role for a few seconds (autotrade.api.auth.USER_CACHE_SECONDS)
    await asyncio.sleep(float(getattr(api_auth, "USER_CACHE_SECONDS", 0.0)) + 0.5)
    await page.set_viewport_size(DESKTOP)
    await page.get_by_role("button", name="로그아웃").click()
    await page.wait_for_url("**/login/")
    # ... by keyboard only: on a fresh load the skip link is the first stop, then the form, Enter submits.
    await page.reload()
    await page.get_by_label("이메일").wait_for()
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.textContent") == "본문으로 건너뛰기"
    await page.keyboard.press("Enter")
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.id") == "email"
    await page.keyboard.type(EMAIL)
    await page.keyboard.press("Tab")
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/dashboard/")
    await page.get_by_role("link", name="운영").click()
    await page.wait_for_url("**/ops/")
    await page.get_by_test_id("day").wait_for()
    with stack.db.unit_of_work() as s:
        open_positions = s.scalar(
            sa.select(sa.func.count(ThreeTierStrategy.id)).where(ThreeTierStrategy.closed_at.is_(None))
        )
        sells = s.scalars(
            sa.select(OrderIntentRow).where(
                OrderIntentRow.trading_day == DAY2, OrderIntentRow.side == Side.SELL
            )
        ).all()
        exits = s.scalars(
            sa.select(TradeRecordRow.exit_reason).where(
                TradeRecordRow.trading_day == DAY2, TradeRecordRow.exit_reason == ExitReason.PRESERVE
            )
        ).all()
    assert sells and exits  # the day had sells (the test's move and the market's own)
    assert await page.get_by_test_id("open-positions").inner_text() == str(open_positions)
    filled = sum(o.status.value == "FILLED" for o in sells)
    assert f"{len(sells)} / {filled} / 0" in await page.get_by_test_id("orders-SELL").inner_text()
    assert f"수익보존 {len(exits)}" in await page.get_by_test_id("exits").inner_text()
    await product.shot(page, "ops-desktop")
    await page.set_viewport_size(PHONE)
    await product.shot(page, "ops-phone")

    # Deleting the key asks first, then says which positions are no longer managed.
    await page.set_viewport_size(DESKTOP)
    await page.get_by_role("link", name="API 키").click()
    row = page.get_by_test_id(f"account-{ACCOUNT}")
    await row.get_by_role("button", name="키 삭제").click()
    confirm = row.get_by_role("alertdialog")
    await confirm.wait_for()
    await product.shot(page, "keys-delete-confirm-desktop")
    await confirm.get_by_role("button", name="삭제").click()
    deleted = page.get_by_role("status").filter(has_text="API 키 삭제 완료")
    await deleted.wait_for()
    assert "더 이상 자동 관리되지 않습니다" in await deleted.inner_text()
    await row.filter(has_text="DELETED").wait_for()

    # English switch; log out drops the token and protected pages send you to the login page.
    await page.set_viewport_size(PHONE)
    await page.get_by_role("button", name="English").click()
    await page.get_by_role("button", name="Log out").click()
    await page.wait_for_url("**/login/")
    assert await page.evaluate("localStorage.getItem('autotrade.session')") is None
    await product.shot(page, "login-phone-en")
    await page.goto(base + "/dashboard/")
    await page.wait_for_url("**/login/")
    await page.set_viewport_size(DESKTOP)
    await product.shot(page, "login-desktop-en")
    assert not errors, errors
    await ctx.close()


async def wait_for_text(locator: Any, text: str, ms: float = 5000) -> None:
    await locator.filter(has_text=text).wait_for(timeout=ms)
