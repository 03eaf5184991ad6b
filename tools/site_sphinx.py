"""What the website adds to Sphinx (``site/conf.py`` loads this module as an extension):

- under the title of every lesson page, its links: the notebook and its student edition on
  Colab, both notebooks to download, and the lesson's source on GitHub;
- on every page, the address of the same page in the other language, for the language switch
  (``site/_templates/language-switch.html``);
- the Colab badges of the guides' lesson tables are the site's own copy
  (``site/_static/colab-badge.svg``), not an image from Colab's server;
- the links between the repository's files that the guides and the glossary contain
  (``[README](README.md)``) lead to the page or file of the site that shows that file, or else
  to the file on GitHub (``tools.site_links.site_address``).
"""

import html
import logging
import posixpath

from docutils import nodes
from sphinx import addnodes
from sphinx.transforms.post_transforms import SphinxPostTransform

from tools.generated_blocks import COLAB_BADGE
from tools.project import LANGUAGES, read_lessons
from tools.site_links import (
    LANGUAGE_NAMES,
    lesson_links,
    other_language,
    pages,
    site_address,
    sphinx_language,
)

LINK_TEXTS = {
    "en": {"colab": "Open in Colab", "colab_student": "Student edition in Colab",
           "download": "Download notebook", "download_student": "Download student edition",
           "source": "Source on GitHub", "label": "This lesson elsewhere"},
    "zh-CN": {"colab": "在 Colab 中打开", "colab_student": "在 Colab 中打开学生版",
              "download": "下载 notebook", "download_student": "下载学生版",
              "source": "在 GitHub 上查看源文件", "label": "本课的其他入口"},
}
DOWNLOADS = ("download", "download_student")  # links that save their file rather than open it


def site_language(app):
    """The language of the site being built, as the lessons name it ("zh-CN")."""
    return next(language for language in LANGUAGES if sphinx_language(language) == app.config.language)


def lesson_links_html(lesson, language):
    """The row of links under a lesson's title, as HTML."""
    texts = LINK_TEXTS[language]
    links = []
    for what, url in lesson_links(lesson, language).items():
        download = " download" if what in DOWNLOADS else ""
        links.append(f'<a class="lesson-link lesson-link-{what}" href="{html.escape(url)}"{download}>'
                     f"{html.escape(texts[what])}</a>")
    return (f'<nav class="lesson-links" aria-label="{html.escape(texts["label"])}">'
            + "".join(links) + "</nav>")


def add_lesson_links(app, doctree):
    """``doctree-read``: put the links of a lesson under its title."""
    lesson = next((lesson for lesson in app.site_lessons if lesson.name == app.env.docname), None)
    if lesson is None:
        return
    section = next(iter(doctree.findall(nodes.section)))
    title = section.next_node(nodes.title)
    title.parent.insert(title.parent.index(title) + 1,
                        nodes.raw("", lesson_links_html(lesson, site_language(app)), format="html"))


def use_own_badges(app, doctree):
    """``doctree-read``: show the site's copy of the Colab badge, so that no page loads an
    image from elsewhere. (It runs after Sphinx has listed the images to copy, which leaves
    out images from other servers: the address is then written into the page as it is.)"""
    for image in doctree.findall(nodes.image):
        if image["uri"] == COLAB_BADGE:
            image["uri"] = posixpath.relpath("_static/colab-badge.svg", posixpath.dirname(app.env.docname) or ".")


def add_language_switch(app, pagename, templatename, context, doctree):
    """``html-page-context``: what the language switch shows, and the ``lang`` of the page in
    the form HTML wants ("zh-CN", where Sphinx says "zh_CN")."""
    language = site_language(app)
    twin = other_language(language)
    context["language"] = language
    context["twin_language"] = twin
    context["twin_language_name"] = LANGUAGE_NAMES[twin]
    context["twin_url"] = posixpath.relpath(f"{twin}/{pagename}.html", posixpath.dirname(f"{language}/{pagename}"))


class RepositoryLinks(SphinxPostTransform):
    """Turn a link to a file of the repository into a link to the site's page or file that
    shows it, or to the file on GitHub (before MyST-Parser would call it a missing target)."""

    default_priority = 8  # before MyST-Parser's resolver (9)

    def run(self, **kwargs):
        language = site_language(self.app)
        lessons = self.app.site_lessons
        source = pages(language, lessons).get(self.env.docname)
        if source is None:
            return
        for node in list(self.document.findall(addnodes.pending_xref)):
            if node.get("reftype") != "myst" or node.get("refdomain") == "doc":
                continue
            target, _, anchor = node["reftarget"].partition("#")
            path = (source.parent / target).resolve()
            if not target or not path.exists():
                continue
            address = site_address(path, language, lessons, self.env.docname)
            if anchor:
                address += "#" + anchor
            reference = nodes.reference("", "", refuri=address, internal="://" not in address)
            reference += node.children
            node.replace_self(reference)


def quiet_word_splitter(app):
    """``builder-inited``: jieba, the word splitter of the Chinese search, need not tell of
    loading its dictionary (four lines, each twice through Sphinx's log)."""
    if site_language(app) == "zh-CN":
        import jieba

        jieba.setLogLevel(logging.WARNING)


def setup(app):
    app.site_lessons = read_lessons()  # read once for the whole build
    app.connect("builder-inited", quiet_word_splitter)
    app.connect("doctree-read", add_lesson_links)
    app.connect("doctree-read", use_own_badges, priority=600)  # after Sphinx's image collector (500)
    app.connect("html-page-context", add_language_switch)
    app.add_post_transform(RepositoryLinks)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

