"""The simulator over real HTTP: its admin API refuses a body that is not JSON (a web page's cross-origin
text/plain or form POST) and, when configured, a request without its token; an invalid token is answered
in the real server's wording (HTTP 200, return_code 3); the per-key limit answers HTTP 200 or HTTP 429
with return_code 5, and the client reads both as a rate limit."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr

from autotrade.broker import KiwoomClient
from autotrade.broker.errors import RateLimitError
from autotrade.sim.server import Admin, RunningSimulator, running_simulator


@pytest.fixture
def sim() -> Iterator[RunningSimulator]:
    with running_simulator(seed=3) as s:
        s.admin.create_account("5400000001", "정", 1_000_000)
        yield s


def test_admin_api_takes_json_only_and_an_optional_token(sim: RunningSimulator) -> None:
    http = httpx.Client(base_url=sim.base_url)
    forged = '{"account_no": "5400000009", "name": "x", "cash": 1}'
    for ct in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        r = http.post("/_sim/accounts", content=forged, headers={"Content-Type": ct})
        assert r.status_code == 415
    fault = http.post("/_sim/faults", content='{"kind": "http_500"}', headers={"Content-Type": "text/plain"})
    assert fault.status_code == 415
    assert sim.admin.faults()["rules"] == [] and "5400000009" not in sim.engine.accounts
    ok = http.post("/_sim/accounts", json={"account_no": "5400000009", "name": "x", "cash": 1})
    assert ok.status_code == 200  # JSON still works
    sim.simulator.admin_token = "s3cret-admin"
    assert http.get("/_sim/clock").status_code == 401
    assert http.post("/_sim/prices", json={"code": "x", "price": 1}).status_code == 401
    assert Admin(sim.base_url, token="s3cret-admin").clock() is not None


async def test_invalid_token_wording_and_both_rate_limit_answers(sim: RunningSimulator) -> None:
    h = httpx.AsyncClient(base_url=sim.base_url)
    r = await h.post("/api/dostk/acnt", json={},
                   headers={"api-id": "ka00001", "authorization": "Bearer not-a-token"})  # fmt: skip
    assert r.status_code == 200
    assert r.json() == {"return_code": 3, "return_msg": "인증에 실패했습니다[8005:Token이 유효하지 않습니다]"}
    key = sim.admin.create_appkey("5400000001")
    client = KiwoomClient(sim.base_url, timeout=10, rate_per_second=500, burst=500)
    try:
        token = (await client.issue_token(SecretStr(key["appkey"]), SecretStr(key["secretkey"]))).token
        bearer = token.get_secret_value()
        for status in (200, 429):
            sim.admin._post("/_sim/rate_limit", {"rate": 0.001, "burst": 1, "http_status": status})
            first = await client.request("ka00001", "/api/dostk/acnt", {}, token=bearer, key_id="k")
            assert first.body["acctNo"] == "5400000001"
            raw = await h.post("/api/dostk/acnt", json={}, headers={
                "api-id": "kt00001", "authorization": f"Bearer {token.get_secret_value()}"})  # fmt: skip
            assert raw.status_code == 200  # another api-id has its own bucket
            with pytest.raises(RateLimitError):
                await client.request("ka00001", "/api/dostk/acnt", {}, token=bearer, key_id="k")
            again = await h.post("/api/dostk/acnt", json={}, headers={
                "api-id": "ka00001", "authorization": f"Bearer {token.get_secret_value()}"})  # fmt: skip
            assert again.status_code == status and again.json()["return_code"] == 5
    finally:
        await client.aclose()
        await h.aclose()
