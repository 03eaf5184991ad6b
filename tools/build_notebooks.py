"""Build the bilingual notebooks from their sources in ``lessons/``.

Each lesson is one file, ``lessons/NN-name.py``, in jupytext's "percent"
format: plain Python that editors and linters read, cut into cells by
``# %%`` lines. Every prose cell is written twice, an English cell
(``# %% [markdown] lang="en"``) followed by its Chinese twin
(``lang="zh-CN"``); code is written once, and each of its comments is
followed by a comment line ``# zh-CN: ...`` that translates it. A line of
code that prints English (and has no comment) may be followed by such a line
too: it then holds the whole Chinese line, which may differ from the English
one in its strings only. The header holds the lesson's title, one-line
summary and quick-run parameters.

Exercises mark their solutions as nbgrader does, with ``### BEGIN SOLUTION``
and ``### END SOLUTION`` lines. The student edition (``student/``) is the
same notebooks, unexecuted, with each solution replaced by nbgrader's stub.

This script checks every lesson against the rules below (``RULES``), writes
``notebooks/en/NAME.ipynb`` and ``notebooks/zh-CN/NAME.ipynb``, executes
them (in ``build/lesson-runs/``, where the files they write stay out of the
way) so the committed outputs come from a real run, writes the student
edition, and regenerates what repeats: the Colab cell, the "next lesson"
links (in a notebook whose code did not change, only its prose is rewritten:
it is not run again), and the generated blocks of the READMEs and guides
(``tools.generated_blocks``).

    python -m tools.build_notebooks                 # check, build and execute every lesson
    python -m tools.build_notebooks 01              # one lesson, by number or name
    python -m tools.build_notebooks --student       # all that needs no run: student edition, prose, lists
    python -m tools.build_notebooks --check         # are notebooks, student edition and READMEs in sync?

The repository address (for the Colab cells and badges) is read from
``pyproject.toml``, its single source.
"""

import argparse
import ast
import copy
import io
import os
import re
import sys
import tokenize
from pathlib import Path

import nbformat

from saveload_lessons import exercise_checks
from saveload_lessons.values import is_count
from tools.generated_blocks import generated_texts, write_generated_blocks
from tools.project import (
    BUILD,
    KERNEL_ARGUMENTS,
    LANGUAGES,
    LESSONS,
    NOTEBOOKS,
    REPO,
    STUDENT,
    lesson_paths,
    read_lesson,
    repository_url,
)

BUILD_RUNS = BUILD / "lesson-runs"  # where the build executes the notebooks

TRANSLATION = "# zh-CN:"
# nbgrader's markers of a solution region, and the stub that replaces it in the student edition.
BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
# nbgrader's marker line stays; the Chinese edition says what to do in Chinese above it.
SOLUTION_STUB = {
    "en": ("# YOUR CODE HERE", "raise NotImplementedError()"),
    "zh-CN": ("# 在这里写你的代码，运行这个单元格，再运行它后面的检查单元格。",
              "# YOUR CODE HERE", "raise NotImplementedError()"),
}
EXERCISE_CHECK = re.compile(r"^check\.exercise_(\d+)\(", re.M)
FOR_LESSON = re.compile(r"exercise_checks\.for_lesson\((\d+)\b")

REQUIRED_PARAMETERS = ("epochs", "device", "data_dir", "seed")
EARLY_CHECKS = ("devices.get_device", "fc_model.check_positive_int", "helper.prepare_fashion_mnist")
# What the early checks' cell does first, so that their messages come in the notebook's language
SET_LANGUAGE = "messages.set_language"
FEWEST_EXERCISES, MOST_EXERCISES = 2, 3

# What every lesson must have; ``lesson_problems`` checks each of these. This is the one
# place the rules are written down: CONTRIBUTING.md and every refusal point here.
RULES = f"""\
- its file name is NN-words.py, and its title starts with its number ("1. ") in both languages;
- its header gives a title and a one-line summary (in both languages), quick_run parameters
  and teaching_minutes (the minutes it takes in a workshop);
- every prose cell is an English cell followed by its Chinese twin;
- every comment in its code is followed by a "# zh-CN:" line that translates it;
- exactly one code cell is tagged "parameters"; it assigns plain values, at least to
  {", ".join(REQUIRED_PARAMETERS)}, and quick_run only names those parameters;
- the first code cell after it checks them early: it starts with {SET_LANGUAGE}("en"), with a
  "# zh-CN:" line that gives "zh-CN" (so the checks speak the notebook's language), and it
  calls {", ".join(EARLY_CHECKS)};
- it has {FEWEST_EXERCISES} to {MOST_EXERCISES} exercises, numbered from 1: each is a code cell with one
  solution region ({BEGIN_SOLUTION} ... {END_SOLUTION}), followed by a code cell that calls
  check.exercise_N(...);
- its exercise section takes its checks with exercise_checks.for_lesson(N, ...), N its number;
  they are a class in saveload_lessons/exercise_checks/lessonNN.py (a subclass of Checks with
  lesson = N) that has exercise_1, exercise_2, ... for exactly those exercises."""

NEXT_LESSON = {"en": "**Next:** [{title}]({name}.ipynb): {summary}",
               "zh-CN": "**下一课：**[{title}]({name}.ipynb)：{summary}"}


class LessonError(ValueError):
    """A lesson source that breaks the rules; the message lists every problem."""


# --------------------------------------------------------------------------- code cells

def _indent(line):
    """The spaces a line of code starts with."""
    return line[:len(line) - len(line.lstrip())]


def localize_code(source, language):
    """The code of a cell for ``language``, with its ``# zh-CN:`` lines removed.

    In Chinese, each comment is replaced by the ``# zh-CN:`` line that follows it,
    and each line of code followed by a ``# zh-CN:`` line is replaced by that line
    (indented like it), which may change strings only. Raises ``LessonError`` for a
    comment without a translation, a translation that follows neither a comment nor
    a line of code, or a Chinese line that changes the code.
    """
    lines = source.splitlines(keepends=True)
    comments = [t for t in tokenize.generate_tokens(io.StringIO(source).readline)
                if t.type == tokenize.COMMENT and t.string.strip() not in (BEGIN_SOLUTION, END_SOLUTION)]
    comment_rows = {t.start[0] for t in comments}
    replacements, drop, pending = {}, set(), None
    for token in comments:
        row, column = token.start
        if token.string.startswith(TRANSLATION):
            if lines[row - 1][:column].strip():
                raise LessonError(f"the translation {token.string!r} must be on a line of its own")
            chinese = token.string[len(TRANSLATION):].strip()
            if pending is not None:
                replacements[pending.start] = (pending.string, "# " + chinese)
            elif row > 1 and lines[row - 2].strip() and row - 1 not in comment_rows:
                english = lines[row - 2].rstrip("\r\n")
                replacements[(row - 1, 0)] = (english, _indent(english) + chinese)
            else:
                raise LessonError(f"the translation {token.string!r} follows no English comment "
                                  "and no line of code")
            drop.add(row)
            pending = None
        else:
            if pending is not None:
                raise LessonError(f"no Chinese translation for the comment {pending.string!r}")
            pending = token
    if pending is not None:
        raise LessonError(f"no Chinese translation for the comment {pending.string!r}")

    def without_translations(lines):
        return "".join(line for number, line in enumerate(lines, start=1) if number not in drop).rstrip("\n")

    english_code = without_translations(lines)
    if language == "en":
        return english_code
    for (row, column), (english, chinese) in sorted(replacements.items(), reverse=True):
        line = lines[row - 1]
        lines[row - 1] = line[:column] + chinese + line[column + len(english):]
    localized = without_translations(lines)
    if code_shape(localized) != code_shape(english_code):
        raise LessonError("a Chinese line changes more than strings and comments in:\n" + localized)
    return localized


def code_shape(source):
    """The code of a cell without comments, layout and the text of its strings (the
    expressions inside f-strings are kept): what the two languages must share."""
    class BlankStrings(ast.NodeTransformer):
        def visit_Constant(self, node):
            return ast.Constant("") if isinstance(node.value, str) else node

        def visit_JoinedStr(self, node):
            node.values = [self.visit(v) for v in node.values if isinstance(v, ast.FormattedValue)]
            return node

    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise LessonError(f"a code cell is not valid Python ({err.msg}, line {err.lineno}):\n{source}") from None
    return ast.dump(BlankStrings().visit(tree))


def solution_regions(source):
    """The ``(begin, end)`` line indices of the solution regions in ``source``;
    ``LessonError`` when the markers do not pair up."""
    regions, begin = [], None
    for index, line in enumerate(source.splitlines()):
        marker = line.strip()
        if marker == BEGIN_SOLUTION:
            if begin is not None:
                raise LessonError(f"a second {BEGIN_SOLUTION!r} before {END_SOLUTION!r}")
            begin = index
        elif marker == END_SOLUTION:
            if begin is None:
                raise LessonError(f"{END_SOLUTION!r} without {BEGIN_SOLUTION!r}")
            regions.append((begin, index))
            begin = None
    if begin is not None:
        raise LessonError(f"{BEGIN_SOLUTION!r} without {END_SOLUTION!r}")
    return regions


def student_code(source, language="en"):
    """``source`` with each solution region replaced by nbgrader's stub, indented like it."""
    lines = source.splitlines()
    for begin, end in reversed(solution_regions(source)):
        lines[begin:end + 1] = [_indent(lines[begin]) + line for line in SOLUTION_STUB[language]]
    return "\n".join(lines)


def parameters(lesson):
    """The parameters cell's names and default values, in order."""
    cell = next(c for c in lesson.cells if "parameters" in c.metadata.get("tags", []))
    return {target.id: ast.literal_eval(node.value)
            for node in ast.parse(cell.source).body for target in node.targets}


# --------------------------------------------------------------------------- the rules

def _called_names(source):
    """Dotted names of the functions a piece of code calls, such as 'helper.prepare_fashion_mnist'."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and isinstance(node.func.value, ast.Name):
            names.add(f"{node.func.value.id}.{node.func.attr}")
    return names


def _sets_language_first(source):
    """Whether the code ``source``, in each language, starts with ``messages.set_language``
    of that language (a cell whose translation is broken counts as yes: that is its own problem)."""
    for language in LANGUAGES:
        try:
            body = ast.parse(localize_code(source, language)).body
        except LessonError:
            return True
        first = ast.unparse(body[0]) if body else ""
        if first != f"{SET_LANGUAGE}({language!r})":
            return False
    return True


def lesson_problems(lesson):
    """Every way ``lesson`` breaks ``RULES`` (an empty list when it follows them)."""
    problems = []
    if not re.fullmatch(r"\d\d-[a-z0-9]+(-[a-z0-9]+)*", lesson.name):
        problems.append(f"the file name {lesson.name}.py is not NN-words.py")
        return problems
    for language in LANGUAGES:
        title, summary = lesson.title.get(language), lesson.summary.get(language)
        if not title or not title.startswith(f"{lesson.number}. "):
            problems.append(f"the {language} title {title!r} must start with '{lesson.number}. '")
        if not summary or "\n" in summary.strip():
            problems.append(f"the {language} summary must be one line, got {summary!r}")
    if not isinstance(lesson.quick_run, dict) or not lesson.quick_run:
        problems.append("the header needs quick_run parameters for the tests' quick runs")
    if not is_count(lesson.teaching_minutes, 1):
        problems.append(f"the header needs teaching_minutes, a positive whole number of minutes, "
                        f"got {lesson.teaching_minutes!r}")

    cells = lesson.cells
    for index, cell in enumerate(cells):
        if cell.cell_type != "markdown":
            continue
        language = cell.metadata.get("lang")
        previous = cells[index - 1].metadata.get("lang") if index else None
        following = cells[index + 1].metadata.get("lang") if index + 1 < len(cells) else None
        if language not in LANGUAGES:
            problems.append(f"prose cell {index} needs lang=\"en\" or lang=\"zh-CN\"")
        elif language == "en" and following != "zh-CN":
            problems.append(f"prose cell {index} ({cell.source[:40]!r}) has no Chinese twin after it")
        elif language == "zh-CN" and previous != "en":
            problems.append(f"prose cell {index} ({cell.source[:40]!r}) has no English cell before it")
    if not cells or cells[0].cell_type != "markdown":
        problems.append("the lesson must start with its title, in a prose cell")

    code = [cell for cell in cells if cell.cell_type == "code"]
    for cell in code:
        try:
            localize_code(cell.source, "zh-CN")
        except LessonError as err:
            problems.append(str(err))
    tagged = [i for i, cell in enumerate(code) if "parameters" in cell.metadata.get("tags", [])]
    if len(tagged) != 1:
        problems.append(f"{len(tagged)} code cells are tagged 'parameters'; exactly one must be")
        return problems
    try:
        names = parameters(lesson)
    except (ValueError, AttributeError, SyntaxError):
        problems.append("the parameters cell must only assign plain values, one per line")
        return problems
    missing = [name for name in REQUIRED_PARAMETERS if name not in names]
    if missing:
        problems.append(f"the parameters cell lacks {missing}")
    if isinstance(lesson.quick_run, dict) and set(lesson.quick_run) - set(names):
        problems.append(f"quick_run names unknown parameters {sorted(set(lesson.quick_run) - set(names))}")
    after = code[tagged[0] + 1].source if tagged[0] + 1 < len(code) else ""
    unchecked = [name for name in EARLY_CHECKS if name not in _called_names(after)]
    if unchecked:
        problems.append(f"the cell after the parameters does not call {unchecked}")
    if not _sets_language_first(after):
        problems.append(f'the cell after the parameters must start with {SET_LANGUAGE}("en") and a '
                        f'"# zh-CN:" line with {SET_LANGUAGE}("zh-CN"), before its checks')
    problems.extend(exercise_problems(code))
    problems.extend(check_problems(lesson.number, code))
    return problems


def exercise_problems(code):
    """How the exercises among the ``code`` cells of a lesson break the rules."""
    problems, exercises = [], []
    for index, cell in enumerate(code):
        try:
            regions = solution_regions(cell.source)
        except LessonError as err:
            problems.append(str(err))
            continue
        if len(regions) > 1:
            problems.append(f"a code cell has {len(regions)} solution regions; an exercise has one")
        if regions:
            exercises.append(index)
    if not FEWEST_EXERCISES <= len(exercises) <= MOST_EXERCISES:
        problems.append(f"the lesson has {len(exercises)} exercises (solution regions); "
                        f"it needs {FEWEST_EXERCISES} to {MOST_EXERCISES}")
    for number, index in enumerate(exercises, start=1):
        following = code[index + 1].source if index + 1 < len(code) else ""
        if [int(n) for n in EXERCISE_CHECK.findall(following)] != [number]:
            problems.append(f"exercise {number} is not followed by a cell that calls "
                            f"check.exercise_{number}(...)")
    return problems


def check_problems(number, code):
    """How the registered checks of lesson ``number`` miss its exercises (the ``code`` cells)."""
    exercises = sum(1 for cell in code if BEGIN_SOLUTION in cell.source)
    asked = {int(n) for cell in code for n in FOR_LESSON.findall(cell.source)}
    if asked != {number}:
        return [f"the exercise section must take its checks with exercise_checks.for_lesson({number}, "
                f"...), the lesson's own number; it asks for {sorted(asked) or 'none'}"]
    if number not in exercise_checks.lessons_with_exercises():
        return [f"saveload_lessons/exercise_checks has no checks for lesson {number}: add "
                f"lesson{number:02d}.py with a Checks subclass whose lesson is {number}"]
    defined = exercise_checks.exercise_numbers(number)
    if defined != list(range(1, exercises + 1)):
        return [f"the checks of lesson {number} define exercises {defined}, but the lesson has "
                f"{exercises}"]
    return []


def load_lesson(path):
    """Read a lesson source and check it; ``LessonError`` lists every rule it breaks."""
    path = Path(path)
    lesson = read_lesson(path)
    problems = lesson_problems(lesson)
    if problems:
        raise LessonError(f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path} "
                          "breaks the lesson rules:\n- " + "\n- ".join(problems)
                          + f"\nThe rules (RULES in tools/build_notebooks.py):\n{RULES}")
    return lesson


def all_lessons():
    """Every lesson in ``lessons/``, checked against the rules."""
    return [load_lesson(path) for path in lesson_paths(LESSONS)]


# --------------------------------------------------------------------------- notebooks

def colab_cell(language):
    """The first code cell of every notebook: installs the companion modules on Colab only."""
    source = (
        "# On Google Colab only: install the companion modules of these lessons.\n"
        "# zh-CN: 仅在 Google Colab 上运行：安装本课程的配套模块。\n"
        "import sys\n"
        "\n"
        "if \"google.colab\" in sys.modules:\n"
        "    import subprocess\n"
        "\n"
        "    subprocess.run([sys.executable, \"-m\", \"pip\", \"install\", \"--quiet\",\n"
        f"                    \"git+{repository_url()}\"], check=True)"
    )
    return nbformat.v4.new_code_cell(localize_code(source, language))


def make_notebook(lesson, language, next_lesson=None):
    """The unexecuted notebook of ``lesson`` in ``language``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    for cell in lesson.cells:
        if cell.cell_type == "markdown":
            if cell.metadata["lang"] == language:
                nb.cells.append(nbformat.v4.new_markdown_cell(cell.source))
        else:
            new = nbformat.v4.new_code_cell(localize_code(cell.source, language))
            if cell.metadata.get("tags"):
                new.metadata["tags"] = list(cell.metadata["tags"])
            nb.cells.append(new)
        if len(nb.cells) == 1:  # right after the title
            nb.cells.append(colab_cell(language))
    if next_lesson is not None:
        nb.cells.append(nbformat.v4.new_markdown_cell(NEXT_LESSON[language].format(
            title=next_lesson.title[language], name=next_lesson.name,
            summary=next_lesson.summary[language])))
    for index, cell in enumerate(nb.cells):
        cell.id = f"cell-{index}"
    return nb


def student_notebook(nb, language):
    """The student edition of an unexecuted notebook: each solution replaced by the stub."""
    student = copy.deepcopy(nb)
    for cell in student.cells:
        if cell.cell_type == "code":
            cell.source = student_code(cell.source, language)
    return student


def notebooks(lessons):
    """``(lesson, language, unexecuted notebook)`` for every lesson and language."""
    for index, lesson in enumerate(lessons):
        following = lessons[index + 1] if index + 1 < len(lessons) else None
        for language in LANGUAGES:
            yield lesson, language, make_notebook(lesson, language, following)


def execute(nb, folder):
    """Run ``nb`` top to bottom in ``folder`` (raises on the first error), with this checkout's
    modules first on the kernel's path: the outputs show the code beside them, whichever
    copy of the companion modules is installed."""
    from nbclient import NotebookClient

    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    NotebookClient(nb, timeout=1200, kernel_name="python3", record_timing=False,
                   extra_arguments=KERNEL_ARGUMENTS,
                   resources={"metadata": {"path": str(folder)}}).execute(
        env={**os.environ, "PYTHONPATH": path})
    nb.metadata.pop("widgets", None)
    return nb


def cell_signature(nb):
    """What must match between a committed notebook and its source: types, sources, tags."""
    return [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in nb.cells]


# --------------------------------------------------------------------------- commands

def _committed(path):
    return nbformat.read(path, as_version=4) if path.exists() else None


def _code_signature(nb):
    return [entry for entry in cell_signature(nb) if entry[0] == "code"]


def with_new_prose(committed, expected):
    """``committed`` (an executed notebook) with the prose cells of ``expected``, when the two
    have the same code cells: a changed sentence or "Next" link then needs no new run. None
    when the code differs."""
    if _code_signature(committed) != _code_signature(expected):
        return None
    code = iter(cell for cell in committed.cells if cell.cell_type == "code")
    updated = copy.deepcopy(expected)
    updated.cells = [next(code) if cell.cell_type == "code" else cell for cell in expected.cells]
    updated.metadata = committed.metadata
    return updated


def check():
    """Problems that make notebooks, student edition or READMEs differ from their sources
    (empty: in sync)."""
    problems = []
    lessons = all_lessons()
    for lesson, language, expected in notebooks(lessons):
        target = NOTEBOOKS / language / f"{lesson.name}.ipynb"
        committed = _committed(target)
        if committed is None:
            problems.append(f"{target.relative_to(REPO)} is missing")
        elif cell_signature(committed) != cell_signature(expected):
            again = ("--student (only its prose changed)" if with_new_prose(committed, expected)
                     else lesson.name[:2])
            problems.append(f"{target.relative_to(REPO)} differs from {lesson.path.relative_to(REPO)}: "
                            f"run python -m tools.build_notebooks {again}")
        elif any(c.cell_type == "code" and c.execution_count is None for c in committed.cells):
            problems.append(f"{target.relative_to(REPO)} has cells that were never executed")
        student = STUDENT / language / f"{lesson.name}.ipynb"
        if _committed(student) != student_notebook(expected, language):
            problems.append(f"{student.relative_to(REPO)} is missing or out of date: "
                            "run python -m tools.build_notebooks --student")
    expected_names = {f"{lesson.name}.ipynb" for lesson in lessons}
    for folder in (NOTEBOOKS, STUDENT):
        for language in LANGUAGES:
            for stray in sorted({p.name for p in (folder / language).glob("*.ipynb")} - expected_names):
                problems.append(f"{folder.name}/{language}/{stray} has no source in lessons/")
    for path, text in generated_texts(lessons).items():
        if path.read_text(encoding="utf-8") != text:
            problems.append(f"{path.name}: a generated block (lesson list or run times) is out of "
                            "date: run python -m tools.build_notebooks --student")
    return problems


def select(lessons, wanted):
    """The lessons named in ``wanted`` by number ("1", "01") or name; all when it is empty."""
    if not wanted:
        return lessons
    chosen = [lesson for lesson in lessons
              if any(w in (lesson.name, lesson.name[:2], str(lesson.number)) for w in wanted)]
    if len(chosen) != len(set(wanted)):
        raise SystemExit(f"unknown lesson in {wanted}; the lessons are "
                         f"{', '.join(lesson.name for lesson in lessons)}")
    return chosen


def build(wanted=()):
    """Execute the notebooks of the lessons in ``wanted`` (all when empty), then write what
    needs no run (``write_without_running``) for every lesson."""
    lessons = all_lessons()
    chosen = {lesson.name for lesson in select(lessons, wanted)}
    for lesson, language, nb in notebooks(lessons):
        if lesson.name in chosen:
            # Executed in build/ so the files a lesson writes never land beside the notebooks.
            workdir = BUILD_RUNS / language
            workdir.mkdir(parents=True, exist_ok=True)
            print(f"executing {language}/{lesson.name}.ipynb ...", flush=True)
            nbformat.write(execute(nb, workdir), NOTEBOOKS / language / f"{lesson.name}.ipynb")
    write_without_running(lessons)


def write_without_running(lessons=None):
    """Write everything that needs no run: the new prose (a "Next" link, a sentence) of every
    notebook whose code did not change, the student edition (``student/``) and the generated
    blocks of READMEs and guides. A notebook whose code changed is left as it is and named,
    to be built (executed) again."""
    lessons = lessons or all_lessons()
    stale = set()
    for lesson, language, nb in notebooks(lessons):
        target = NOTEBOOKS / language / f"{lesson.name}.ipynb"
        committed = _committed(target)
        refreshed = with_new_prose(committed, nb) if committed else None
        if refreshed is None:
            stale.add(lesson.name[:2])
        elif cell_signature(refreshed) != cell_signature(committed):
            print(f"new prose in {language}/{lesson.name}.ipynb (its code did not change: not run again)")
            nbformat.write(refreshed, target)
        (STUDENT / language).mkdir(parents=True, exist_ok=True)
        nbformat.write(student_notebook(nb, language), STUDENT / language / f"{lesson.name}.ipynb")
    write_generated_blocks(lessons)
    if stale:
        print(f"the code of lessons {', '.join(sorted(stale))} changed: run "
              f"python -m tools.build_notebooks {' '.join(sorted(stale))}", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lessons", nargs="*", help="lesson numbers or names (default: all)")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--student", action="store_true",
                        help="only write what needs no run: the student edition (student/), the new "
                             "prose of notebooks whose code did not change, and the generated "
                             "blocks of READMEs and guides")
    action.add_argument("--check", action="store_true",
                        help="only report whether notebooks, student edition and READMEs "
                             "match their sources")
    args = parser.parse_args()
    try:
        if args.check:
            problems = check()
            print("\n".join(problems) or "notebooks, student edition and READMEs are in sync with lessons/")
            return 1 if problems else 0
        if args.student:
            write_without_running()
            print(f"wrote the student edition to {STUDENT}, and the prose and lists that need no run")
        else:
            build(args.lessons)
    except LessonError as err:
        print(err, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
