"""Lessons with one piece of code changed: proof that a check in a lesson fails when what it
checks is broken. A check that cannot fail proves nothing, so each important assertion of a
lesson has a test that breaks the thing it is about and sees that very assertion fail.

    error = run_mutant("04-checkpoints-from-elsewhere", "scheduler_2.load_state_dict(", "(",
                       {"epochs": 1, "data_dir": data_dir}, tmp_path)
    assert_fails_at(error, "assert scheduler_2.last_epoch")
"""


import nbformat
import papermill

from tools import build_notebooks


def run_mutant(lesson_name, original, replacement, parameters, folder):
    """Run the English notebook of ``lesson_name`` with ``original`` (which must occur exactly
    once in its source) replaced by ``replacement``, in ``folder``, with papermill.

    Returns papermill's ``PapermillExecutionError`` for the first cell that failed, or None
    if the whole notebook ran: the caller asserts which cell failed, and why.
    """
    source = (build_notebooks.LESSONS / f"{lesson_name}.py").read_text(encoding="utf-8")
    assert source.count(original) == 1, f"{original!r} occurs {source.count(original)} times"
    mutant = folder / f"{lesson_name}.py"
    mutant.write_text(source.replace(original, replacement), encoding="utf-8")
    nbformat.write(build_notebooks.make_notebook(build_notebooks.load_lesson(mutant), "en"),
                   folder / "mutant.ipynb")
    try:
        papermill.execute_notebook(str(folder / "mutant.ipynb"), str(folder / "executed.ipynb"),
                                   parameters=parameters, cwd=str(folder), kernel_name="python3",
                                   progress_bar=False,
                                   extra_arguments=build_notebooks.KERNEL_ARGUMENTS)
    except papermill.PapermillExecutionError as error:
        return error
    return None


def assert_fails_at(error, assertion):
    """The mutant stopped with an AssertionError in the cell that holds ``assertion``."""
    assert error is not None, "the notebook ran through: its check did not notice the change"
    assert error.ename == "AssertionError", f"it failed otherwise: {error.ename}: {error.evalue}"
    assert assertion in error.source, f"another cell failed:\n{error.source}"
