"""Turning a scheduler's "stop now" signal into a checkpoint at the end of a step (lesson 7).

A cluster or cloud that takes a machine back (SLURM at a time limit or on ``scancel``,
Kubernetes when it deletes a pod, a spot instance being reclaimed) first sends the job
``SIGTERM``, then waits a *grace period* (30 s by default on SLURM and Kubernetes) before
``SIGKILL``, which no process can catch. Python's default for ``SIGTERM`` is to die at once.

``StopRequest`` installs a handler that only *records* the request. Python runs a handler in
the main thread between two bytecode instructions, which may be in the middle of
``optimizer.step()`` (half the parameters updated) or of ``torch.save`` of an earlier
checkpoint: saving from the handler could write a state that never existed, or write one file
from inside the writing of another. The training loop instead looks at ``requested`` after
each step, when the state is whole, saves, and exits with ``PREEMPTED``.

Windows has no ``SIGTERM`` from outside: ``Popen.terminate()`` and ``os.kill`` end a process
at once, without any handler. A process started with ``CREATE_NEW_PROCESS_GROUP`` can be sent
``CTRL_BREAK_EVENT`` instead, which raises ``SIGBREAK`` in it: ``STOP_SIGNAL`` is that signal
there, and ``start`` and ``request_stop`` do the rest.
"""

import os
import signal
import subprocess
import sys

from saveload_lessons import messages

# The signal that asks the job to stop, and the exit status that says "preempted, checkpoint
# saved, start me again" (75 is EX_TEMPFAIL of sysexits.h: a temporary failure, retry later)
STOP_SIGNAL = signal.SIGBREAK if sys.platform == "win32" else signal.SIGTERM
PREEMPTED = 75


class StopRequest:
    """A context manager that records ``STOP_SIGNAL`` instead of dying of it.

    ``requested`` becomes True when the signal arrives; nothing else happens in the handler.
    The previous handler is put back when the block ends. Use it in the main thread (Python
    allows signal handlers nowhere else).
    """

    def __init__(self, signal_number=STOP_SIGNAL):
        self.signal_number = signal_number
        self.requested = False
        self._previous = None

    def _handle(self, signal_number, frame):
        self.requested = True

    def __enter__(self):
        self._previous = signal.signal(self.signal_number, self._handle)
        return self

    def __exit__(self, *exc_info):
        signal.signal(self.signal_number, self._previous)
        return False


def start(arguments, **popen_options):
    """Start ``python arguments...`` with this interpreter as a child process that
    ``request_stop`` can reach, speaking the notebook's language; its output comes through a
    pipe, as text. Returns the ``Popen``."""
    options = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if sys.platform == "win32" else {}
    environment = dict(os.environ, **{messages.ENVIRONMENT_VARIABLE: messages.language()})
    return subprocess.Popen([sys.executable, *arguments], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=environment,
                            **options, **popen_options)


def request_stop(process):
    """Send ``process`` (from ``start``) the signal a scheduler sends: ``SIGTERM``, or
    ``CTRL_BREAK_EVENT`` on Windows."""
    process.send_signal(signal.CTRL_BREAK_EVENT if sys.platform == "win32" else signal.SIGTERM)
