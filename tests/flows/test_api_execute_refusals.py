"""``POST /api/auto-trading/execute`` answers 400 with the reason, not 500: a day outside the KRX calendar,
a scan the validation rejects (the embedded mode, the simulator over HTTP)."""

from __future__ import annotations

from datetime import time

from autotrade.demo.stack import Stack
from tests.flows.conftest import DAY1
from tests.flows.test_api_service import api_client, login


async def test_execute_refusals_say_why(stack: Stack) -> None:
    stack.at(DAY1, time(15, 40))
    row = {"code": "005930", "name": "삼성전자", "score": 8.5, "current_price": 70_000, "reasons": []}
    async with api_client(stack) as client:
        op = await login(client, "ops@example.com", stack)
        far = {"scan_results": [row], "trading_day": "1990-01-03"}
        r = await client.post("/api/auto-trading/execute", json=far, headers=op)
        assert r.status_code == 400 and "outside the KRX calendar" in r.json()["detail"]
        bad = {"scan_results": [row, row], "trading_day": DAY1.isoformat()}  # a stock twice
        r = await client.post("/api/auto-trading/execute", json=bad, headers=op)
        assert r.status_code == 400 and r.json()["detail"].startswith("the scan was rejected"), r.text
        # every account failing is the run's outcome, not a server error: 200, success false, the reason
        unknown = {"scan_results": [{**row, "code": "00593A"}], "trading_day": DAY1.isoformat()}
        r = await client.post("/api/auto-trading/execute", json=unknown, headers=op)
        assert r.status_code == 200 and r.json()["success"] is False and "failed" in r.json()["message"]
