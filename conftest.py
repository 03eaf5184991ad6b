"""pytest setup shared by the unit tests and the nbval notebook runs.

The tests must leave nothing in the working tree: a test run that creates or
changes a file outside the ignored build folders fails, naming the files.
(nbval runs each notebook in its own folder, so ``make test`` gives it copies
in ``build/test-notebooks``.)
"""

import os
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent
# Build output, caches and environments: what a run may write in the repository
ALLOWED = {".git", ".venv", "venv", "build", "dist", "__pycache__", ".pytest_cache",
           ".hypothesis", ".ruff_cache", ".ipynb_checkpoints"}
STARTED = pytest.StashKey[float]()  # when the test session began

# Under pytest-xdist every worker trains in its own process and notebook kernels;
# with more threads than cores they slow each other down many times over.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def files_left_behind(since, root=REPO):
    """The files under ``root`` created or changed after the time ``since``,
    outside the build folders and caches of ``ALLOWED`` (and ``*.egg-info``)."""
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [name for name in subfolders
                         if name not in ALLOWED and not name.endswith(".egg-info")]
        for name in files:
            path = Path(folder, name)
            if path.stat().st_mtime >= since:
                found.append(path.relative_to(root))
    return sorted(found)


def pytest_sessionstart(session):
    session.config.stash[STARTED] = time.time()


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session):
    if hasattr(session.config, "workerinput"):  # an xdist worker: the controller checks
        return
    left = files_left_behind(session.config.stash[STARTED])
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        reporter.write("\n")
        reporter.write_sep("=", "files left in the working tree", red=True)
        reporter.write_line(
            "The tests wrote these files outside build/ (run the notebooks from copies "
            "in build/, as `make test` does): " + ", ".join(map(str, left)), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

