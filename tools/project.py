"""What the builder, the main job and the tests share: the repository's folders, the
languages, the facts in ``pyproject.toml``, and the lesson sources found in ``lessons/``.

A lesson is found by its file name alone, ``lessons/NN-words.py``: nothing lists the
lessons anywhere else. ``read_lessons`` reads their headers and cells without judging
them; ``tools.build_notebooks.all_lessons`` also checks them against the lesson rules.
"""

from dataclasses import dataclass
from pathlib import Path

import jupytext

from saveload_lessons import LANGUAGES

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, published as tomli
    import tomli as tomllib

__all__ = ["BUILD", "GUIDES", "KERNEL_ARGUMENTS", "LANGUAGES", "LESSONS", "Lesson", "NOTEBOOKS",
           "READMES", "REPO", "RUN_TIMES", "STUDENT", "lesson_paths", "read_lesson", "read_lessons",
           "read_pyproject", "repository_url"]

REPO = Path(__file__).resolve().parent.parent
LESSONS = REPO / "lessons"
NOTEBOOKS = REPO / "notebooks"
STUDENT = REPO / "student"  # the student edition: solutions replaced by a stub, no outputs
BUILD = REPO / "build"      # everything that runs writes here (ignored by git)
READMES = {"en": REPO / "README.md", "zh-CN": REPO / "README.zh-CN.md"}
GUIDES = {"en": REPO / "INSTRUCTORS.md", "zh-CN": REPO / "INSTRUCTORS.zh-CN.md"}
# The measured run time of every notebook, which the guides' timing tables show
RUN_TIMES = NOTEBOOKS / "run-times.json"
# The kernel's own log is noise in a report: warnings at start-up ("running over TCP
# without encryption"), and "KeyboardInterrupt caught in kernel" when jupyter_client
# interrupts a kernel before shutting it down (it always does) while a message is being
# handled. A failing cell or a dead kernel is still reported, by nbclient and papermill.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=CRITICAL"]


@dataclass
class Lesson:
    """One lesson source, read by jupytext: its name, header fields (title, summary, quick_run,
    teaching_minutes) and cells (both languages)."""
    path: Path
    title: dict
    summary: dict
    quick_run: dict
    teaching_minutes: object
    cells: list

    @property
    def name(self):
        return self.path.stem

    @property
    def number(self):
        return int(self.name[:2])


def lesson_paths(folder=LESSONS):
    """The lesson sources, ``NN-words.py``, in lesson order."""
    return sorted(Path(folder).glob("[0-9][0-9]-*.py"))


def read_lesson(path):
    """The lesson at ``path``: its header (title, summary, quick_run) and its cells."""
    path = Path(path)
    notebook = jupytext.read(path, fmt="py:percent")
    header = notebook.metadata.get("lesson", {})
    return Lesson(path=path, title=header.get("title", {}), summary=header.get("summary", {}),
                  quick_run=header.get("quick_run", {}),
                  teaching_minutes=header.get("teaching_minutes"), cells=notebook.cells)


def read_lessons(folder=LESSONS):
    """Every lesson in ``folder``, in order, unchecked."""
    return [read_lesson(path) for path in lesson_paths(folder)]


def read_pyproject():
    """The parsed ``pyproject.toml``."""
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def repository_url():
    """The repository address, from ``[project.urls] Repository`` in pyproject.toml."""
    return read_pyproject()["project"]["urls"]["Repository"]


# The branch that the Colab badges, the website's links and its source links show
BRANCH = "main"
COLAB_GITHUB = "https://colab.research.google.com/github/"


def github_url(relative_path, folder=False):
    """The address on GitHub of a file (or, with ``folder=True``, a folder) of the repository,
    given by its path relative to the repository's root."""
    kind = "tree" if folder else "blob"
    return f"{repository_url().rstrip('/')}/{kind}/{BRANCH}/{relative_path}"


def colab_url(relative_path):
    """The address that opens the repository's notebook at ``relative_path`` in Colab."""
    return COLAB_GITHUB + github_url(relative_path).removeprefix("https://github.com/")
