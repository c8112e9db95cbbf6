"""The one command-line entry point: ``autotrade``."""

from __future__ import annotations

from typing import Any

import typer

from autotrade.backtest.cli import backtest_app
from autotrade.config import get_settings
from autotrade.demo.cli import demo
from autotrade.sim.cli import sim_app

app = typer.Typer(
    name="autotrade",
    help="Multi-user auto-trading for Korean equities: AI scan -> Kiwoom orders -> three-tier exits.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold secrets
)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.command("demo")(demo)
app.add_typer(backtest_app, name="backtest")
app.add_typer(sim_app, name="sim")
api_app = typer.Typer(help="The HTTP API (users, keys, execution, strategies).", no_args_is_help=True)
app.add_typer(api_app, name="api")
admin_app = typer.Typer(help="Operator commands (keys, security).", no_args_is_help=True)
app.add_typer(admin_app, name="admin")
blocks_app = typer.Typer(
    help="Prefect blocks: the configuration every run reads (PREFECT_API_URL must name the server).",
    no_args_is_help=True,
)
app.add_typer(blocks_app, name="blocks")


@blocks_app.command("register")
def blocks_register() -> None:
    """Register the block types (broker, vault, notifiers, database) with the Prefect server."""
    from blocks.autotrade_blocks import BLOCK_TYPES, register_block_types

    register_block_types()
    typer.echo("registered: " + ", ".join(t.get_block_type_name() for t in BLOCK_TYPES))


@blocks_app.command("save-defaults")
def blocks_save_defaults(
    overwrite: bool = typer.Option(False, help="Replace blocks that exist (default: keep them)."),
) -> None:
    """Write the blocks from the current settings (environment and .env); secrets go in as secret fields."""
    from blocks.autotrade_blocks import register_block_types, save_embedded_defaults

    register_block_types()
    saved = save_embedded_defaults(get_settings(), overwrite=overwrite)
    typer.echo(f"saved: {', '.join(saved) or 'nothing (every block exists; --overwrite replaces them)'}")


@api_app.command("serve")
def api_serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, min=1, max=65535),
) -> None:
    """Serve the API with the configured database, vault and broker (embedded defaults: SQLite, the local
    KMS provider, the simulator). OpenAPI document at /docs and /openapi.json."""
    import uvicorn

    from autotrade.api.app import create_app
    from autotrade.api.service import build_deps
    from autotrade.api.web import web_dir
    from autotrade.runtime import get_runtime
    from autotrade.store.migrate import upgrade

    _quiet_and_stoppable_prefect()
    rt = get_runtime()
    upgrade(rt.db.url)  # the schema at head before the first request (a no-op when it already is)
    typer.echo(f"autotrade API on http://{host}:{port} (docs at /docs); database {_safe_url(rt.db.url)}")
    typer.echo(f"web app on http://{host}:{port}/" if (web_dir() / "index.html").is_file()
               else "web app not built: run `make install` (needs Node.js 18+)")  # fmt: skip
    uvicorn.run(create_app(build_deps(rt)), host=host, port=port, log_level="info")


def _admin_db() -> Any:
    from autotrade.store.db import Database
    from autotrade.store.migrate import upgrade

    url = get_settings().database_url
    upgrade(url)
    return Database(url)


def _admin_run(fn: Any, *args: Any) -> Any:
    from autotrade.api.users import UserError

    db = _admin_db()
    try:
        return fn(db, *args)
    except UserError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    finally:
        db.dispose()


@admin_app.command("create-operator")
def admin_create_operator(
    email: str = typer.Argument(..., help="The operator's email (the login name)."),
    password: str = typer.Option(..., prompt=True, hide_input=True, confirmation_prompt=True,
                                 envvar="AUTOTRADE_ADMIN_PASSWORD", help="At least 10 characters."),
) -> None:  # fmt: skip
    """Create a user with the operator role."""
    from autotrade.api.users import create_operator

    typer.echo(f"operator {email} created: {_admin_run(create_operator, email, password)}")


@admin_app.command("grant-operator")
def admin_grant_operator(email: str = typer.Argument(..., help="An existing user's email.")) -> None:
    """Give an existing user the operator role (their next request, or within 5 s, sees it)."""
    from autotrade.api.users import set_role

    before = _admin_run(set_role, email, "operator")
    typer.echo(f"{email}: {before} -> operator")


@admin_app.command("revoke-operator")
def admin_revoke_operator(email: str = typer.Argument(..., help="An operator's email.")) -> None:
    """Take the operator role back: the user's tokens lose operator access within 5 s."""
    from autotrade.api.users import set_role

    before = _admin_run(set_role, email, "user")
    typer.echo(f"{email}: {before} -> user")


@admin_app.command("users")
def admin_users() -> None:
    """List users: email, role, user id and their keys with status."""
    from autotrade.api.users import list_users

    for u in _admin_run(list_users):
        typer.echo(f"{u.email or '-'}\t{u.role}\t{u.user_id}\t{u.keys or '-'}")


def _quiet_and_stoppable_prefect() -> None:
    """Telemetry off for the embedded Prefect server this process may start (the execute endpoint runs
    flows in-process), and that server stopped with the API: uvicorn re-raises SIGTERM after its graceful
    shutdown, which would kill this process before ``atexit`` stops the server subprocess."""
    import os
    import signal
    import sys

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")

    def stop(signum: int, _frame: Any) -> None:
        try:
            from prefect.server.api.server import SubprocessASGIServer

            for server in list(SubprocessASGIServer._instances.values()):
                server.stop()
        finally:
            sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


@admin_app.command("enable-key")
def admin_enable_key(
    user: str = typer.Argument(..., help="The user id of the key."),
    account: str = typer.Argument(..., help="The account number of the key."),
    by: str = typer.Option("cli", help="The operator's name, recorded in the security event."),
) -> None:
    """Re-enable a key the kill switch DISABLED (after the finding is understood): ACTIVE again, the user
    told; auto-trading stays off until the user turns it back on. A DELETED key cannot come back."""
    from autotrade.api.service import reenable
    from autotrade.runtime import get_runtime

    rt = get_runtime()
    status = reenable(rt, user, account, by)
    flush = getattr(rt.notifier, "flush", None)
    if flush is not None:
        flush()  # the notices go out before the command ends
    if status is None:
        typer.echo(f"no key for user {user} and account {account}", err=True)
        raise typer.Exit(1)
    if status.value != "ACTIVE":
        typer.echo(f"key is {status.value}; only a DISABLED key is re-enabled", err=True)
        raise typer.Exit(1)
    typer.echo(f"key of {user} / {account} is ACTIVE")


@app.command("backup")
def backup_cmd(
    to: str = typer.Option(None, help="A folder or s3://bucket/prefix (default: AUTOTRADE_BACKUP_LOCATION)."),
    keep: int = typer.Option(None, min=1, help="Backups kept there, newest first (default: backup_keep)."),
    url: str = typer.Option(None, help="Database URL (default: AUTOTRADE_DATABASE_URL / settings)."),
) -> None:
    """Back the database up (PostgreSQL: pg_dump custom format; SQLite: its online backup API) and delete
    the backups beyond the newest ``keep``. Refuses a folder that holds the master key."""
    from autotrade.ops.backup import BackupError, backup

    s = get_settings()
    try:
        done = backup(
            url or s.database_url, to or s.backup_location, keep=keep or s.backup_keep,
            master_key_path=s.local_master_key_path, s3_endpoint_url=s.backup_s3_endpoint_url,
        )  # fmt: skip
    except BackupError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"backup {done.location} ({done.size:,} bytes); kept {len(done.kept)}, deleted {len(done.deleted)}"
    )


@app.command("restore")
def restore_cmd(
    source: str = typer.Argument(..., help="A backup file, a folder or s3:// prefix (its newest backup)."),
    url: str = typer.Option(None, help="The EMPTY database to restore into (default: settings)."),
) -> None:
    """Restore a backup into an empty database (a database that has tables is refused). The sealed keys
    need the same master key (local provider) or KMS key as when they were sealed."""
    from autotrade.ops.backup import BackupError, restore

    s = get_settings()
    target = url or s.database_url
    try:
        name = restore(source, target, s3_endpoint_url=s.backup_s3_endpoint_url)
    except BackupError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"restored {name} into {_safe_url(target)}")


@app.command("incident")
def incident_cmd(
    account: str = typer.Argument(..., help="The account number."),
    since: str = typer.Option(..., help="ISO time, e.g. 2026-11-19T09:00 (no offset: Seoul time)."),
    json_path: str = typer.Option(None, "--json", help="Also write the report as JSON to this file."),
    url: str = typer.Option(None, help="Database URL (default: AUTOTRADE_DATABASE_URL / settings)."),
) -> None:
    """Incident report of one account since a time, from the database alone: gateway requests, refusals,
    kill-switch decisions, orders, fills, trades and the money at risk; Markdown on stdout."""
    import json
    from datetime import datetime
    from pathlib import Path

    from autotrade.report.incident import UnknownAccount, as_json, incident_report, markdown
    from autotrade.store.db import Database

    try:
        moment = datetime.fromisoformat(since)
    except ValueError:
        typer.echo(f"--since is not an ISO time: {since!r}", err=True)
        raise typer.Exit(2) from None
    db = Database(url or get_settings().database_url)
    try:
        report = incident_report(db, account, moment)
    except UnknownAccount:
        typer.echo(f"no account {account}", err=True)
        raise typer.Exit(1) from None
    finally:
        db.dispose()
    if json_path:
        text = json.dumps(as_json(report), ensure_ascii=False, indent=1)
        Path(json_path).write_text(text, encoding="utf-8")
    typer.echo(markdown(report))


@db_app.command("upgrade")
def db_upgrade(
    url: str = typer.Option(None, help="Database URL (default: AUTOTRADE_DATABASE_URL / settings)."),
    revision: str = typer.Option("head"),
) -> None:
    """Create or migrate the schema to ``revision`` (the database block's, when a Prefect API is set)."""
    from autotrade.runtime import configured_settings
    from autotrade.store.migrate import upgrade

    target = url or configured_settings().database_url
    upgrade(target, revision)
    typer.echo(f"schema at {revision}: {_safe_url(target)}")


@db_app.command("downgrade")
def db_downgrade(
    url: str = typer.Option(None, help="Database URL (default: AUTOTRADE_DATABASE_URL / settings)."),
    revision: str = typer.Option("base"),
) -> None:
    """Roll the schema back to ``revision`` (``base`` drops every table)."""
    from autotrade.store.migrate import downgrade

    target = url or get_settings().database_url
    downgrade(target, revision)
    typer.echo(f"schema at {revision}: {_safe_url(target)}")


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def main() -> None:
    from autotrade.ops.logs import configure_logging

    configure_logging(get_settings().log_format)  # AUTOTRADE_LOG_FORMAT=json: one JSON object a line
    app()


if __name__ == "__main__":
    main()
