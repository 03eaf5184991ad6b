"""Starting a Python program on several processes with ``torchrun``, from Python or a notebook.

``torchrun`` (the module ``torch.distributed.run``) starts one process per
"rank", gives each of them the environment variables that
``torch.distributed.init_process_group`` reads (``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``) and ``LOCAL_RANK``, which it does not read
but the program does, to pick its GPU on this machine; it watches them, and
stops them all as soon as one fails. ``torchrun`` runs it with the interpreter of
this notebook (``sys.executable``), so the processes see the same packages,
and with ``--standalone``, which picks a free port on this machine.

Each process gets ``OMP_NUM_THREADS=1`` unless the caller sets it: several
processes that each use every core slow each other down.
"""

import os
import re
import subprocess
import sys

from saveload_lessons import messages
from saveload_lessons.values import is_count

# How much of a failed run's output an error message quotes (its end, where the error is).
OUTPUT_TAIL_CHARS = 3000

# torchrun's own lines: its log lines ("E1202 03:40:28.953000 6844 torch/distributed/...]"),
# and the report it ends a failed run with (a traceback through torch/distributed/run.py,
# then a table of the failed ranks).
_LAUNCHER_LOG_LINE = re.compile(r"^[EWI]\d{4} [\d:.]+ +\d+ \S*torch/distributed/\S*\].*\n?",
                                re.MULTILINE)
_LAUNCHER_REPORT = re.compile(r'Traceback \(most recent call last\):\n(?:  File "<frozen runpy>".*\n)*'
                              r'  File "[^"\n]*torch/distributed/run\.py"')
_FAILED_RANK = re.compile(r"rank\s*: (\d+) \(local_rank: \d+\)\s*\n\s*exitcode\s*: (-?\d+)")


class LaunchError(RuntimeError):
    """A ``torchrun`` run that failed; the message quotes what its ranks printed last (their
    own error) and which ranks failed how."""


def check_process_count(nproc):
    """Raise ``ValueError`` unless ``nproc`` is a usable number of processes (1 to 64)."""
    if not is_count(nproc, 1) or nproc > 64:
        raise ValueError(f"the number of processes must be an integer from 1 to 64, got {nproc!r}")


def torchrun_command(module, args=(), nproc=2):
    """The command line that runs ``python -m module args`` on ``nproc`` processes."""
    check_process_count(nproc)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={nproc}", "-m", module, *map(str, args)]


def torchrun(module, args=(), nproc=2, check=True, timeout=600, env=None):
    """Run ``python -m module args`` on ``nproc`` processes and wait for them all.

    Args:
        module: the module to run, for example ``"saveload_lessons.fsdp_training"``; it must
            be importable (the current folder and ``PYTHONPATH`` count).
        args: its command-line arguments.
        nproc: the number of processes (ranks).
        check: raise ``LaunchError`` if the run fails (otherwise look at
            ``returncode``).
        timeout: seconds before every process is stopped and
            ``subprocess.TimeoutExpired`` is raised.
        env: extra environment variables for the processes. They also get the
            language of ``messages`` (``SAVELOAD_LESSONS_LANGUAGE``), so that they
            print in the notebook's language.

    Returns:
        The ``subprocess.CompletedProcess``, with ``stdout`` and ``stderr``
        as text: what the ranks printed, and ``torchrun``'s own messages.
    """
    environment = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
                   messages.ENVIRONMENT_VARIABLE: messages.language(), **(env or {})}
    result = subprocess.run(torchrun_command(module, args, nproc), capture_output=True,
                            text=True, timeout=timeout, env=environment)
    if check and result.returncode != 0:
        raise LaunchError(f"torchrun -m {module} on {nproc} process(es) failed with exit status "
                          f"{result.returncode}. {failure_report(result.stdout, result.stderr)}")
    return result


def failure_report(stdout, stderr):
    """The cause of a failed run, for an error message: the end of what the ranks printed
    (where their own error is), without torchrun's report, then which ranks failed how."""
    report = _LAUNCHER_REPORT.search(stderr)
    ranks_output = (stdout + _LAUNCHER_LOG_LINE.sub("", stderr[:report.start()] if report else stderr))
    cause = ranks_output.strip()[-OUTPUT_TAIL_CHARS:] or "(the ranks printed nothing)"
    failed = [f"rank {rank} exit code {code}" for rank, code in _FAILED_RANK.findall(stderr)]
    summary = f"\n(torchrun: {', '.join(failed)})" if failed else ""
    return f"The end of what its ranks printed:\n{cause}{summary}"
