"""Console notifier: the embedded default, printing the plain-text rendering to a stream."""

from __future__ import annotations

import sys
from typing import TextIO

from autotrade.notify.base import Channel
from autotrade.notify.format import render_text
from autotrade.notify.model import Notification


class ConsoleNotifier:
    """Writes each notification as a block of text. ``to`` is only shown, there is nowhere to route."""

    channel = Channel.CONSOLE.value

    def __init__(self, stream: TextIO | None = None) -> None:
        # Resolved per call when None so pytest's capsys and redirected stdout both see the output.
        self._stream = stream

    def send(self, notification: Notification, to: str | None = None) -> None:
        stream = self._stream if self._stream is not None else sys.stdout
        target = notification.audience if to is None else f"{notification.audience} -> {to}"
        stream.write(
            f"── {notification.severity} {notification.kind} ({target})\n{render_text(notification)}\n"
        )
        stream.flush()
