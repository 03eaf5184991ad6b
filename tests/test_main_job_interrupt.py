"""The main job stopped by Ctrl-C (tools/run_notebooks.py): one line that says what finished and
where the outputs are, no traceback, and the last good output of the interrupted notebook kept.

papermill writes an executed notebook as it runs; the job gives it a hidden file beside the
output, which replaces the output only when the run ends (a failing cell included).
"""

import os
import signal
import subprocess
import sys
import time

import nbformat
import papermill
import pytest

from conftest import REPO
from tools import run_notebooks

GOOD = '{"the previous output": "good"}'


@pytest.fixture
def previous(tmp_path):
    """A notebook to run, and the good output of an earlier run of it."""
    source = tmp_path / "en" / "01-slow.ipynb"
    source.parent.mkdir()
    nbformat.write(nbformat.v4.new_notebook(), source)
    output = tmp_path / "out" / "en" / source.name
    output.parent.mkdir(parents=True)
    output.write_text(GOOD)
    return source, output


def execution(*, then):
    """A stand-in for papermill.execute_notebook that writes part of a notebook where papermill
    writes, as papermill does while a notebook runs, then raises ``then``."""
    def execute_notebook(source, output, **kwargs):
        with open(output, "w") as f:
            f.write('{"half": "a notebook"')
        raise then

    return execute_notebook


def test_an_interrupted_run_keeps_the_previous_output(previous, monkeypatch):
    source, output = previous
    monkeypatch.setattr(papermill, "execute_notebook", execution(then=KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        run_notebooks.run_notebook(source, output.parent)
    assert output.read_text() == GOOD
    assert sorted(path.name for path in output.parent.iterdir()) == [output.name]


def test_a_run_that_ends_in_an_error_replaces_the_output(previous, monkeypatch):
    """The error is what the learner needs to read."""
    source, output = previous
    failed = papermill.PapermillExecutionError(3, 3, "check(0)", "ValueError", "epochs must be ...", [])
    monkeypatch.setattr(papermill, "execute_notebook", execution(then=failed))
    with pytest.raises(papermill.PapermillExecutionError):
        run_notebooks.run_notebook(source, output.parent)
    assert output.read_text() == '{"half": "a notebook"'
    assert sorted(path.name for path in output.parent.iterdir()) == [output.name]


def test_ctrl_c_prints_one_line_with_what_finished(tmp_path, monkeypatch, capsys):
    paths = run_notebooks.notebook_paths(["en"])[:3]

    def run_notebook(path, output_dir, parameters=None):
        if path == paths[2]:
            raise KeyboardInterrupt
        return 1.0, 0.5, output_dir / path.name

    monkeypatch.setattr(run_notebooks, "run_notebook", run_notebook)
    monkeypatch.setattr(run_notebooks.helper, "prepare_fashion_mnist", lambda data_dir: None)
    status = run_notebooks.main(["1", "2", "3", "--language", "en", "--output", str(tmp_path)])
    assert status == 130
    out, err = capsys.readouterr()
    assert err == ""
    assert out.splitlines()[-1] == (
        f"interrupted during {paths[2].stem} (en): 2 of 3 notebooks had ended, their outputs are "
        f"in {tmp_path}; the interrupted notebook's previous output, if any, is unchanged.")
    assert len(out.splitlines()) == 4  # the header, two notebooks, the line


def test_ctrl_c_while_the_data_is_prepared(tmp_path, monkeypatch, capsys):
    def prepare(data_dir):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_notebooks.helper, "prepare_fashion_mnist", prepare)
    assert run_notebooks.main(["1", "--output", str(tmp_path)]) == 130
    assert capsys.readouterr().out == ("interrupted while preparing Fashion-MNIST, before any "
                                       "notebook ran.\n")


# The main job on one slow notebook (``previous``), with nothing else to do first
DRIVER = """
import pathlib, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, whatever pytest had
sys.path.insert(0, sys.argv[1])
from tools import run_notebooks
slow = pathlib.Path(sys.argv[2])
run_notebooks.notebook_paths = lambda languages, names=(): [slow]
run_notebooks.parameters_for = lambda paths, given, quick=False: {slow: {}}
run_notebooks.data_dir_of = lambda paths, given: None
run_notebooks.helper.prepare_fashion_mnist = lambda data_dir: None
sys.exit(run_notebooks.main(["--output", sys.argv[3]]))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="Ctrl-C is a signal on Linux and macOS")
def test_ctrl_c_in_a_terminal(previous, tmp_path):
    """A real SIGINT while a kernel runs a cell: the one line, exit status 130, the previous
    output kept, and no file or kernel left behind."""
    source, output = previous
    started = tmp_path / "started"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        f"import os, pathlib, time\npathlib.Path({str(started)!r}).write_text(str(os.getpid()))\n"
        "time.sleep(120)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, source)
    job = subprocess.Popen([sys.executable, "-c", DRIVER, str(REPO), str(source), str(output.parent.parent)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)  # Ctrl-C goes to a terminal's process group
    deadline = time.monotonic() + 120
    while not started.exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert started.exists(), job.stderr.read() if job.poll() is not None else "no kernel ran the cell"
    os.killpg(job.pid, signal.SIGINT)
    out, err = job.communicate(timeout=60)
    assert job.returncode == 130, err
    assert "Traceback" not in err, err
    assert out.splitlines()[-1] == (
        f"interrupted during {source.stem} (en): 0 of 1 notebooks had ended, their outputs are in "
        f"{output.parent.parent}; the interrupted notebook's previous output, if any, is unchanged.")
    assert output.read_text() == GOOD
    assert sorted(path.name for path in output.parent.iterdir()) == [output.name]
    assert not kernel_alive(int(started.read_text()))


def kernel_alive(pid, seconds=10):
    """Whether the process ``pid`` is still there after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.2)
    return True
