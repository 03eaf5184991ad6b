"""A new lesson is its own two files: the build, ``--check``, the student edition, the lesson
lists, the timing tables and the exercise registry find it with no other file edited.

The test adds a throw-away lesson 99 from the templates (``python -m tools.new_lesson``) in a
copy of the repository, builds it, and compares every file before and after.
"""

import hashlib
import os
import shutil
import subprocess
import sys

import nbformat
import pytest

from conftest import REPO
from tools.project import read_lessons

NAME = "99-throw-away"
LAST = read_lessons()[-1].name  # the lesson before lesson 99, whose "Next" link changes


def repository_files():
    """The files of this checkout that git knows or would add (not the ignored ones)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, check=True).stdout.decode()
    return [name for name in listed.split("\0") if name and (REPO / name).is_file()]


def digests(root):
    """``{relative path: sha256}`` of every file under ``root`` outside build/."""
    found = {}
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [name for name in subfolders if name not in ("build", "__pycache__", ".git")]
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as file:
                found[os.path.relpath(path, root)] = hashlib.sha256(file.read()).hexdigest()
    return found


@pytest.fixture(scope="module")
def with_lesson_99(tmp_path_factory):
    """A copy of the repository, before and after lesson 99 was added and built."""
    copy = tmp_path_factory.mktemp("repository")
    for name in repository_files():
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, copy / name)
    before = digests(copy)
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}

    def run(*arguments):
        result = subprocess.run([sys.executable, *arguments], cwd=copy, env=environment,
                                capture_output=True, text=True)
        assert result.returncode == 0, f"{arguments}: {result.stdout}{result.stderr}"
        return result.stdout

    run("-m", "tools.new_lesson", "99", "throw-away")
    run("-m", "tools.build_notebooks", "99")
    return copy, before, digests(copy), run


def test_only_the_new_lessons_files_and_the_generated_ones_change(with_lesson_99):
    copy, before, after, _ = with_lesson_99
    changed = {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}
    written_by_hand = {f"lessons/{NAME}.py", "saveload_lessons/exercise_checks/lesson99.py"}
    built = {f"{folder}/{language}/{NAME}.ipynb" for folder in ("notebooks", "student")
             for language in ("en", "zh-CN")}
    previous = {f"{folder}/{language}/{LAST}.ipynb"
                for folder in ("notebooks", "student") for language in ("en", "zh-CN")}
    guides = {"README.md", "README.zh-CN.md", "INSTRUCTORS.md", "INSTRUCTORS.zh-CN.md"}
    assert changed == written_by_hand | built | previous | guides


def test_the_build_then_says_everything_is_in_sync(with_lesson_99):
    _, _, _, run = with_lesson_99
    assert "in sync" in run("-m", "tools.build_notebooks", "--check")


def test_the_previous_lesson_links_to_it_without_running_again(with_lesson_99):
    copy = with_lesson_99[0]
    for language in ("en", "zh-CN"):
        name = f"notebooks/{language}/{LAST}.ipynb"
        old, new = (nbformat.read(root / name, as_version=4) for root in (REPO, copy))
        assert [cell for cell in new.cells if cell.cell_type == "code"] == \
            [cell for cell in old.cells if cell.cell_type == "code"], "outputs changed: it ran again"
        assert f"]({NAME}.ipynb)" in new.cells[-1].source


def test_the_new_notebooks_ran_in_build_and_passed_their_checks(with_lesson_99):
    copy = with_lesson_99[0]
    for language, passed in (("en", "✓ Exercise 99.2"), ("zh-CN", "✓ 练习 99.2")):
        nb = nbformat.read(copy / "notebooks" / language / f"{NAME}.ipynb", as_version=4)
        printed = "".join(output.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                          for output in cell.outputs)
        assert passed in printed
        assert (copy / "build" / "lesson-runs" / language / "lesson-99" / "weights.pth").is_file()
        assert not (copy / "notebooks" / language / "lesson-99").exists()


def test_the_student_edition_has_its_stubs(with_lesson_99):
    copy = with_lesson_99[0]
    student = nbformat.read(copy / "student" / "en" / f"{NAME}.ipynb", as_version=4)
    sources = [cell.source for cell in student.cells if cell.cell_type == "code"]
    assert sum("raise NotImplementedError()" in source for source in sources) == 2
    assert not any("### BEGIN SOLUTION" in source for source in sources)


def test_the_lists_tables_and_registry_name_it(with_lesson_99):
    copy, _, _, run = with_lesson_99
    assert "99. **Throw away**" in (copy / "README.md").read_text(encoding="utf-8")
    assert f"](student/zh-CN/{NAME}.ipynb)" in (copy / "INSTRUCTORS.zh-CN.md").read_text(encoding="utf-8")
    assert "| 99. Throw away | — | — | 1 h |" in (copy / "INSTRUCTORS.md").read_text(encoding="utf-8")
    registered = run("-c", "from saveload_lessons import exercise_checks; "
                     "print(exercise_checks.lessons_with_exercises())")
    assert "99]" in registered


def test_the_student_edition_is_written_by_one_command_that_runs_nothing(with_lesson_99):
    copy, _, after, run = with_lesson_99
    shutil.rmtree(copy / "student")
    shutil.rmtree(copy / "build")
    run("-m", "tools.build_notebooks", "--student")
    assert digests(copy) == after
    assert not (copy / "build").exists(), "--student executed something"
