"""The vault's own AWS credentials (settings ``kms_aws_*``, filled from the vault block) reach the KMS client:
with nothing in the environment, KMS answers only when they are set (moto's server over HTTP)."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from pydantic import SecretStr

from autotrade.access import build_kms
from autotrade.config import KmsProvider, Settings
from autotrade.vault.kms import KmsError


@pytest.fixture
def no_ambient_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No credentials anywhere boto3 looks: environment, profile files, instance metadata."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def _key(url: str) -> str:
    client = boto3.client(
        "kms", region_name="ap-northeast-2", endpoint_url=url,
        aws_access_key_id="AKIASETUP", aws_secret_access_key="setup",
    )  # fmt: skip
    return str(client.create_key(Description="vault credentials")["KeyMetadata"]["KeyId"])


def _settings(url: str, key_id: str, tmp_path: Path, **creds: SecretStr) -> Settings:
    return Settings(
        kms_provider=KmsProvider.AWS, kms_key_id=key_id, kms_endpoint_url=url, data_dir=tmp_path, **creds
    )


def test_the_vault_credentials_reach_kms(
    no_ambient_credentials: None, moto_kms_url: str, tmp_path: Path
) -> None:
    key_id = _key(moto_kms_url)
    context = {"user_id": "kim"}
    bare = build_kms(_settings(moto_kms_url, key_id, tmp_path))
    with pytest.raises(KmsError):
        bare.generate_data_key(context)  # boto3 finds no credentials
    creds = {
        "kms_aws_access_key_id": SecretStr("AKIAVAULTBLOCK"),
        "kms_aws_secret_access_key": SecretStr("vault-secret"),
    }
    kms = build_kms(_settings(moto_kms_url, key_id, tmp_path, **creds))
    key = kms.generate_data_key(context)
    assert kms.decrypt(key.ciphertext, context) == key.plaintext


def test_half_a_credential_is_refused(tmp_path: Path) -> None:
    settings = Settings(
        kms_provider=KmsProvider.AWS, data_dir=tmp_path, kms_aws_access_key_id=SecretStr("AKIAONLYHALF")
    )
    with pytest.raises(ValueError, match="together, or neither"):
        build_kms(settings)
