"""Backups that restore, on SQLite and PostgreSQL: a day of trading backed up, restored into an empty
database with the same rows in every table, and the product carried on from the restored database: the
same evening run again places nothing twice at the broker, and the next morning re-arms every exit.
Retention keeps the newest N (in a folder and in S3 through moto's server), a folder that holds the master
key is refused, and a restore never writes over a database that already has tables."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from autotrade.access import GatewayAccess
from autotrade.demo.stack import embedded_stack
from autotrade.domain.exits import TierStatus
from autotrade.domain.krx import KST
from autotrade.domain.models import Side
from autotrade.ops.backup import BackupError, backup, restore
from autotrade.runtime import Runtime, set_runtime
from autotrade.store.db import Database
from autotrade.store.migrate import upgrade
from autotrade.store.models import ConditionalOrder, OrderIntentRow, ThreeTierStrategy
from flows.evening_signal_and_buy import evening_signal_and_buy
from flows.morning_fill_and_arm import morning_fill_and_arm
from tests.flows.conftest import DAY1, DAY2, evening_scan
from tests.ops.conftest import table_rows


async def test_backup_restores_into_an_empty_database_and_trading_carries_on(
    prefect_server: None, db_url: str, empty_db_url: str, tmp_path: Path
) -> None:
    start = datetime.combine(DAY1, time(15, 0), tzinfo=KST)
    with embedded_stack(tmp_path / "home", seed=5, stocks=12, start=start, database_url=db_url,
                        notifications=io.StringIO()) as stack:  # fmt: skip
        try:
            await stack.register_users(2)
            evening_scan(stack, DAY1)
            state = await evening_signal_and_buy(trading_day=DAY1, return_state=True)
            first = await state.result()
            assert state.is_completed() and first["orders"] > 0 and first["positions_armed"] > 0, first
            sent = len(stack.sim.engine.orders)
            assert sent == first["orders"]
            _scrape_after_the_evening(stack.db, first["orders"])

            folder = tmp_path / "backups"
            made = backup(db_url, str(folder), keep=3, master_key_path=stack.settings.local_master_key_path)
            assert made.size > 0 and made.deleted == [] and len(made.kept) == 1
            assert not list(folder.glob("*master*"))
            restore(str(folder), empty_db_url)

            before = table_rows(db_url)
            after = table_rows(empty_db_url)
            assert set(after) == set(before)
            for table, rows in before.items():
                assert after[table] == rows, table
            assert before["order_intents"] and before["user_api_keys"] and before["three_tier_strategies"]

            # The product on the restored database (the same simulator, the same master key).
            await stack.access.aclose()
            cfg = stack.settings.model_copy(update={"database_url": empty_db_url})
            db = Database(empty_db_url)
            clock = stack.sim.engine.read_clock
            access = GatewayAccess(cfg, db, clock=clock)
            set_runtime(Runtime(cfg, db, clock, access, time_control=stack.runtime.time))
            try:
                state = await evening_signal_and_buy(trading_day=DAY1, return_state=True)
                again = await state.result()
                assert state.is_completed(), state.message
                assert len(stack.sim.engine.orders) == sent, "the restored ledger sent an order twice"
                with db.unit_of_work() as s:
                    buys = s.scalar(
                        sa.select(sa.func.count(OrderIntentRow.id)).where(OrderIntentRow.side == Side.BUY)
                    )
                assert buys == first["orders"] and again["accounts_with_errors"] == 0

                stack.at(DAY2, time(9, 5))
                state = await morning_fill_and_arm(trading_day=DAY2, return_state=True)
                morning = await state.result()
                assert state.is_completed(), state.message
                with db.unit_of_work() as s:
                    strategies = s.scalar(sa.select(sa.func.count(ThreeTierStrategy.id))) or 0
                    live_stops = s.scalar(
                        sa.select(sa.func.count(ConditionalOrder.id)).where(
                            ConditionalOrder.order_type == "STOP_LOSS",
                            ConditionalOrder.status == TierStatus.ACTIVE,
                        )
                    )
                assert morning["armed"] == strategies == first["positions_armed"] == live_stops
            finally:
                await access.aclose()
                db.dispose()
        finally:
            await stack.access.aclose()


def _scrape_after_the_evening(db: Database, orders: int) -> None:
    """/metrics' ledger figures after a simulated evening, parsed, against the ledger counted here."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from autotrade.ops.metrics import LedgerCollector
    from autotrade.store.models import FillRow

    registry = CollectorRegistry()
    registry.register(LedgerCollector(db, lambda: DAY1))
    text = generate_latest(registry).decode()
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    buys = sum(s.value for s in samples if s.name == "autotrade_orders" and s.labels["side"] == "BUY")
    with db.unit_of_work() as s:
        fills = s.scalar(sa.select(sa.func.count(FillRow.id)))
        filled = s.scalar(sa.select(sa.func.sum(OrderIntentRow.filled_quantity))) or 0
        ordered = s.scalar(sa.select(sa.func.sum(OrderIntentRow.quantity))) or 0
    value = {s.name: s.value for s in samples if not s.labels}
    assert buys == orders and value["autotrade_fills"] == fills > 0
    assert value["autotrade_fill_rate"] == pytest.approx(filled / ordered)


def _sqlite_with_rows(path: Path, users: int) -> str:
    url = f"sqlite:///{path}"
    upgrade(url)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for i in range(users):
            conn.execute(sa.text("INSERT INTO users (user_id, role, has_api_key, auto_trading_enabled, "
                                 "notify_channels, created_at, updated_at) VALUES (:u, 'user', 0, 0, "
                                 "'console', '2026-11-18', '2026-11-18')"), {"u": f"u{i}"})  # fmt: skip
    engine.dispose()
    return url


def _clock(first: datetime) -> Iterator[datetime]:
    n = 0
    while True:
        yield first + timedelta(days=n)
        n += 1


def test_retention_keeps_the_newest_and_restore_takes_the_newest(tmp_path: Path) -> None:
    url = _sqlite_with_rows(tmp_path / "live.db", 3)
    times = _clock(datetime(2026, 11, 18, 7, 30, tzinfo=UTC))
    folder = tmp_path / "backups"
    results = [backup(url, str(folder), keep=2, now=lambda: next(times)) for _ in range(4)]
    # Four backups on 11-18, 11-19, 11-20, 11-21 with keep=2: the two of 11-20 and 11-21 stay.
    assert sorted(p.name for p in folder.iterdir()) == [
        "autotrade-20261120T073000000000Z.sqlite3", "autotrade-20261121T073000000000Z.sqlite3",
    ]  # fmt: skip
    assert results[2].deleted == ["autotrade-20261118T073000000000Z.sqlite3"]
    assert results[3].deleted == ["autotrade-20261119T073000000000Z.sqlite3"]

    # A user added after the third backup is in the newest only: restoring the folder restores the newest.
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM users WHERE user_id = 'u0'"))
    engine.dispose()
    backup(url, str(folder), keep=2, now=lambda: datetime(2026, 11, 22, tzinfo=UTC))
    target = f"sqlite:///{tmp_path / 'restored.db'}"
    assert restore(str(folder), target) == "autotrade-20261122T000000000000Z.sqlite3"
    assert [r[0] for r in table_rows(target)["users"]] == ["u1", "u2"]


def test_a_folder_holding_the_master_key_is_refused(tmp_path: Path) -> None:
    url = _sqlite_with_rows(tmp_path / "live.db", 1)
    key = tmp_path / "var" / "master.key"
    key.parent.mkdir()
    key.write_bytes(b"k" * 32)
    with pytest.raises(BackupError, match="holds the master key"):
        backup(url, str(tmp_path / "var"), keep=2, master_key_path=key)
    with pytest.raises(BackupError, match="holds the master key"):
        backup(url, str(tmp_path), keep=2, master_key_path=key)  # a parent folder holds it too
    assert not list((tmp_path / "var").glob("autotrade-*"))
    made = backup(url, str(tmp_path / "elsewhere"), keep=2, master_key_path=key)
    assert Path(made.location).parent == tmp_path / "elsewhere"


def test_restore_refuses_a_database_that_has_tables(tmp_path: Path) -> None:
    url = _sqlite_with_rows(tmp_path / "live.db", 2)
    made = backup(url, str(tmp_path / "backups"), keep=2)
    other = _sqlite_with_rows(tmp_path / "other.db", 1)
    with pytest.raises(BackupError, match="restore only into an empty database"):
        restore(made.location, other)
    assert [r[0] for r in table_rows(other)["users"]] == ["u0"]


@pytest.fixture(scope="module")
def moto_s3_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def test_backup_to_s3_keeps_the_newest_and_restores(
    tmp_path: Path, moto_s3_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():  # fmt: skip
        monkeypatch.setenv(k, v)
    s3 = boto3.client("s3", endpoint_url=moto_s3_url)
    s3.create_bucket(Bucket="ops")
    s3.put_object(Bucket="ops", Key="db/notes.txt", Body=b"not a backup")
    url = _sqlite_with_rows(tmp_path / "live.db", 2)
    days = iter([datetime(2026, 11, d, 8, tzinfo=UTC) for d in (18, 19, 20)])
    for _ in range(3):
        made = backup(url, "s3://ops/db", keep=2, s3_endpoint_url=moto_s3_url, now=lambda: next(days))
    assert made.location == "s3://ops/db/autotrade-20261120T080000000000Z.sqlite3"
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="ops")["Contents"])
    assert keys == [
        "db/autotrade-20261119T080000000000Z.sqlite3", "db/autotrade-20261120T080000000000Z.sqlite3",
        "db/notes.txt",
    ]  # fmt: skip
    target = f"sqlite:///{tmp_path / 'restored.db'}"
    restore("s3://ops/db", target, s3_endpoint_url=moto_s3_url)
    assert table_rows(target) == table_rows(url)


def test_the_cli_backs_up_and_restores_with_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from autotrade.cli import app
    from autotrade.config import get_settings

    url = _sqlite_with_rows(tmp_path / "live.db", 2)
    monkeypatch.setenv("AUTOTRADE_DATABASE_URL", url)
    monkeypatch.setenv("AUTOTRADE_BACKUP_LOCATION", str(tmp_path / "backups"))
    monkeypatch.setenv("AUTOTRADE_LOCAL_MASTER_KEY_PATH", str(tmp_path / "keys" / "master.key"))
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        done = runner.invoke(app, ["backup", "--keep", "1"])
        assert done.exit_code == 0, done.output
        assert "kept 1, deleted 0" in done.output
        target = f"sqlite:///{tmp_path / 'restored.db'}"
        done = runner.invoke(app, ["restore", str(tmp_path / "backups"), "--url", target])
        assert done.exit_code == 0, done.output
        assert table_rows(target) == table_rows(url)
        again = runner.invoke(app, ["restore", str(tmp_path / "backups"), "--url", target])
        assert again.exit_code == 1 and "restore only into an empty database" in again.output
        refused = runner.invoke(app, ["backup", "--to", str(tmp_path / "keys")])
        assert refused.exit_code == 1 and "holds the master key" in refused.output
    finally:
        get_settings.cache_clear()


def test_the_backup_flow_backs_up_the_runtime_database(prefect_server: None, tmp_path: Path) -> None:
    from autotrade.config import Settings
    from autotrade.runtime import build_runtime
    from flows.backup import backup_flow

    url = _sqlite_with_rows(tmp_path / "live.db", 1)
    cfg = Settings(database_url=url, backup_location=str(tmp_path / "backups"), backup_keep=1,
                   local_master_key_path=tmp_path / "keys" / "master.key", data_dir=tmp_path)  # fmt: skip
    set_runtime(build_runtime(cfg))
    try:
        first = backup_flow()
        second = backup_flow()
    finally:
        set_runtime(None)
    assert first["kept"] == second["kept"] == 1 and second["deleted"] == [Path(first["location"]).name]
    assert [p.name for p in (tmp_path / "backups").iterdir()] == [Path(second["location"]).name]


@pytest.mark.postgres
def test_a_whole_postgresql_database_restores_into_a_new_one(pg_url: str, tmp_path: Path) -> None:
    """Production's shape: the product in a database's public schema, restored into a new database."""
    import uuid

    from tests.conftest import PG_ADMIN_URL

    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    names = [f"ops_{role}_{uuid.uuid4().hex[:8]}" for role in ("live", "restored")]
    with admin.connect() as conn:
        for name in names:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    base = sa.engine.make_url(PG_ADMIN_URL)
    live, restored = (base.set(database=n).render_as_string(hide_password=False) for n in names)
    try:
        upgrade(live)
        engine = sa.create_engine(live)
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO users (user_id, role, has_api_key, auto_trading_enabled, "
                                 "notify_channels, created_at, updated_at) "
                                 "VALUES ('u0', 'user', false, false, 'console', now(), now())"))  # fmt: skip
        engine.dispose()
        made = backup(live, str(tmp_path / "backups"), keep=1)
        assert made.location.endswith(".pgdump")
        restore(str(tmp_path / "backups"), restored)
        assert table_rows(restored) == table_rows(live)
        with pytest.raises(BackupError, match="restore only into an empty database"):
            restore(str(tmp_path / "backups"), restored)
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                     "WHERE datname = :n AND pid <> pg_backend_pid()"),
                             {"n": name})  # fmt: skip
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()
