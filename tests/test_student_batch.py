"""The student edition in batch mode, as the instructor guide describes it: with nbconvert's
``--allow-errors`` every cell runs, and each unfinished exercise's check cell says it is not
done yet; and the section "Exercises" runs on its own, without the cells above it.

To stay quick, the test runs one notebook made of the exercise sections of every English
student notebook, so one kernel runs them all.
"""

import subprocess
import sys

import nbformat

from conftest import REPO

STUDENT = sorted((REPO / "student" / "en").glob("*.ipynb"))


def exercise_section(path):
    """The cells of a notebook from its heading "Exercises" up to the next heading."""
    cells = nbformat.read(path, as_version=4).cells
    start = next(i for i, cell in enumerate(cells)
                 if cell.cell_type == "markdown" and cell.source.startswith("## Exercises"))
    end = next((i for i, cell in enumerate(cells[start + 1:], start + 1)
                if cell.cell_type == "markdown" and cell.source.startswith("## ")), len(cells))
    return cells[start:end]


def test_allow_errors_runs_every_exercise_of_the_student_edition(tmp_path):
    make = {"code": nbformat.v4.new_code_cell, "markdown": nbformat.v4.new_markdown_cell}
    nb = nbformat.v4.new_notebook(cells=[make[cell.cell_type](cell.source)
                                         for path in STUDENT for cell in exercise_section(path)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "exercises.ipynb"
    nbformat.write(nb, path)
    done = subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook",
                           "--execute", "--allow-errors", "--inplace", str(path)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    code = [cell for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code), "a cell did not run"
    errors = {cell.source: [o for o in cell.outputs if o.output_type == "error"] for cell in code}
    checks = [source for source in errors if source.startswith("check.exercise_")]
    assert checks and len(checks) == sum(1 for c in code if "raise NotImplementedError()" in c.source)
    for source, found in errors.items():
        if source in checks:
            assert [(o.ename, "not done yet" in o.evalue) for o in found] == [("ExerciseFailed", True)], source
        else:
            assert found == [], source
