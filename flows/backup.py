"""After the close: back the database up to the configured location and keep the newest backups."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task

from autotrade.runtime import get_runtime
from flows.common import notify_operator


@task(retries=2, retry_delay_seconds=60)
def back_up_database() -> dict[str, Any]:
    """One backup of the runtime's database (autotrade/ops/backup.py), then retention."""
    from autotrade.ops.backup import backup

    s = get_runtime().settings
    done = backup(
        s.database_url, s.backup_location, keep=s.backup_keep,
        master_key_path=s.local_master_key_path, s3_endpoint_url=s.backup_s3_endpoint_url,
    )  # fmt: skip
    return {"location": done.location, "bytes": done.size, "kept": len(done.kept), "deleted": done.deleted}


@flow(name="backup", on_failure=[notify_operator], on_crashed=[notify_operator])
def backup_flow() -> dict[str, Any]:
    """Every weekday after the close (holidays too: a backup costs little and the ledger may have changed)."""
    result = back_up_database()
    get_run_logger().info("backup %s: %s bytes, %s kept", result["location"], result["bytes"], result["kept"])
    return result
