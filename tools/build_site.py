"""Build the website of the lessons, one site per language, from the committed notebooks.

    python -m tools.build_site                  # into build/site/ (make site)
    python -m tools.build_site --out DIR        # elsewhere

The pages show the notebooks as they are committed, outputs and figures included: CI executed
them, and the site never runs them again. So the build first makes sure that they are in sync
with their lessons (``tools.build_notebooks.check``, the notebook build's ``--check``) and
refuses to run when they are not: a page of the site is never older than its lesson.

For each language it lays out the sources of the pages (``tools.site_links`` says which file
shows which page) in a temporary folder, with a home page made from the README of that
language and the lessons' headers, and runs Sphinx (MyST-NB, sphinx-book-theme) with the
configuration in ``site/``.
``build/site/index.html`` lets the reader choose a language. Everything a page needs is in
``build/site/``: open it from a USB stick, or serve it with ``python -m http.server -d build/site``.
"""

import argparse
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from string import Template

from tools.generated_blocks import DASHES
from tools.project import BUILD, LANGUAGES, READMES, REPO, STUDENT, read_lessons, repository_url
from tools.site_links import (
    GLOSSARY,
    LANGUAGE_NAMES,
    downloads,
    github_url,
    pages,
    pages_url,
    sphinx_language,
)

SITE = REPO / "site"                  # Sphinx's configuration, templates, styles, page templates
OUT = BUILD / "site"
CHINESE_WORD = re.compile(r"[\u4e00-\u9fff]{2,}")


def stale_notebooks():
    """What the notebook build's ``--check`` reports (an empty list: in sync)."""
    from tools.build_notebooks import check

    return check()


# --------------------------------------------------------------------------- the home page

def readme_parts(language):
    """The title, the opening paragraph and the block of the two commands of a README."""
    text = READMES[language].read_text(encoding="utf-8")
    title = re.search(r"^# (.+)$", text, re.M).group(1)
    blocks = [block.strip() for block in text.split("\n\n")]
    intro = next(block for block in blocks[1:] if not block.startswith(("#", "[", "<!--")))
    commands = re.search(r"^```bash\n(?:make (?:run|test) .*\n){2}```$", text, re.M).group(0)
    return title, intro, commands


def home_page(language, lessons):
    """The home page of ``language`` in MyST Markdown: ``site/home.LANGUAGE.md`` filled in."""
    title, intro, commands = readme_parts(language)
    lesson_list = "\n".join(
        f"{lesson.number}. [{lesson.title[language].split('. ', 1)[1]}](notebooks/{language}/"
        f"{lesson.name}.ipynb){DASHES[language]}{lesson.summary[language]}" for lesson in lessons)
    student_list = "\n".join(
        f"{lesson.number}. [{lesson.title[language].split('. ', 1)[1]}](student/{language}/"
        f"{lesson.name}.ipynb)" for lesson in lessons)
    template = Template((SITE / f"home.{language}.md").read_text(encoding="utf-8"))
    return template.substitute(
        title=title, intro=intro, lessons=lesson_list, commands=commands, students=student_list,
        readme=github_url(READMES[language]), repository=repository_url(),
        student_folder=github_url(STUDENT / language),
        toctree="\n".join(name for name in pages(language, lessons) if name != "index"))


def glossary_words():
    """The Chinese terms of the glossary, one per line, for the search's word splitter (jieba):
    a search for 状态字典 then finds the pages that use it, not only 状态 and 字典."""
    rows = [line.split("|")[2] for line in GLOSSARY.read_text(encoding="utf-8").splitlines()
            if line.startswith("|") and line.count("|") > 3]
    return sorted({word for cell in rows for word in CHINESE_WORD.findall(cell)})


# --------------------------------------------------------------------------- the build

def lay_out(language, lessons, folder):
    """Write the sources of the site of ``language`` into ``folder``: ``pages/`` for Sphinx,
    ``files/`` for the notebooks to download. Returns Sphinx's settings for this language."""
    source, files = folder / "pages", folder / "files"
    source.mkdir(parents=True)
    for name, path in pages(language, lessons).items():
        if name == "index":
            (source / "index.md").write_text(home_page(language, lessons), encoding="utf-8")
        else:
            shutil.copyfile(path, source / f"{name}{path.suffix}")
    for name, path in downloads(language, lessons).items():
        (files / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, files / name)
    title = readme_parts(language)[0]
    settings = {"language": sphinx_language(language), "project": title, "html_title": title,
                "html_extra_path": str(files), "html_baseurl": f"{pages_url()}{language}/"}
    if language == "zh-CN":
        words = folder / "glossary-words.txt"
        words.write_text("".join(f"{word} 1000\n" for word in glossary_words()), encoding="utf-8")
        settings["html_search_options.dict"] = str(words)
    return source, settings


def run_sphinx(source, out, doctrees, settings):
    """Build one language's site with Sphinx, in this process, warnings counting as errors."""
    from sphinx import locale
    from sphinx.cmd.build import build_main

    arguments = ["--builder", "html", "--quiet", "--fail-on-warning", "--fresh-env",
                 "--conf-dir", str(SITE), "--doctree-dir", str(doctrees)]
    for name, value in settings.items():
        arguments += ["--define", f"{name}={value}"]
    # Sphinx keeps the translations of its words ("Search", "Contents") for the whole process:
    # each language starts without the other's
    locale.translators.clear()
    if build_main([*arguments, str(source), str(out)]) != 0:
        raise RuntimeError(f"Sphinx could not build {out.name} from {source} (see above)")


def choose_language_page(out):
    """``out/index.html``: the page that leads to each language's site."""
    titles = {language: readme_parts(language)[0] for language in LANGUAGES}
    heading = "<br>".join(f'<span lang="{language}">{title}</span>' for language, title in titles.items())
    links = "\n".join(f'    <li><a href="{language}/index.html" hreflang="{language}" lang="{language}">'
                      f"{LANGUAGE_NAMES[language]}</a></li>" for language in LANGUAGES)
    page = Template((SITE / "choose-language.html").read_text(encoding="utf-8"))
    (out / "index.html").write_text(page.substitute(title=" · ".join(titles.values()), heading=heading,
                                                    links=links), encoding="utf-8")


def build(out=OUT):
    """Build both sites into ``out`` (replacing what was there), without any check."""
    out = Path(out)
    lessons = read_lessons()
    with tempfile.TemporaryDirectory(prefix="site-") as work:
        work = Path(work)
        for language in LANGUAGES:
            source, settings = lay_out(language, lessons, work / language)
            # MyST-NB writes the notebooks it reads beside Sphinx's output folder, not in it
            run_sphinx(source, work / language / "html", work / language / "doctrees", settings)
        shutil.rmtree(out, ignore_errors=True)
        for language in LANGUAGES:
            shutil.copytree(work / language / "html", out / language)
    choose_language_page(out)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"where to write the site (default: {OUT})")
    args = parser.parse_args(argv)
    problems = stale_notebooks()
    if problems:
        print("The notebooks are not in sync with their lessons, so the site would show old pages:\n- "
              + "\n- ".join(problems) + "\nBuild the notebooks first (python -m tools.build_notebooks).",
              file=sys.stderr)
        return 1
    started = time.perf_counter()
    out = build(args.out)
    print(f"built the site in {time.perf_counter() - started:.0f} s: open {out / 'index.html'}, "
          f"or serve it with python -m http.server -d {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
