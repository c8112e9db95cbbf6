"""The embedded stack (the demo's) wires the gateway's security alerts to its notifier: a kill reaches the
user with what still runs and the way back, and the operator with the rule. A notifier that is built but
never reached is how the last wave's alerts went to nobody."""

from __future__ import annotations

import io

from autotrade.demo.stack import Stack


async def test_a_kill_in_the_embedded_stack_reaches_the_user_and_the_operator(
    stack: Stack, notes: io.StringIO
) -> None:
    user, account = stack.users[0]
    await stack.access.gateway().kill(user, account, "burst", "130 requests in 10s")
    assert stack.runtime.notifier is not None
    assert stack.runtime.notifier.flush(10)  # type: ignore[attr-defined]
    text = notes.getvalue()
    assert "API 키가 보안 규칙으로 비활성화되었습니다" in text  # the user's notice
    assert f"계좌 {account}" in text and "키움증권 비밀번호를 변경" in text  # the account and the way back
    assert text.count("SECURITY_ALERT") >= 2, text  # the user's notice and the operator's copy
