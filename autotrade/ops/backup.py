"""Backups of the database that holds the sealed keys and the order ledger, and their restore.

Protocol:

1. The source is the configured database. PostgreSQL is dumped by ``pg_dump --format=custom`` (a consistent
   snapshot taken in one transaction while the product runs; only the schema of the URL's ``search_path``
   when it names one); SQLite is copied page by page through its online backup API (``Connection.backup``),
   which is consistent while writers keep writing, then checked with ``PRAGMA integrity_check``.
2. The file is named ``autotrade-<UTC time>.<pgdump|sqlite3>`` so names sort by age, and goes to the target:
   a folder, or ``s3://bucket/prefix`` (boto3; ``backup_s3_endpoint_url`` for an S3-compatible store).
3. Retention: of the target's backups, the ``keep`` newest stay and the older are deleted.
4. The local master key (``local_master_key_path``) is never written to the target, and a folder target that
   holds it is refused: whoever holds a database backup and that key holds every user's broker keys. Keep the
   key elsewhere (another machine, a secret manager, a separate bucket with its own credentials) or use AWS
   KMS, whose key never leaves KMS.
5. Restore goes into an EMPTY database only (no table there yet): PostgreSQL by ``pg_restore --no-owner
   --no-privileges --exit-on-error --single-transaction``, SQLite through the backup API again. A target that
   already holds tables is refused, so a mistyped URL cannot overwrite the live ledger.

Passwords reach ``pg_dump``/``pg_restore`` through ``PGPASSWORD`` in their environment, never on their
command line, and never appear in an error raised here.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

PREFIX = "autotrade-"
SUFFIXES = (".pgdump", ".sqlite3")
PG_DUMP = shutil.which("pg_dump") or "/usr/bin/pg_dump"
PG_RESTORE = shutil.which("pg_restore") or "/usr/bin/pg_restore"


class BackupError(RuntimeError):
    """A backup or restore that cannot or must not be done (the message holds no password)."""


@dataclass(frozen=True, slots=True)
class BackupResult:
    location: str  # the folder path or s3:// URL of the new backup
    size: int
    kept: list[str]  # names of the backups at the target after retention, newest first
    deleted: list[str]


def backup(
    database_url: str,
    target: str,
    *,
    keep: int,
    master_key_path: Path | None = None,
    s3_endpoint_url: str | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> BackupResult:
    """Back ``database_url`` up to ``target`` (folder or ``s3://bucket/prefix``); keep the newest ``keep``."""
    if keep < 1:
        raise BackupError("keep at least one backup")
    store = _store(target, s3_endpoint_url)
    if master_key_path is not None:
        store.refuse_holding(master_key_path)
    url = make_url(database_url)
    suffix = ".sqlite3" if url.get_backend_name() == "sqlite" else ".pgdump"
    name = f"{PREFIX}{now().astimezone(UTC):%Y%m%dT%H%M%S%fZ}{suffix}"
    with tempfile.TemporaryDirectory(prefix="autotrade-backup-") as work:
        local = Path(work) / name
        if suffix == ".sqlite3":
            _sqlite_copy(_sqlite_path(url), local)
            _check_sqlite(local)
        else:
            _run([PG_DUMP, "--format=custom", "--no-owner", "--no-privileges", *_pg_schema_args(url),
                  "--file", str(local), "--dbname", _conninfo(url)], url)  # fmt: skip
        size = local.stat().st_size
        location = store.put(local, name)
    names = store.names()
    kept, deleted = names[:keep], names[keep:]
    for old in deleted:
        store.delete(old)
    return BackupResult(location, size, kept, deleted)


def restore(source: str, database_url: str, *, s3_endpoint_url: str | None = None) -> str:
    """Restore the backup at ``source`` (a file, a folder or ``s3://`` prefix: its newest backup, or one
    ``s3://`` object) into the EMPTY database ``database_url``. Answers the name of the backup restored."""
    url = make_url(database_url)
    _refuse_non_empty(database_url)
    with tempfile.TemporaryDirectory(prefix="autotrade-restore-") as work:
        local = _fetch(source, Path(work), s3_endpoint_url)
        is_sqlite = url.get_backend_name() == "sqlite"
        if local.suffix != (".sqlite3" if is_sqlite else ".pgdump"):
            raise BackupError(f"{local.name} is not a backup of a {url.get_backend_name()} database")
        if is_sqlite:
            _check_sqlite(local)
            _sqlite_copy(local, _sqlite_path(url))
        else:
            _run([PG_RESTORE, "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction",
                  "--dbname", _conninfo(url), str(local)], url)  # fmt: skip
        return local.name


# -- stores -----------------------------------------------------------------------------------------------


class _Folder:
    def __init__(self, path: Path) -> None:
        self.path = path

    def refuse_holding(self, key: Path) -> None:
        here, key = self.path.resolve(), key.resolve()
        if key.is_relative_to(here) or key.parent == here:
            raise BackupError(
                f"the backup folder {here} holds the master key {key}: keep the key apart from the "
                "database backups (see the README's backup section)"
            )

    def put(self, local: Path, name: str) -> str:
        self.path.mkdir(parents=True, exist_ok=True)
        part = self.path / f".{name}.part"
        shutil.copyfile(local, part)
        part.replace(self.path / name)  # a backup appears whole or not at all
        return str(self.path / name)

    def names(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return sorted((p.name for p in self.path.iterdir() if _is_backup(p.name)), reverse=True)

    def delete(self, name: str) -> None:
        (self.path / name).unlink(missing_ok=True)

    def get(self, name: str, into: Path) -> Path:
        shutil.copyfile(self.path / name, into / name)
        return into / name


class _S3:
    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None) -> None:
        import boto3

        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.client: Any = boto3.client("s3", endpoint_url=endpoint_url)

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def refuse_holding(self, key: Path) -> None:
        return None  # the master key is a local file and is never uploaded

    def put(self, local: Path, name: str) -> str:
        self.client.upload_file(str(local), self.bucket, self._key(name))
        return f"s3://{self.bucket}/{self._key(name)}"

    def names(self) -> list[str]:
        out: list[str] = []
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else ""
        )
        for page in pages:
            for obj in page.get("Contents", []):
                name = str(obj["Key"]).rsplit("/", 1)[-1]
                if _is_backup(name) and self._key(name) == obj["Key"]:
                    out.append(name)
        return sorted(out, reverse=True)

    def delete(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(name))

    def get(self, name: str, into: Path) -> Path:
        self.client.download_file(self.bucket, self._key(name), str(into / name))
        return into / name


def _store(target: str, s3_endpoint_url: str | None) -> _Folder | _S3:
    if target.startswith("s3://"):
        bucket, _, prefix = target[5:].partition("/")
        if not bucket:
            raise BackupError("an S3 target is s3://bucket/prefix")
        return _S3(bucket, prefix, s3_endpoint_url)
    return _Folder(Path(target))


def _fetch(source: str, into: Path, s3_endpoint_url: str | None) -> Path:
    if source.startswith("s3://") and _is_backup(source.rsplit("/", 1)[-1]):
        location, _, name = source.rpartition("/")
        return _store(location, s3_endpoint_url).get(name, into)
    if not source.startswith("s3://") and Path(source).is_file():
        return Path(source)
    store = _store(source, s3_endpoint_url)
    names = store.names()
    if not names:
        raise BackupError(f"no backup at {source}")
    return store.get(names[0], into)


def _is_backup(name: str) -> bool:
    return name.startswith(PREFIX) and name.endswith(SUFFIXES)


# -- databases --------------------------------------------------------------------------------------------


def _sqlite_path(url: URL) -> Path:
    if not url.database or url.database == ":memory:":
        raise BackupError("an in-memory SQLite database has nothing to back up or restore into")
    return Path(url.database)


def _sqlite_copy(src: Path, dst: Path) -> None:
    if not src.is_file():
        raise BackupError(f"no SQLite database at {src}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    target = sqlite3.connect(dst)
    try:
        source.backup(target, pages=1024)  # in steps: writers are not held out for the whole copy
    finally:
        target.close()
        source.close()


def _check_sqlite(path: Path) -> None:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        (answer,) = conn.execute("PRAGMA integrity_check").fetchone()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path.name} is not a SQLite database: {exc}") from None
    finally:
        conn.close()
    if answer != "ok":
        raise BackupError(f"{path.name} fails SQLite's integrity check: {answer}")


def _refuse_non_empty(database_url: str) -> None:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        path = _sqlite_path(url)
        if not path.exists() or path.stat().st_size == 0:
            return
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            tables = sa.inspect(conn).get_table_names()
    finally:
        engine.dispose()
    if tables:
        raise BackupError(
            f"the target database already holds {len(tables)} tables: restore only into an empty database"
        )


def _pg_schema_args(url: URL) -> list[str]:
    """``--schema`` for a URL whose connection options set a search path (one schema per test run)."""
    options = str(url.query.get("options", ""))
    for part in options.split():
        if part.startswith("-csearch_path="):
            return [f"--schema={part.split('=', 1)[1].split(',')[0]}"]
    return []


def _conninfo(url: URL) -> str:
    """A libpq connection string without the password (that goes through the environment)."""
    parts = {"host": url.host, "port": url.port, "user": url.username, "dbname": url.database}
    options = url.query.get("options")
    if options:
        parts["options"] = str(options)
    return " ".join(f"{k}='{_quote(str(v))}'" for k, v in parts.items() if v not in (None, ""))


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _run(argv: list[str], url: URL) -> None:
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        message = done.stderr.strip()
        if url.password:
            message = message.replace(str(url.password), "***")
        raise BackupError(f"{Path(argv[0]).name} failed ({done.returncode}): {message[-2000:]}")
