"""Fault injection by path and api-id, with a probability, a seed and an optional count."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum


class FaultKind(StrEnum):
    LATENCY = "latency"
    HTTP_500 = "http_500"
    HTTP_429 = "http_429"
    DROP_AFTER_ACCEPT = "drop_after_accept"  # processed, but the client gets no answer (504)
    TOKEN_EXPIRY = "token_expiry"  # noqa: S105 - a fault name; the request's token expires first
    WS_DISCONNECT = "ws_disconnect"


@dataclass(slots=True)
class FaultRule:
    kind: FaultKind
    path: str = "*"
    api_id: str | None = None
    probability: float = 1.0
    count: int | None = None  # how many times at most
    latency_ms: int = 0
    fired: int = 0

    def matches(self, path: str, api_id: str | None) -> bool:
        if self.path != "*" and not path.startswith(self.path):
            return False
        return self.api_id is None or self.api_id == api_id


@dataclass(slots=True)
class FaultPlan:
    seed: int = 0
    rules: list[FaultRule] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    rng: random.Random = field(default_factory=random.Random)

    def reset(self, seed: int | None = None) -> None:
        self.rules.clear()
        if seed is not None:
            self.seed = seed
        self.rng = random.Random(self.seed)

    def add(self, rule: FaultRule, seed: int | None = None) -> None:
        if seed is not None:
            self.rng = random.Random(seed)
        self.rules.append(rule)

    def draw(self, path: str, api_id: str | None) -> list[FaultRule]:
        """The faults that fire for this request (each rule rolls its own die)."""
        fired = []
        for rule in self.rules:
            if not rule.matches(path, api_id):
                continue
            if rule.count is not None and rule.fired >= rule.count:
                continue
            if self.rng.random() < rule.probability:
                rule.fired += 1
                self.counts[rule.kind.value] += 1
                fired.append(rule)
        return fired
