"""Build the bilingual notebooks from their sources in ``lessons/``.

Each lesson is one Python file in ``lessons/`` that lists its cells once,
with the English and Chinese prose side by side and the code written once
(with a translation of each of its comments for the Chinese notebook). This
script writes ``notebooks/en/NAME.ipynb`` and ``notebooks/zh-CN/NAME.ipynb``,
executes them so the committed outputs come from a real run, and refreshes
the Colab badge tables of both READMEs.

    python tools/build_notebooks.py                 # build and execute every lesson
    python tools/build_notebooks.py 01-saving-and-loading-models
    python tools/build_notebooks.py --check         # are notebooks and READMEs in sync?

The repository address (for the Colab cells and badges) is read from
``pyproject.toml``, its single source.
"""

import argparse
import io
import re
import runpy
import sys
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, published as tomli
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
LESSONS = REPO / "lessons"
NOTEBOOKS = REPO / "notebooks"
LANGUAGES = ("en", "zh-CN")
READMES = {"en": REPO / "README.md", "zh-CN": REPO / "README.zh-CN.md"}
BADGES_START, BADGES_END = "<!-- colab-badges:start -->", "<!-- colab-badges:end -->"
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
# Kernels run on this machine only; their start-up warnings (such as "running over
# TCP without encryption") are noise in a report. Errors still show.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]


@dataclass
class Markdown:
    """A prose cell, written in both languages."""
    en: str
    zh: str


@dataclass
class Code:
    """A code cell, written once. ``zh_comments`` maps each of its comments to Chinese."""
    en: str
    zh_comments: dict = field(default_factory=dict)
    tags: tuple = field(default_factory=tuple)

    def source(self, language):
        if language == "en":
            return self.en
        return translate_comments(self.en, self.zh_comments)


def translate_comments(source, translations):
    """``source`` with every comment replaced by its translation; the code stays byte for byte."""
    lines = source.splitlines(keepends=True)
    comments = [t for t in tokenize.generate_tokens(io.StringIO(source).readline)
                if t.type == tokenize.COMMENT]
    unused = set(translations) - {t.string for t in comments}
    if unused:
        raise ValueError(f"translations for comments that the code does not have: {sorted(unused)}")
    for token in reversed(comments):
        if token.string not in translations:
            raise ValueError(f"no Chinese translation for the comment {token.string!r}")
        row, column = token.start
        line = lines[row - 1]
        lines[row - 1] = line[:column] + translations[token.string] + line[column + len(token.string):]
    return "".join(lines)


def read_pyproject():
    """The parsed ``pyproject.toml``."""
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def repository_url():
    """The repository address, from ``[project.urls] Repository`` in pyproject.toml."""
    return read_pyproject()["project"]["urls"]["Repository"]


def colab_cell():
    """The first code cell of every notebook: installs the companion modules on Colab only."""
    comment = "# On Google Colab only: install the companion modules helper, fc_model and devices."
    code = (
        f"{comment}\n"
        "import sys\n"
        "\n"
        "if \"google.colab\" in sys.modules:\n"
        "    import subprocess\n"
        "\n"
        "    subprocess.run([sys.executable, \"-m\", \"pip\", \"install\", \"--quiet\",\n"
        f"                    \"git+{repository_url()}\"], check=True)"
    )
    return Code(en=code, zh_comments={comment: "# 仅在 Google Colab 上运行：安装配套模块 helper、fc_model 和 devices。"})


def strip_comments(source):
    """The code of a cell without comments and blank lines, for comparing languages."""
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline)
              if t.type != tokenize.COMMENT]
    code = tokenize.untokenize(tokens)
    return "\n".join(line.rstrip() for line in code.splitlines() if line.strip())


def load_lesson(path):
    """Read a lesson source: its NAME, TITLE (per language) and CELLS."""
    lesson = runpy.run_path(str(path), init_globals={"Markdown": Markdown, "Code": Code})
    cells = [lesson["CELLS"][0], colab_cell(), *lesson["CELLS"][1:]]
    return lesson["NAME"], lesson["TITLE"], cells


def lesson_paths():
    return sorted(LESSONS.glob("[0-9][0-9]-*.py"))


def make_notebook(cells, language):
    """An unexecuted notebook in ``language``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    for index, cell in enumerate(cells):
        if isinstance(cell, Markdown):
            new = nbformat.v4.new_markdown_cell(cell.en if language == "en" else cell.zh)
        else:
            new = nbformat.v4.new_code_cell(cell.source(language))
            if cell.tags:
                new.metadata["tags"] = list(cell.tags)
        new.id = f"cell-{index}"
        nb.cells.append(new)
    return nb


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


def badge_table(language):
    """The README table with one Colab badge per notebook and language."""
    owner_repo = repository_url().removeprefix("https://github.com/").rstrip("/")
    header = ("| Lesson | English | 中文 |" if language == "en" else "| 课程 | English | 中文 |")
    rows = [header, "|---|---|---|"]
    for path in lesson_paths():
        name, title, _ = load_lesson(path)
        links = [
            f"[![Open In Colab]({COLAB_BADGE})](https://colab.research.google.com/github/"
            f"{owner_repo}/blob/main/notebooks/{lang}/{name}.ipynb)"
            for lang in LANGUAGES
        ]
        rows.append(f"| [{title[language]}](notebooks/{language}/{name}.ipynb) | "
                    + " | ".join(links) + " |")
    return "\n".join(rows)


def readme_with_badges(language):
    text = READMES[language].read_text(encoding="utf-8")
    pattern = re.compile(re.escape(BADGES_START) + ".*?" + re.escape(BADGES_END), re.S)
    if not pattern.search(text):
        raise ValueError(f"{READMES[language].name} lacks the {BADGES_START} ... {BADGES_END} block")
    block = f"{BADGES_START}\n{badge_table(language)}\n{BADGES_END}"
    return pattern.sub(lambda _: block, text)


def check():
    """Problems that make notebooks or READMEs differ from their sources (empty: in sync)."""
    problems = []
    for path in lesson_paths():
        name, _, cells = load_lesson(path)
        for language in LANGUAGES:
            target = NOTEBOOKS / language / f"{name}.ipynb"
            if not target.exists():
                problems.append(f"{target.relative_to(REPO)} is missing")
                continue
            committed = nbformat.read(target, as_version=4)
            if cell_signature(committed) != cell_signature(make_notebook(cells, language)):
                problems.append(f"{target.relative_to(REPO)} differs from {path.relative_to(REPO)}")
            elif any(c.cell_type == "code" and c.execution_count is None for c in committed.cells):
                problems.append(f"{target.relative_to(REPO)} has cells that were never executed")
    for language, readme in READMES.items():
        if readme.read_text(encoding="utf-8") != readme_with_badges(language):
            problems.append(f"{readme.name}: the Colab badge table is out of date")
    return problems


def build(names=()):
    for path in lesson_paths():
        name, _, cells = load_lesson(path)
        if names and name not in names:
            continue
        for language in LANGUAGES:
            folder = NOTEBOOKS / language
            folder.mkdir(parents=True, exist_ok=True)
            print(f"executing {language}/{name}.ipynb ...", flush=True)
            nb = execute(make_notebook(cells, language), folder)
            nbformat.write(nb, folder / f"{name}.ipynb")
    for language, readme in READMES.items():
        readme.write_text(readme_with_badges(language), encoding="utf-8")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="lesson names to build (default: all)")
    parser.add_argument("--check", action="store_true",
                        help="only report whether notebooks and READMEs match their sources")
    args = parser.parse_args()
    if args.check:
        problems = check()
        print("\n".join(problems) or "notebooks and READMEs are in sync with lessons/")
        return 1 if problems else 0
    build(args.names)
    return 0


if __name__ == "__main__":
    sys.exit(main())
