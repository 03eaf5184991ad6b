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
links, the lesson tables of both READMEs and the student-edition tables of
both instructor guides.

    python tools/build_notebooks.py                 # check, build and execute every lesson
    python tools/build_notebooks.py 01              # one lesson, by number or name
    python tools/build_notebooks.py --student       # only the student edition (runs nothing)
    python tools/build_notebooks.py --check         # are notebooks, student edition and READMEs in sync?

The repository address (for the Colab cells and badges) is read from
``pyproject.toml``, its single source.
"""

import argparse
import ast
import copy
import importlib.util
import io
import re
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path

import jupytext
import nbformat

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, published as tomli
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
LESSONS = REPO / "lessons"
NOTEBOOKS = REPO / "notebooks"
STUDENT = REPO / "student"  # the student edition: solutions replaced by a stub, no outputs
BUILD_RUNS = REPO / "build" / "lesson-runs"  # where the build executes the notebooks
LANGUAGES = ("en", "zh-CN")
READMES = {"en": REPO / "README.md", "zh-CN": REPO / "README.zh-CN.md"}
GUIDES = {"en": REPO / "INSTRUCTORS.md", "zh-CN": REPO / "INSTRUCTORS.zh-CN.md"}
LESSONS_START, LESSONS_END = "<!-- lessons:start -->", "<!-- lessons:end -->"
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
# The kernel's own log is noise in a report: warnings at start-up ("running over TCP
# without encryption"), and "KeyboardInterrupt caught in kernel" when jupyter_client
# interrupts a kernel before shutting it down (it always does) while a message is being
# handled. A failing cell or a dead kernel is still reported, by nbclient and papermill.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=CRITICAL"]

TRANSLATION = "# zh-CN:"
# nbgrader's markers of a solution region, and the stub that replaces it in the student edition.
BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
SOLUTION_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
EXERCISE_CHECK = re.compile(r"^check\.exercise_(\d+)\(", re.M)

# What every lesson must have; ``lesson_problems`` checks each of these.
RULES = """\
- its file name is NN-words.py, and its title starts with its number ("1. ") in both languages;
- its header gives a title, a one-line summary (in both languages) and quick_run parameters;
- every prose cell is an English cell followed by its Chinese twin;
- every comment in its code is followed by a "# zh-CN:" line that translates it;
- exactly one code cell is tagged "parameters"; it assigns plain values, at least to
  epochs, device, data_dir and seed, and quick_run only names those parameters;
- the first code cell after it checks them early: it calls devices.get_device,
  fc_model.check_positive_int and helper.prepare_fashion_mnist;
- it has two or three exercises, numbered from 1: each is a code cell with one solution
  region (### BEGIN SOLUTION ... ### END SOLUTION), followed by a code cell that calls
  check.exercise_N(...)."""
REQUIRED_PARAMETERS = ("epochs", "device", "data_dir", "seed")
EARLY_CHECKS = ("devices.get_device", "fc_model.check_positive_int", "helper.prepare_fashion_mnist")

NEXT_LESSON = {"en": "**Next:** [{title}]({name}.ipynb): {summary}",
               "zh-CN": "**下一课：**[{title}]({name}.ipynb)：{summary}"}
README_HEADERS = {"en": "| Lesson | English | 中文 |", "zh-CN": "| 课程 | English | 中文 |"}
README_DASHES = {"en": " — ", "zh-CN": " —— "}


class LessonError(ValueError):
    """A lesson source that breaks the rules; the message lists every problem."""


@dataclass
class Lesson:
    """One lesson source, read by jupytext: its name, header fields and cells (both languages)."""
    path: Path
    title: dict
    summary: dict
    quick_run: dict
    cells: list

    @property
    def name(self):
        return self.path.stem

    @property
    def number(self):
        return int(self.name[:2])


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


def student_code(source):
    """``source`` with each solution region replaced by nbgrader's stub, indented like it."""
    lines = source.splitlines()
    for begin, end in reversed(solution_regions(source)):
        lines[begin:end + 1] = [_indent(lines[begin]) + line for line in SOLUTION_STUB]
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
    problems.extend(exercise_problems(code))
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
    if not 2 <= len(exercises) <= 3:
        problems.append(f"the lesson has {len(exercises)} exercises (solution regions); "
                        "it needs two or three")
    for number, index in enumerate(exercises, start=1):
        following = code[index + 1].source if index + 1 < len(code) else ""
        if [int(n) for n in EXERCISE_CHECK.findall(following)] != [number]:
            problems.append(f"exercise {number} is not followed by a cell that calls "
                            f"check.exercise_{number}(...)")
    return problems


def load_lesson(path):
    """Read a lesson source and check it; ``LessonError`` lists every rule it breaks."""
    path = Path(path)
    notebook = jupytext.read(path, fmt="py:percent")
    header = notebook.metadata.get("lesson", {})
    lesson = Lesson(path=path, title=header.get("title", {}), summary=header.get("summary", {}),
                    quick_run=header.get("quick_run", {}), cells=notebook.cells)
    problems = lesson_problems(lesson)
    if problems:
        raise LessonError(f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path} "
                          "breaks the lesson rules:\n- " + "\n- ".join(problems)
                          + f"\nThe rules (tools/build_notebooks.py):\n{RULES}")
    return lesson


def lesson_paths():
    return sorted(LESSONS.glob("[0-9][0-9]-*.py"))


def all_lessons():
    return [load_lesson(path) for path in lesson_paths()]


# --------------------------------------------------------------------------- notebooks

def read_pyproject():
    """The parsed ``pyproject.toml``."""
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def repository_url():
    """The repository address, from ``[project.urls] Repository`` in pyproject.toml."""
    return read_pyproject()["project"]["urls"]["Repository"]


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


def student_notebook(nb):
    """The student edition of an unexecuted notebook: each solution replaced by the stub."""
    student = copy.deepcopy(nb)
    for cell in student.cells:
        if cell.cell_type == "code":
            cell.source = student_code(cell.source)
    return student


def notebooks(lessons):
    """``(lesson, language, unexecuted notebook)`` for every lesson and language."""
    for index, lesson in enumerate(lessons):
        following = lessons[index + 1] if index + 1 < len(lessons) else None
        for language in LANGUAGES:
            yield lesson, language, make_notebook(lesson, language, following)


def execute(nb, folder):
    """Run ``nb`` top to bottom in ``folder`` (raises on the first error)."""
    from nbclient import NotebookClient

    NotebookClient(nb, timeout=1200, kernel_name="python3", record_timing=False,
                   extra_arguments=KERNEL_ARGUMENTS,
                   resources={"metadata": {"path": str(folder)}}).execute()
    nb.metadata.pop("widgets", None)
    return nb


def cell_signature(nb):
    """What must match between a committed notebook and its source: types, sources, tags."""
    return [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in nb.cells]


# --------------------------------------------------------------------------- READMEs

def lessons_block(lessons, language, folder="notebooks"):
    """The list of lessons, with a Colab badge per notebook and language, for the
    notebooks in ``folder`` (``notebooks`` in the READMEs, ``student`` in the guides)."""
    owner_repo = repository_url().removeprefix("https://github.com/").rstrip("/")
    items = [f"{lesson.number}. **{lesson.title[language].split('. ', 1)[1]}**"
             f"{README_DASHES[language]}{lesson.summary[language]}" for lesson in lessons]
    rows = [README_HEADERS[language], "|---|---|---|"]
    for lesson in lessons:
        links = [
            f"[![Open In Colab]({COLAB_BADGE})](https://colab.research.google.com/github/"
            f"{owner_repo}/blob/main/{folder}/{lang}/{lesson.name}.ipynb)"
            for lang in LANGUAGES
        ]
        rows.append(f"| [{lesson.title[language]}]({folder}/{language}/{lesson.name}.ipynb) | "
                    + " | ".join(links) + " |")
    return "\n".join(items) + "\n\n" + "\n".join(rows)


def with_lessons_block(path, block):
    """The text of ``path`` with its lessons:start ... lessons:end block replaced by ``block``."""
    text = path.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(LESSONS_START) + ".*?" + re.escape(LESSONS_END), re.S)
    if not pattern.search(text):
        raise ValueError(f"{path.name} lacks the {LESSONS_START} ... {LESSONS_END} block")
    return pattern.sub(lambda _: f"{LESSONS_START}\n{block}\n{LESSONS_END}", text)


def generated_texts(lessons):
    """``{path: text}`` for the READMEs and instructor guides, with their lesson lists."""
    texts = {path: with_lessons_block(path, lessons_block(lessons, language))
             for language, path in READMES.items()}
    texts.update({path: with_lessons_block(path, lessons_block(lessons, language, "student"))
                  for language, path in GUIDES.items()})
    return texts


# --------------------------------------------------------------------------- commands

def check():
    """Problems that make notebooks or READMEs differ from their sources (empty: in sync)."""
    problems = []
    lessons = all_lessons()
    for lesson, language, expected in notebooks(lessons):
        target = NOTEBOOKS / language / f"{lesson.name}.ipynb"
        if not target.exists():
            problems.append(f"{target.relative_to(REPO)} is missing")
            continue
        committed = nbformat.read(target, as_version=4)
        if cell_signature(committed) != cell_signature(expected):
            problems.append(f"{target.relative_to(REPO)} differs from {lesson.path.relative_to(REPO)}")
        elif any(c.cell_type == "code" and c.execution_count is None for c in committed.cells):
            problems.append(f"{target.relative_to(REPO)} has cells that were never executed")
        student = STUDENT / language / f"{lesson.name}.ipynb"
        if not student.exists() or nbformat.read(student, as_version=4) != student_notebook(expected):
            problems.append(f"{student.relative_to(REPO)} is missing or out of date: "
                            "run python tools/build_notebooks.py --student")
    expected_names = {f"{lesson.name}.ipynb" for lesson in lessons}
    for folder in (NOTEBOOKS, STUDENT):
        for language in LANGUAGES:
            for stray in sorted({p.name for p in (folder / language).glob("*.ipynb")} - expected_names):
                problems.append(f"{folder.name}/{language}/{stray} has no source in lessons/")
    for path, text in generated_texts(lessons).items():
        if path.read_text(encoding="utf-8") != text:
            problems.append(f"{path.name}: the lesson list is out of date")
    return problems


def companion_modules():
    """The companion modules, as pyproject.toml lists them for ``pip install .``."""
    return read_pyproject()["tool"]["setuptools"]["py-modules"]


def modules_outside_the_repository():
    """Companion modules that Python would import from somewhere other than this checkout."""
    found = {name: importlib.util.find_spec(name) for name in companion_modules()}
    return [f"{name} from {spec.origin if spec else 'nowhere'}" for name, spec in found.items()
            if spec is None or not Path(spec.origin).resolve().is_relative_to(REPO)]


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
    stale = modules_outside_the_repository()
    if stale:
        raise SystemExit(
            f"the notebooks would import {', '.join(stale)}, not this checkout's files: "
            "install the companion modules in editable mode with `pip install -e .`")
    lessons = all_lessons()
    chosen = {lesson.name for lesson in select(lessons, wanted)}
    for lesson, language, nb in notebooks(lessons):
        if lesson.name not in chosen:
            continue
        # Executed in build/ so the files a lesson writes never land beside the notebooks.
        workdir = BUILD_RUNS / language
        workdir.mkdir(parents=True, exist_ok=True)
        print(f"executing {language}/{lesson.name}.ipynb ...", flush=True)
        nbformat.write(execute(nb, workdir), NOTEBOOKS / language / f"{lesson.name}.ipynb")
    write_student_edition(lessons)


def write_student_edition(lessons=None):
    """Write ``student/`` (nothing is executed) and the lesson lists of READMEs and guides."""
    lessons = lessons or all_lessons()
    for lesson, language, nb in notebooks(lessons):
        (STUDENT / language).mkdir(parents=True, exist_ok=True)
        nbformat.write(student_notebook(nb), STUDENT / language / f"{lesson.name}.ipynb")
    for path, text in generated_texts(lessons).items():
        path.write_text(text, encoding="utf-8")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lessons", nargs="*", help="lesson numbers or names (default: all)")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--student", action="store_true",
                        help="only write the student edition, student/ (executes nothing)")
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
            write_student_edition()
            print(f"wrote the student edition to {STUDENT}")
        else:
            build(args.lessons)
    except LessonError as err:
        print(err, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
