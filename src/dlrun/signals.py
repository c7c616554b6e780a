"""SIGINT / SIGTERM: finish the current step, save, flush, then exit 130 / 143."""

import signal
import threading
from typing import Optional


class Interrupted(Exception):
    """Raised by the loop after it saved its state because a signal asked it to stop."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.exit_code = 128 + signum


class StopRequest:
    """Remembers a stop signal instead of dying in the middle of an optimizer step."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: Optional[int] = None
        self._previous: dict[int, object] = {}

    def __bool__(self) -> bool:
        return self.signum is not None

    def install(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():  # signals reach only it
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: the user does not want to wait
        self.signum = signum
