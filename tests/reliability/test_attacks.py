"""The attacks of ``attacks.py`` in the suite, on SQLite and PostgreSQL: every kind is tried, the refusals
give the expected reasons, the kill switch acts within the minute, and no attack gets through."""

from __future__ import annotations

from pathlib import Path

from tests.reliability.attacks import KINDS, run_attacks


async def test_every_attack_is_refused(db_url: str, tmp_path: Path) -> None:
    r = await run_attacks(db_url=db_url, work=tmp_path, seed=7)
    tried, succeeded = r["attacks_tried"], r["attacks_succeeded"]
    assert succeeded == dict.fromkeys(KINDS, 0), "\n".join(r["details"])
    assert all(tried[k] >= 3 for k in KINDS), tried
    assert r["attacks_total_tried"] == sum(tried.values()) > 500
    assert r["secrets_checked"] >= 50

    reasons = r["refusals"]

    def refused_with(kind: str, text: str) -> bool:
        return any(text in reason for reason in reasons.get(kind, {}))

    assert refused_with("gateway_expired_token", "temporary token expired")
    assert refused_with("gateway_revoked_token", "temporary token revoked")
    assert set(reasons["gateway_tampered_token"]) == {"temporary token invalid"}
    assert refused_with("gateway_cross_user", "key is not registered")
    for action in ("order:buy", "order:sell", "order:cancel", "account:read"):
        assert refused_with("gateway_scope", f"token does not allow {action}")
    assert refused_with("gateway_spend_limits", "exceeds the token's cap")
    assert refused_with("gateway_spend_limits", "exceeds the daily limit")
    assert refused_with("gateway_replay", "temporary token revoked")
    assert refused_with("gateway_replay", "key is DELETED")
    assert refused_with("gateway_replay", "temporary token issued for an earlier key")
    assert refused_with("gateway_kill_switch", "blocked by security rule burst")
    for rule in ("unknown_origin", "off_hours"):  # a buy held back, the key left ACTIVE
        assert refused_with("gateway_kill_switch", f"held: blocked by security rule {rule}")
    assert set(reasons["api_bad_session_token"]) <= {"HTTP 401", "HTTP 400", "HTTP 431"}
    assert set(reasons["api_operator_only"]) == {"HTTP 403"}
    assert "HTTP 404" in reasons["api_cross_user"]
    # A broken body is refused with a 4xx. The one 2xx allowed: junk text (markup, SQL, a path) in a free
    # text field, which is data to store safely, not a malformed request; too-long text, huge numbers,
    # wrong types, missing fields, bad JSON and unpaired surrogates are all refused.
    accepted = r["api_bodies_accepted"]
    assert set(accepted) <= {"odd_text"}, accepted
    answers = reasons["api_malformed_body"]
    assert not [s for s in answers if not s.startswith(("HTTP 2", "HTTP 4"))], answers
    assert sum(n for s, n in answers.items() if s.startswith("HTTP 2")) == sum(accepted.values()), answers
    assert refused_with("scan_bad_values", "unsafe_text") and refused_with("scan_bad_values", "unique")
    assert refused_with("scan_unreadable", "ScanFormatError")
    assert refused_with("scan_stale", "trading_day") and refused_with("scan_stale", "fresh")

    assert r["kill_switch_seconds"] < 60, r["kill_switch_by_rule"]
    assert set(r["kill_switch_by_rule"]) == {"burst", "repeated_failures", "limit_breach"}
    assert r["attacks_total_succeeded"] == 0, "\n".join(r["details"])
    assert r["details"] == []
