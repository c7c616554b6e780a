"""Stop signals at any moment: SIGINT (Ctrl-C) and SIGTERM (kill, a cluster's preemption).

Every command installs the handler first thing, before anything heavy is imported. Until
training starts a signal stops the command at once; during training it is remembered instead:
the current step finishes, last.pt is saved and the loggers flushed (engine/train.py). Either way
the command ends with 130 (SIGINT) or 143 (SIGTERM) and one line, never a traceback. A second
signal while saving stops at once.

Torch-free, and a module of its own, so the command line can install it before torch loads.
"""

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Optional


class Interrupted(BaseException):
    """A stop signal arrived. A BaseException, like KeyboardInterrupt: no `except Exception` in a
    library (or in dlrun) can swallow it on its way out."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_code = 128 + signum


class StopRequest:
    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: Optional[int] = None
        self.deferring = False
        self._previous: dict[int, object] = {}

    def __bool__(self) -> bool:
        return self.signum is not None

    def install(self, extra: tuple[int, ...] = ()) -> "StopRequest":
        """Take over SIGINT and SIGTERM, and the `extra` signals (SIGUSR1 in a SLURM job), from the
        main thread; signals reach only it."""
        self.signum = None
        if threading.current_thread() is threading.main_thread() and not self._previous:
            for signum in (*self.SIGNALS, *extra):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """While training: remember a signal; the loop stops after the current step and saves."""
        if self.signum is not None:  # one arrived during start-up and something swallowed it
            raise Interrupted(self.signum)
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False

    def _handle(self, signum: int, frame) -> None:
        first = self.signum is None
        self.signum = self.signum or signum
        if self.deferring and first:
            return
        raise Interrupted(signum)


# the process's one stop request: the command line installs it, the training loop reads it
STOP = StopRequest()
