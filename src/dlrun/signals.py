"""Stop signals at any moment: SIGINT (Ctrl-C) and SIGTERM (kill, a cluster's preemption).

Every command installs the handler first thing, before anything heavy is imported. Until
training starts a signal stops the command at once; during training it is remembered instead:
the current step finishes, last.pt is saved and the loggers flushed (engine/train.py). Either way
the command ends with 130 (SIGINT) or 143 (SIGTERM) and one line, never a traceback. A second
signal while saving stops at once; one after that, or once the command has said its last line
(while Python shuts down: threads joined, atexit hooks flushing writers and joining DataLoader
workers), ends the process at once with the same code.

Torch-free, and a module of its own, so the command line can install it before torch loads.
"""

import contextlib
import os
import signal
import sys
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
        self.stopping = False  # an Interrupted is on its way out: a further signal leaves at once
        self.said = False  # the command's last line is out
        # the command-line program this process runs (dlrun-eval...): only it leaves at once on a
        # further signal; a sweep's or SLURM's job hands its end to its launcher (submitit
        # requeues after the signal), as before
        self.command: Optional[str] = None
        self.own_process = True  # False where a test calls the command in its own process

    def __bool__(self) -> bool:
        return self.signum is not None

    def install(self, extra: tuple[int, ...] = (), command: Optional[str] = None) -> "StopRequest":
        """Take over SIGINT and SIGTERM, and the `extra` signals (SIGUSR2 in a SLURM job), from the
        main thread; signals reach only it. `command`: the program, where this process runs one."""
        self.signum, self.stopping, self.said, self.command = None, False, False, command
        if threading.current_thread() is threading.main_thread() and not self._previous:
            for signum in (*self.SIGNALS, *extra):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def wind_down(self) -> None:
        """The command has ended. In a process of its own, a stop signal from now on ends it with
        its code: Python's own handler would raise KeyboardInterrupt inside whatever shuts down
        (a thread join, a library's atexit hook) and print a traceback under the last line."""
        if not self.own_process or not self._previous:
            self.restore()
            return
        for signum in self._previous:
            signal.signal(signum, self.leave)
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
        if self.stopping and self.own_process and self.command:
            self.leave(self.signum)
        self.stopping = True
        raise Interrupted(signum)

    def leave(self, signum: int, frame=None) -> None:
        """End the process now, with the signal's code, and its line if the command has not said
        its last one yet (a signal that lands while the first one is still unwinding)."""
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()  # a piped stdout is block-buffered: what was printed still arrives
                if stream is sys.stderr and not self.said:
                    stream.write(f"{self.command or 'dlrun'}: stopped by {signal.Signals(signum).name}\n")
                    stream.flush()
            except Exception:  # noqa: S110 - interrupted mid-write: leave all the same
                pass
        os._exit(128 + signum)


# the process's one stop request: the command line installs it, the training loop reads it
STOP = StopRequest()
