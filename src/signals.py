"""Preemption signals that come while a ``fit`` is starting: remembered, then acted on after the first step.

Standard library only, so that ``src/cli.py`` can install the handler before it imports torch and
Lightning: on a loaded node those imports alone take tens of seconds.
"""

import os
import signal
from types import FrameType

_HELD: list[signal.Signals] = []  # SIGUSR1/SIGTERM that came while the process was starting
_HOLDING = {"on": False}


def hold_preemption_signals(signums: tuple[int, ...] = (signal.SIGUSR1, signal.SIGTERM)) -> None:
    """Until training starts, remember SIGUSR1/SIGTERM instead of dying of them (``src.cli``, ``fit``).

    Imports, data setup and the DDP rendezvous take seconds to minutes, and Slurm's warning signal may
    come at any time (it checks time limits every 30 s). USR1's default action kills the process, and
    the job is then lost without a requeue. ``src.callbacks.Preemption`` acts on a held signal after the
    first step. Once it has taken them (training ran), a late SIGUSR1 is ignored: the training is over,
    and a requeue would only repeat the test after it. A late SIGTERM does what it does by default.
    Calling it again while holding keeps what was held (the module's import, then ``main``).
    """

    def hold(signum: int, frame: FrameType | None) -> None:
        if _HOLDING["on"]:
            _HELD.append(signal.Signals(signum))
        elif signum == signal.SIGUSR1:
            print("Received SIGUSR1 after training ended: ignored (nothing left to checkpoint or requeue)", flush=True)
        else:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    if not _HOLDING["on"]:
        _HELD.clear()
    _HOLDING["on"] = True
    for signum in signums:
        signal.signal(signum, hold)


def take_held_signals() -> list[signal.Signals]:
    """Stop holding; the signals held so far, in order."""
    _HOLDING["on"] = False
    held, _HELD[:] = list(_HELD), []
    return held
