"""The account settings and the operator pages through the browser on the running product (API + simulator,
SQLite and PostgreSQL): a trader changes the daily limit and the password with clear refusals for bad input;
an operator lists users and grants the operator role, sees the feed's health and the Prefect UI's address,
and runs the evening buy as a dry run first, then for real. Screenshots at desktop and phone widths go to
/tmp/web-shots/."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from autotrade.domain.models import ApiStatus
from autotrade.store.models import OrderIntentRow, SecurityEvent, User, UserApiKey
from tests.web.conftest import DAY1, DESKTOP, PHONE, Product, evening_scan

EMAIL, PASSWORD, NEW_PASSWORD = "settings@example.com", "correct horse battery", "a longer passphrase now"
ACCOUNT = "8100000077"


def no_prefect(monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded mode: no Prefect server named to the API (the page says so plainly)."""
    monkeypatch.delenv("PREFECT_UI_URL", raising=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)


async def sign_up(base: str, email: str, password: str = PASSWORD) -> str:
    async with httpx.AsyncClient(base_url=base) as c:
        assert (
            await c.post("/api/auth/signup", json={"email": email, "password": password})
        ).status_code == 201
        r = await c.post("/api/auth/login", json={"email": email, "password": password})
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])


async def log_in(page: Any, base: str, email: str, password: str) -> None:
    await page.goto(base + "/login/")
    await page.get_by_label("이메일").fill(email)
    await page.get_by_label("비밀번호").fill(password)
    await page.get_by_role("button", name="로그인").click()
    await page.wait_for_url("**/dashboard/")


def krw(text: str) -> int:
    """A KRW amount as the page formats it (₩1,234,000) back to its integer."""
    return int("".join(ch for ch in text if ch.isdigit()))


def page_errors(page: Any) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    return errors


async def test_daily_limit_and_password_change(product: Product, browser: Any) -> None:
    stack, base = product.stack, product.base_url
    token = await sign_up(base, EMAIL)
    stack.sim.admin.create_account(ACCOUNT, "설정 트레이더", 30_000_000)
    key = stack.sim.admin.create_appkey(ACCOUNT)
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}) as c:
        body = {"app_key": key["appkey"], "app_secret": key["secretkey"], "account_no": ACCOUNT,
                "daily_limit": 5_000_000}  # fmt: skip
        r = await c.post("/api/user/register-api", json=body)
        assert r.status_code == 200, r.text
    ctx = await browser.new_context(viewport=DESKTOP, locale="ko-KR", timezone_id="UTC")
    page = await ctx.new_page()
    errors = page_errors(page)
    await log_in(page, base, EMAIL, PASSWORD)
    await page.get_by_role("link", name="설정").click()
    await page.wait_for_url("**/settings/")

    # The daily limit: anything but a positive whole number is refused on the page, with the reason.
    row = page.get_by_test_id(f"limit-{ACCOUNT}")
    assert await row.get_by_test_id("current-limit").inner_text() == "₩5,000,000"
    field = row.get_by_label(f"일일 매수 한도 (원) — {ACCOUNT}")
    for bad in ("7,000,000", "0", "-5", "1.5", "abc", ""):
        await field.fill(bad)
        await row.get_by_role("button", name="한도 변경").click()
        await row.get_by_role("alert").filter(has_text="1원 이상의 정수").wait_for()
        assert await field.get_attribute("aria-invalid") == "true"
    await field.fill("20000000000")
    await row.get_by_role("button", name="한도 변경").click()
    await row.get_by_role("alert").filter(has_text="100억 원 이하").wait_for()
    await product.shot(page, "settings-limit-error-desktop")
    with stack.db.unit_of_work() as s:
        assert (
            s.scalar(sa.select(UserApiKey.daily_limit).where(UserApiKey.account_no == ACCOUNT)) == 5_000_000
        )
    await field.fill("7000000")
    await row.get_by_role("button", name="한도 변경").click()
    await row.get_by_role("status").filter(has_text="₩7,000,000").wait_for()
    await row.get_by_test_id("current-limit").filter(has_text="₩7,000,000").wait_for()
    with stack.db.unit_of_work() as s:
        assert (
            s.scalar(sa.select(UserApiKey.daily_limit).where(UserApiKey.account_no == ACCOUNT)) == 7_000_000
        )

    # The password: a wrong current one, a weak new one and a mismatch are each said plainly.
    form = page.get_by_test_id("password-form")

    async def try_password(current: str, new: str, again: str, expect: str) -> None:
        await form.get_by_label("현재 비밀번호").fill(current)
        await form.get_by_label("새 비밀번호", exact=True).fill(new)
        await form.get_by_label("새 비밀번호 확인").fill(again)
        await form.get_by_role("button", name="비밀번호 변경").click()
        await form.get_by_role("alert").filter(has_text=expect).wait_for()

    await try_password("not my password", NEW_PASSWORD, NEW_PASSWORD, "현재 비밀번호가 올바르지 않습니다")
    assert await form.get_by_label("현재 비밀번호").get_attribute("aria-invalid") == "true"
    assert page.url.endswith("/settings/")  # the 401 of a wrong password does not end the session
    await try_password(PASSWORD, "short", "short", "10자 이상")
    await try_password(PASSWORD, NEW_PASSWORD, NEW_PASSWORD + "x", "일치하지 않습니다")
    await product.shot(page, "settings-password-error-desktop")
    await page.set_viewport_size(PHONE)
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    await product.shot(page, "settings-phone")
    await page.set_viewport_size(DESKTOP)
    await form.get_by_label("현재 비밀번호").fill(PASSWORD)
    await form.get_by_label("새 비밀번호", exact=True).fill(NEW_PASSWORD)
    await form.get_by_label("새 비밀번호 확인").fill(NEW_PASSWORD)
    await form.get_by_role("button", name="비밀번호 변경").click()
    await page.wait_for_url("**/login/?changed=1")
    await page.get_by_role("status").filter(has_text="비밀번호를 바꿨습니다").wait_for()
    assert await page.evaluate("localStorage.getItem('autotrade.session')") is None
    await product.shot(page, "login-after-password-change-desktop")
    async with httpx.AsyncClient(base_url=base) as c:  # the old session is over, the old password too
        assert (
            await c.get("/api/user/accounts", headers={"Authorization": f"Bearer {token}"})
        ).status_code == 401
        old = await c.post("/api/auth/login", json={"email": EMAIL, "password": PASSWORD})
        assert old.status_code == 401
    await log_in(page, base, EMAIL, NEW_PASSWORD)
    assert not errors, errors
    await ctx.close()


async def test_operator_users_health_prefect_and_evening_run(
    product: Product, browser: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_prefect(monkeypatch)
    stack, base = product.stack, product.base_url
    await sign_up(base, "op@example.com")
    await sign_up(base, "newop@example.com")
    with stack.db.unit_of_work() as s:
        s.execute(sa.update(User).where(User.email == "op@example.com").values(role="operator"))
        op_id = s.scalar(sa.select(User.user_id).where(User.email == "op@example.com"))
        new_id = s.scalar(sa.select(User.user_id).where(User.email == "newop@example.com"))
    (trader, trader_account), (other_trader, _) = await stack.register_users(2)

    ctx = await browser.new_context(viewport=DESKTOP, locale="ko-KR", timezone_id="UTC")
    page = await ctx.new_page()
    errors = page_errors(page)
    await log_in(page, base, "op@example.com", PASSWORD)
    await page.get_by_role("link", name="운영").click()
    await page.wait_for_url("**/ops/")

    # Users and roles: everyone listed with their keys; the operator makes another user an operator.
    await page.get_by_role("link", name="사용자·권한").click()
    await page.wait_for_url("**/ops/users/")
    me = page.get_by_test_id("user-op@example.com")
    await me.wait_for()
    assert "(나)" in await me.inner_text() and await me.get_by_role("button").count() == 0  # not oneself
    assert (
        await page.get_by_test_id(f"user-{trader}").filter(has_text=f"{trader_account} ACTIVE").count() == 1
    )
    other = page.get_by_test_id("user-newop@example.com")
    assert await other.get_by_test_id("role").inner_text() == "일반 사용자"
    await product.shot(page, "ops-users-desktop")
    await other.get_by_role("button", name="운영자로 지정").click()
    await page.get_by_role("status").filter(has_text="권한을 바꿨습니다").wait_for()
    await other.get_by_test_id("role").filter(has_text="운영자").wait_for()
    with stack.db.unit_of_work() as s:
        assert s.get(User, new_id).role == "operator"  # type: ignore[union-attr]
        event = s.scalar(sa.select(SecurityEvent).where(SecurityEvent.rule == "role_change"))
        assert event is not None and event.user_id == new_id and op_id in event.action_taken
    await page.set_viewport_size(PHONE)
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    await product.shot(page, "ops-users-phone")
    await page.set_viewport_size(DESKTOP)

    # System: the feed's health as /ready answers it, and no Prefect address said plainly.
    await page.get_by_role("link", name="시스템·플로").click()
    await page.wait_for_url("**/ops/system/")
    async with httpx.AsyncClient(base_url=base) as c:
        checks = (await c.get("/ready")).json()["checks"]
    for name, ok in checks.items():
        cell = page.get_by_test_id(f"check-{name}")
        await cell.filter(has_text="정상" if ok else "연결 안 됨").wait_for()
    await page.get_by_test_id("no-prefect").filter(has_text="PREFECT_UI_URL").wait_for()
    assert await page.get_by_test_id("deployment-evening").inner_text() == "evening_signal_and_buy/evening"

    # The evening run: a dry run first (nothing ordered), the real run only after it and a confirmation.
    evening_scan(stack, DAY1)
    scan_file = stack.scans_dir / f"scan_{DAY1:%Y%m%d}.json"
    evening = page.get_by_test_id("evening")
    real = evening.get_by_role("button", name="실제 실행")
    assert await real.is_disabled()
    await evening.get_by_label("스캔 결과 파일 (JSON)").set_input_files(str(scan_file))
    day_field = evening.get_by_label("거래일")
    for _ in range(100):  # the file is read asynchronously; its trading day fills the field
        if await day_field.input_value() == DAY1.isoformat():
            break
        await asyncio.sleep(0.05)
    assert await day_field.input_value() == DAY1.isoformat()
    await evening.get_by_role("button", name="모의 실행").click()
    dry = evening.get_by_test_id("dry-result")
    await dry.wait_for(timeout=60_000)
    assert await dry.get_by_test_id("orders").count() == 1, await dry.inner_text()
    planned = int(await dry.get_by_test_id("orders").inner_text())
    assert planned > 0, await dry.inner_text()
    with stack.db.unit_of_work() as s:
        assert s.scalar(sa.select(sa.func.count(OrderIntentRow.id))) == 0  # the dry run ordered nothing
    # The plan per user and account: each order's code, quantity, price (KRW) and amount, and the total.
    shown: dict[str, set[tuple[str, int, int]]] = {}
    for user in (trader, other_trader):
        table = dry.get_by_test_id(f"plan-{user}")
        await table.wait_for()
        rows = table.get_by_test_id("plan-order")
        orders = set()
        for i in range(await rows.count()):
            row = rows.nth(i)
            code = await row.get_attribute("data-code")
            qty = int(await row.get_by_test_id("plan-qty").inner_text())
            price = krw(await row.get_by_test_id("plan-price").inner_text())
            orders.add((str(code), qty, price))
        assert orders, await table.inner_text()
        assert krw(await table.get_by_test_id("plan-total").inner_text()) == sum(q * p for _, q, p in orders)
        shown[user] = orders
    assert sum(len(o) for o in shown.values()) == planned
    await product.shot(page, "ops-system-dry-run-desktop")
    await page.set_viewport_size(PHONE)
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    await product.shot(page, "ops-system-dry-run-phone")
    await page.set_viewport_size(DESKTOP)
    await real.click()
    confirm = evening.get_by_role("alertdialog")
    await confirm.wait_for()
    await confirm.get_by_role("button", name="실제 실행").click()
    done = evening.get_by_test_id("real-result")
    await done.wait_for(timeout=60_000)
    with stack.db.unit_of_work() as s:
        for user in (trader, other_trader):  # the real run sent what the dry run planned, user by user
            sent = s.execute(
                sa.select(OrderIntentRow.code, OrderIntentRow.quantity, OrderIntentRow.price).where(
                    OrderIntentRow.user_id == user, OrderIntentRow.trading_day == DAY1
                )
            ).all()
            assert {(c, q, p) for c, q, p in sent} == shown[user], (user, sent, shown[user])
    assert await done.get_by_test_id("orders").inner_text() == str(planned)
    await product.shot(page, "ops-system-desktop")
    await page.set_viewport_size(PHONE)
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    await product.shot(page, "ops-system-phone")
    assert not errors, errors
    await ctx.close()


async def test_operator_re_enables_a_disabled_key(product: Product, browser: Any) -> None:
    """A key the kill switch DISABLED is listed on the operator's page with a re-enable button; after a
    confirmation (cancel first changes nothing) it is ACTIVE again and the event names the operator."""
    stack, base = product.stack, product.base_url
    await sign_up(base, "keyop@example.com")
    with stack.db.unit_of_work() as s:
        s.execute(sa.update(User).where(User.email == "keyop@example.com").values(role="operator"))
        op_id = s.scalar(sa.select(User.user_id).where(User.email == "keyop@example.com"))
    ((trader, account),) = await stack.register_users(1)
    with stack.db.unit_of_work() as s:  # as the kill switch leaves it
        s.execute(
            sa.update(UserApiKey)
            .where(UserApiKey.user_id == trader, UserApiKey.account_no == account)
            .values(api_status=ApiStatus.DISABLED)
        )

    def status() -> ApiStatus:
        with stack.db.unit_of_work() as s:
            return ApiStatus(
                s.scalar(sa.select(UserApiKey.api_status).where(UserApiKey.account_no == account))
            )

    ctx = await browser.new_context(viewport=DESKTOP, locale="ko-KR", timezone_id="UTC")
    page = await ctx.new_page()
    errors = page_errors(page)
    await log_in(page, base, "keyop@example.com", PASSWORD)
    await page.goto(base + "/ops/")
    row = page.get_by_test_id(f"key-{account}")
    await row.get_by_test_id("key-status").filter(has_text="DISABLED").wait_for()
    await row.get_by_role("button", name="키 재활성화").click()
    dialog = row.get_by_role("alertdialog")
    await dialog.get_by_role("button", name="취소").click()
    await dialog.wait_for(state="detached")
    assert status() is ApiStatus.DISABLED
    await row.get_by_role("button", name="키 재활성화").click()
    await product.shot(page, "ops-enable-key-desktop")
    await page.set_viewport_size(PHONE)
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    await product.shot(page, "ops-enable-key-phone")
    await page.set_viewport_size(DESKTOP)
    await dialog.get_by_role("button", name="키 재활성화").click()
    await page.get_by_role("status").filter(has_text="키를 재활성화했습니다").wait_for()
    await row.wait_for(state="detached")  # no longer among the keys not active
    assert status() is ApiStatus.ACTIVE
    with stack.db.unit_of_work() as s:
        event = s.scalar(sa.select(SecurityEvent).where(SecurityEvent.rule == "operator_enable"))
        assert event is not None and event.account_no == account and op_id in (event.action_taken or "")
    await page.get_by_role("cell", name="operator_enable").wait_for()  # the events table shows it
    assert not errors, errors
    await ctx.close()
