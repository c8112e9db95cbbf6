"""The operator API links every deployment of prefect.yaml by its Prefect name: flow name/deployment name."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

from autotrade.api.ops import DEPLOYMENTS

ROOT = Path(__file__).resolve().parents[2]


def _flow_name(entrypoint: str) -> str:
    path, attr = entrypoint.split(":")
    spec = importlib.util.spec_from_file_location(f"_entry_{attr}", ROOT / path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(getattr(module, attr).name)


def test_links_name_every_deployment() -> None:
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    expected = {(_flow_name(d["entrypoint"]), d["name"]) for d in config["deployments"]}
    assert set(DEPLOYMENTS) == expected
