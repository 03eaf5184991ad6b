"""Where everything the website shows comes from, and where it goes: the one table that the
site build (``tools.build_site``), its Sphinx additions (``tools.site_sphinx``) and the tests
read.

Each language has a site of its own, ``build/site/en/`` and ``build/site/zh-CN/``, with the
same pages, each shown by one file of the repository:

- ``index``: the home page, made from the README of that language;
- one page per lesson, ``NN-name``: the executed notebook of that language, as committed;
- ``glossary``: ``notebooks/GLOSSARY.md`` (one file, in both languages);
- ``instructors``: the instructor guide of that language.

and two notebook files per lesson that a learner downloads: ``NN-name.ipynb`` (the executed
notebook) and ``student/NN-name.ipynb`` (the student edition). Everything else a page links to
(a module, ``CONTRIBUTING.md``) is linked on GitHub.

The addresses of the world outside come from the one place that makes them,
``tools.project``: the Colab addresses are those of the READMEs' badges, and the repository's
comes from ``pyproject.toml``.
"""

import posixpath

from tools import project
from tools.project import GUIDES, LANGUAGES, NOTEBOOKS, READMES, REPO, STUDENT, colab_url, repository_url

LANGUAGE_NAMES = {"en": "English", "zh-CN": "中文"}
# Colab opens a notebook on GitHub by its address there, after this prefix
GLOSSARY = NOTEBOOKS / "GLOSSARY.md"


def other_language(language):
    """The site's other language: "zh-CN" for "en", and the other way round."""
    return next(other for other in LANGUAGES if other != language)


def sphinx_language(language):
    """Sphinx's name of a language ("zh_CN"), which also chooses its search's word splitter."""
    return language.replace("-", "_")


def _repository_path(path):
    return path.relative_to(REPO).as_posix()


def pages(language, lessons):
    """``{page name: repository file}`` of the site of ``language``, in the order of its
    table of contents (the home page first)."""
    return {"index": READMES[language],
            **{lesson.name: NOTEBOOKS / language / f"{lesson.name}.ipynb" for lesson in lessons},
            "glossary": GLOSSARY,
            "instructors": GUIDES[language]}


def downloads(language, lessons):
    """``{file in the site: repository file}``: the notebooks a learner downloads from it."""
    files = {}
    for lesson in lessons:
        files[f"{lesson.name}.ipynb"] = NOTEBOOKS / language / f"{lesson.name}.ipynb"
        files[f"student/{lesson.name}.ipynb"] = STUDENT / language / f"{lesson.name}.ipynb"
    return files


def github_url(path):
    """The address on GitHub of the repository file or folder ``path`` (a ``Path``)."""
    if path == REPO:
        return repository_url()
    return project.github_url(_repository_path(path), folder=path.is_dir())


def pages_url():
    """Where GitHub Pages publishes the site: ``https://OWNER.github.io/NAME/``."""
    owner, name = repository_url().removeprefix("https://github.com/").strip("/").split("/")
    return f"https://{owner.lower()}.github.io/{name}/"


def lesson_links(lesson, language):
    """The links under a lesson's title: ``{what: address}``, relative to the lesson's page for
    the files the site serves."""
    notebook = NOTEBOOKS / language / f"{lesson.name}.ipynb"
    student = STUDENT / language / f"{lesson.name}.ipynb"
    return {"colab": colab_url(_repository_path(notebook)),
            "colab_student": colab_url(_repository_path(student)),
            "download": f"{lesson.name}.ipynb",
            "download_student": f"student/{lesson.name}.ipynb",
            "source": github_url(lesson.path)}


def site_address(path, language, lessons, page):
    """The address, relative to ``page`` of the site of ``language``, that shows the repository
    file ``path``: its page or download in this language's site, a guide or README of the other
    language in the other site, or else the file on GitHub."""
    for where in (language, other_language(language)):
        shown = {**{f"{name}.html": file for name, file in pages(where, lessons).items()},
                 **downloads(where, lessons)}
        for address, file in shown.items():
            if file == path:
                if where != language:
                    address = f"{where}/{address}"
                    page = f"{language}/{page}"
                return posixpath.relpath(address, posixpath.dirname(page) or ".")
    return github_url(path)
