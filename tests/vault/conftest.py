"""KMS providers for the vault tests: the local provider and AWS KMS through moto's server over HTTP."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from autotrade.store.db import Database
from autotrade.store.migrate import upgrade
from autotrade.vault.kms import AwsKms, KmsProvider, LocalKms


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def moto_kms_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(params=["local", "aws"])
def kms(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> KmsProvider:
    if request.param == "local":
        return LocalKms(tmp_path / "master.key")
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    url = request.getfixturevalue("moto_kms_url")
    client = boto3.client("kms", region_name="ap-northeast-2", endpoint_url=url)
    key_id = client.create_key(Description="autotrade test")["KeyMetadata"]["KeyId"]
    return AwsKms(key_id, region="ap-northeast-2", endpoint_url=url)


@pytest.fixture
def vault_db(db_url: str) -> Iterator[Database]:
    upgrade(db_url)
    db = Database(db_url)
    yield db
    db.dispose()
