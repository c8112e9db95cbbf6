"""Envelope encryption through both KMS providers: context binding, rotation, crypto-shredding, tokens."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from autotrade.domain.models import ApiStatus
from autotrade.store.db import Database
from autotrade.store.models import UserApiKey
from autotrade.vault.keys import KeyStore, KeyUnavailable, context
from autotrade.vault.kms import KmsError, KmsProvider, LocalKms, open_sealed
from autotrade.vault.tokens import TemporaryTokens, TokenRejected

APP_KEY = SecretStr("PSa1b2c3d4e5f6-app-key-known")
APP_SECRET = SecretStr("s3cr3t-known-app-secret-value-0123456789")


def test_data_key_is_bound_to_its_context(kms: KmsProvider) -> None:
    dk = kms.generate_data_key(context("u1", "11111111"))
    assert kms.decrypt(dk.ciphertext, context("u1", "11111111")) == dk.plaintext
    with pytest.raises(KmsError):
        kms.decrypt(dk.ciphertext, context("u2", "11111111"))
    with pytest.raises(KmsError):
        kms.decrypt(dk.ciphertext, context("u1", "22222222"))
    assert kms.calls["GenerateDataKey"] == 1 and kms.calls["Decrypt"] == 3


def test_local_master_key_file_is_private(tmp_path: Path) -> None:
    LocalKms(tmp_path / "keys" / "master.key")
    mode = stat.S_IMODE(os.stat(tmp_path / "keys" / "master.key").st_mode)
    assert mode == 0o600


def test_store_open_rotate_and_shred(kms: KmsProvider, vault_db: Database) -> None:
    keys = KeyStore(vault_db, kms)
    keys.store("u1", "11111111", APP_KEY, APP_SECRET, account_name="홍길동", daily_limit=5_000_000)
    with vault_db.unit_of_work() as s:
        row = s.scalar(sa.select(UserApiKey))
        assert row is not None
        stored = " ".join([row.app_key_encrypted, row.app_secret_encrypted, row.encrypted_data_key or ""])
    assert APP_KEY.get_secret_value() not in stored and APP_SECRET.get_secret_value() not in stored
    creds = keys.credentials("u1", "11111111")
    assert creds.app_key.get_secret_value() == APP_KEY.get_secret_value()
    assert creds.app_secret.get_secret_value() == APP_SECRET.get_secret_value()
    # Rotation of the KMS key re-wraps the data key; the sealed values stay and still open.
    keys.rewrap("u1", "11111111")
    assert keys.credentials("u1", "11111111").app_key.get_secret_value() == APP_KEY.get_secret_value()
    # Crypto-shredding: with the data key gone nothing can open the sealed values.
    with vault_db.unit_of_work() as s:
        row = s.scalar(sa.select(UserApiKey))
        assert row is not None
        sealed_key = row.app_key_encrypted
    keys.destroy("u1", "11111111")
    with pytest.raises(KeyUnavailable):
        keys.credentials_any_status("u1", "11111111")
    with vault_db.unit_of_work() as s:
        row = s.scalar(sa.select(UserApiKey))
        assert row is not None and row.encrypted_data_key is None and row.api_status is ApiStatus.DELETED
    other = kms.generate_data_key(
        context("u1", "11111111")
    ).plaintext  # even a fresh key for the same context
    with pytest.raises(KmsError):
        open_sealed(other, sealed_key, b"app_key|u1|11111111")


def test_disabled_key_does_not_decrypt_for_use(kms: KmsProvider, vault_db: Database) -> None:
    keys = KeyStore(vault_db, kms)
    keys.store("u1", "11111111", APP_KEY, APP_SECRET, account_name=None, daily_limit=1_000_000)
    keys.set_status("u1", "11111111", ApiStatus.DISABLED)
    with pytest.raises(KeyUnavailable):
        keys.credentials("u1", "11111111")
    assert (
        keys.credentials_any_status("u1", "11111111").app_key.get_secret_value() == APP_KEY.get_secret_value()
    )


def test_sealed_value_does_not_open_in_another_row(kms: KmsProvider, vault_db: Database) -> None:
    """A sealed app key copied onto another user's row does not open there (the AAD names the owner)."""
    keys = KeyStore(vault_db, kms)
    keys.store("u1", "11111111", APP_KEY, APP_SECRET, account_name=None, daily_limit=1_000_000)
    keys.store("u2", "22222222", SecretStr("other-app-key-123"), SecretStr("other-secret-456"),
               account_name=None, daily_limit=1_000_000)  # fmt: skip
    with vault_db.unit_of_work() as s:
        a = s.scalar(sa.select(UserApiKey).where(UserApiKey.user_id == "u1"))
        b = s.scalar(sa.select(UserApiKey).where(UserApiKey.user_id == "u2"))
        assert a is not None and b is not None
        b.app_key_encrypted = a.app_key_encrypted
    with pytest.raises(KeyUnavailable):
        keys.credentials("u2", "22222222")


def test_temporary_tokens_scope_expiry_revocation(vault_db: Database) -> None:
    tokens = TemporaryTokens(vault_db, b"k" * 32, timedelta(minutes=5))
    now = datetime(2026, 11, 25, 6, 0, tzinfo=UTC)
    t = tokens.issue("u1", "11111111", {"account:read", "order:sell"}, spend_cap=None, now=now)
    claims = tokens.verify(t, now=now + timedelta(minutes=4))
    assert (claims.user_id, claims.account_no) == ("u1", "11111111")
    assert claims.actions == {"account:read", "order:sell"}
    with pytest.raises(TokenRejected, match="expired"):
        tokens.verify(t, now=now + timedelta(minutes=5, seconds=1))
    with pytest.raises(TokenRejected, match="invalid"):
        TemporaryTokens(vault_db, b"x" * 32).verify(t, now=now)
    with pytest.raises(TokenRejected, match="invalid"):
        tokens.verify(t[:-3] + "abc", now=now)
    tokens.revoke(t, "test")
    with pytest.raises(TokenRejected, match="revoked"):
        tokens.verify(t, now=now)
    with pytest.raises(ValueError):
        tokens.issue("u1", "11111111", {"order:everything"})
