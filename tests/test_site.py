"""The website (``tools.build_site``): built once for the session into a temporary folder,
served from a local port, and read in headless Chromium (Debian's ``chromium``, driven by
Playwright) as a learner would read it.

Every page is loaded once (``visits``); the tests then check what the browser saw: no console
error, no failed request, no request to another host, links and anchors that resolve, the
language switch, figures and outputs, search in both languages, the Colab and download links,
and an accessibility pass with axe-core. Screenshots of a lesson page in each language, at a
desktop's and a phone's width, go to ``build/site-screenshots/`` for a person to look at.
"""

import json
import os
import re
import shutil
import tempfile
import threading
import urllib.request
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, urlsplit

import nbformat
import pytest

from tools import build_notebooks, build_site
from tools.build_notebooks import code_shape
from tools.project import BUILD, GUIDES, LANGUAGES, NOTEBOOKS, READMES, REPO, STUDENT, read_lessons
from tools.site_links import other_language, pages_url

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = BUILD / "site-screenshots"
SIZES = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}
LESSONS = read_lessons()
# A search for each term must find each of these lessons: the lessons whose title has the term,
# and the lesson that the glossary names for "general checkpoint" (lesson 2)
SEARCHES = {"en": {"checkpoint": {lesson.name for lesson in LESSONS if "checkpoint" in lesson.title["en"].lower()},
                   "general checkpoint": {LESSONS[1].name}},
            "zh-CN": {"检查点": {lesson.name for lesson in LESSONS if "检查点" in lesson.title["zh-CN"]},
                      "通用检查点": {LESSONS[1].name}}}


@pytest.fixture(scope="session")
def site(tmp_path_factory):
    """The site, built once (without the freshness check, which has its own test)."""
    return build_site.build(tmp_path_factory.mktemp("site") / "site")


def test_every_lesson_and_language_has_its_page(site):
    for language in LANGUAGES:
        for name in ("index", "glossary", "instructors", "search"):
            assert (site / language / f"{name}.html").is_file(), f"{language}/{name}.html is missing"
        for lesson in LESSONS:
            assert (site / language / f"{lesson.name}.html").is_file(), f"no page for {language}/{lesson.name}"
            for served, committed in ((f"{lesson.name}.ipynb", NOTEBOOKS), (f"student/{lesson.name}.ipynb", STUDENT)):
                assert (site / language / served).read_bytes() == \
                    (committed / language / f"{lesson.name}.ipynb").read_bytes(), f"{language}/{served}"
    assert (site / "index.html").is_file()


def test_the_build_refuses_stale_notebooks(tmp_path, monkeypatch, capsys):
    """A notebook whose code differs from its lesson (here, in a copy) stops the build."""
    BUILD.mkdir(exist_ok=True)
    copy = Path(tempfile.mkdtemp(dir=BUILD, prefix="stale-notebooks-")) / "notebooks"
    shutil.copytree(NOTEBOOKS, copy)
    try:
        stale = copy / "en" / f"{LESSONS[0].name}.ipynb"
        nb = nbformat.read(stale, as_version=4)
        next(cell for cell in nb.cells if cell.cell_type == "code").source += "\nprint('changed')"
        nbformat.write(nb, stale)
        monkeypatch.setattr(build_notebooks, "NOTEBOOKS", copy)
        assert build_site.main(["--out", str(tmp_path / "site")]) == 1
    finally:
        shutil.rmtree(copy.parent)
    assert f"{stale.relative_to(REPO)} differs from lessons/{LESSONS[0].name}.py" in capsys.readouterr().err
    assert not (tmp_path / "site").exists()


# --------------------------------------------------------------------------- in the browser

class QuietHandler(SimpleHTTPRequestHandler):
    """Serves the site's files, without a line on the terminal for every request."""

    def log_message(self, format, *args):
        pass


@pytest.fixture(scope="module")
def server(site):
    """``site`` served on a free local port: its address, ending in "/"."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing: .ci/run installs Debian's chromium")
        pytest.skip("the browser tests need Chromium: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # Any host but this one fails at once: a request that would leave the site is seen, not sent
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"])
        yield chromium
        chromium.close()


@dataclass
class Visit:
    """What the browser saw on one page."""
    problems: list = field(default_factory=list)   # console errors, failed requests, other hosts
    links: list = field(default_factory=list)      # the address of every <a href>
    ids: set = field(default_factory=set)          # every id and name an anchor can point to
    switch: str = ""                               # the language switch's address
    code: list = field(default_factory=list)       # the text of every code cell
    figures: list = field(default_factory=list)    # [loaded, width, height] of every image of an output
    outputs: list = field(default_factory=list)    # the height of every cell's output
    lesson_links: dict = field(default_factory=dict)  # the links under a lesson's title, by kind


# What a page shows, read in the browser
READ_PAGE = """() => {
  const all = (selector, read) => [...document.querySelectorAll(selector)].map(read);
  return {
    links: all("a[href]", a => a.href),
    ids: all("[id], a[name]", e => e.id || e.name),
    switch: document.querySelector("a.language-switch")?.href || "",
    code: all("div.cell_input pre", pre => pre.innerText),
    figures: all("div.cell_output img", i => [i.complete, i.naturalWidth, i.naturalHeight]),
    outputs: all("div.cell_output", output => output.offsetHeight),
    lesson_links: Object.fromEntries(all("nav.lesson-links a",
                                         a => [a.className.split("lesson-link-")[1], a.href])),
  };
}"""


def page_addresses(site, server):
    """Every page of the site: the language choice and the HTML pages of both languages."""
    return [server] + [server + path.relative_to(site).as_posix()
                       for language in LANGUAGES for path in sorted((site / language).glob("*.html"))]


class Tab:
    """A browser tab on the site that records what must not happen: console errors, uncaught
    exceptions, failed requests and error responses, and requests to anywhere but the site."""

    def __init__(self, browser, server, **options):
        self.page = browser.new_page(**options)
        self.problems, self.pending = [], set()
        on = self.page.on
        on("console", lambda m: m.type == "error" and self.problems.append(f"console error: {m.text}"))
        on("pageerror", lambda error: self.problems.append(f"uncaught exception: {error}"))
        on("request", lambda r: self.pending.add(r))
        on("request", lambda r: r.url.startswith((server, "data:", "blob:"))
           or self.problems.append(f"request to another host: {r.url}"))
        on("requestfinished", lambda r: self.pending.discard(r))
        on("requestfailed", lambda r: self.pending.discard(r))
        # A request that Chromium gives up when the tab moves on (net::ERR_ABORTED) is not the
        # site's fault: the icon, asked for after "load", is often cut short that way. A missing
        # file is still caught, as a response of 404.
        on("requestfailed", lambda r: r.failure == "net::ERR_ABORTED"
           or self.problems.append(f"failed request: {r.url} ({r.failure})"))
        on("response", lambda r: r.status >= 400 and self.problems.append(f"{r.status}: {r.url}"))

    def open(self, address):
        """Open ``address`` and wait until it is complete: scripts, styles, images, fonts, and
        whatever they asked for (such as the icon)."""
        self.page.goto(address, wait_until="load")
        self.page.evaluate("document.fonts.ready.then(() => true)")
        while self.pending:
            self.page.wait_for_timeout(10)
        return self.page


@pytest.fixture(scope="module")
def visits(site, server, browser):
    """``{address: Visit}``: every page, loaded once."""
    tab, seen = Tab(browser, server), {}
    for address in page_addresses(site, server):
        shown = tab.open(address).evaluate(READ_PAGE)
        seen[address] = Visit(problems=tab.problems[:], **{**shown, "ids": set(shown["ids"])})
        tab.problems.clear()
    tab.page.close()
    return seen


def lesson_visits(server, visits, language):
    """``(lesson, Visit)`` for every lesson page of ``language``."""
    return [(lesson, visits[f"{server}{language}/{lesson.name}.html"]) for lesson in LESSONS]


def test_pages_load_without_errors_or_requests_elsewhere(visits):
    assert len(visits) == 1 + 2 * (len(LESSONS) + 5)  # home, lessons, glossary, guide, search, index
    problems = {address: visit.problems for address, visit in visits.items() if visit.problems}
    assert not problems


def test_internal_links_and_anchors_resolve(site, server, visits):
    broken = set()
    for address, visit in visits.items():
        for link in visit.links:
            target, _, anchor = link.partition("#")
            if not target.startswith(server):
                continue
            path = site / urlsplit(target).path.removeprefix("/")
            if path.is_dir():
                path /= "index.html"
            if not path.is_file():
                broken.add(f"{address} -> {link}: no such file")
            elif anchor and anchor not in visits[urlsplit(target)._replace(query="").geturl()].ids:
                broken.add(f"{address} -> {link}: no such anchor")
    assert not broken


def test_every_page_switches_to_the_same_page_in_the_other_language(server, visits):
    for address, visit in visits.items():
        if address != server:
            language = address.removeprefix(server).split("/")[0]
            assert visit.switch == address.replace(f"/{language}/", f"/{other_language(language)}/")


def test_a_lesson_and_its_twin_show_the_same_code(server, visits):
    for (lesson, english), (_, chinese) in zip(lesson_visits(server, visits, "en"),
                                               lesson_visits(server, visits, "zh-CN")):
        # The same code; only comments and the text it prints are in the page's language
        assert english.code and [code_shape(c) for c in english.code] == \
            [code_shape(c) for c in chinese.code], lesson.name


def test_clicking_the_language_switch_opens_the_twin(server, browser):
    page = browser.new_page()
    for language in LANGUAGES:
        page.goto(f"{server}{language}/{LESSONS[0].name}.html")
        page.click("a.language-switch")
        page.wait_for_load_state()
        assert page.url == f"{server}{other_language(language)}/{LESSONS[0].name}.html"
    page.close()


def test_lesson_pages_show_their_figures_and_outputs(server, visits):
    for language in LANGUAGES:
        for lesson, visit in lesson_visits(server, visits, language):
            nb = nbformat.read(NOTEBOOKS / language / f"{lesson.name}.ipynb", as_version=4)
            outputs = [output for cell in nb.cells for output in cell.get("outputs", [])]
            figures = sum("image/png" in output.get("data", {}) for output in outputs)
            assert len(visit.figures) == figures, f"{language}/{lesson.name}: {len(visit.figures)} of {figures}"
            assert all(loaded and width > 0 and height > 0 for loaded, width, height in visit.figures)
            shown = sum(bool(cell.get("outputs")) for cell in nb.cells)
            assert len(visit.outputs) == shown and all(visit.outputs), f"{language}/{lesson.name}: outputs"


def badge_urls(path):
    """The Colab addresses of the badges in a README or guide."""
    return re.findall(r"\((https://colab\.research\.google\.com/github/[^)]+)\)", path.read_text(encoding="utf-8"))


def test_colab_download_and_source_links(server, visits):
    for language in LANGUAGES:
        badges = badge_urls(READMES[language]) + badge_urls(GUIDES[language])
        for lesson, visit in lesson_visits(server, visits, language):
            links = visit.lesson_links
            for kind, folder in (("colab", "notebooks"), ("colab_student", "student")):
                assert links[kind] in badges and links[kind].endswith(f"/{folder}/{language}/{lesson.name}.ipynb")
            for kind, folder in (("download", NOTEBOOKS), ("download_student", STUDENT)):
                with urllib.request.urlopen(links[kind]) as response:
                    assert response.read() == (folder / language / f"{lesson.name}.ipynb").read_bytes()
            assert links["source"].endswith(f"/blob/main/lessons/{lesson.name}.py")


def search_results(page, address):
    """The pages a search on the site finds (``address`` is its search page with the query)."""
    page.goto(address)
    page.wait_for_function("document.querySelector('#search-results > p.search-summary')?.innerText")
    found = page.eval_on_selector_all("#search-results ul.search li > a", "links => links.map(a => a.href)")
    return {Path(urlsplit(link).path).stem for link in found}


@pytest.mark.parametrize("language", LANGUAGES)
def test_search_finds_the_lessons_of_a_glossary_term(server, browser, language):
    page = browser.new_page()
    for term, lessons in SEARCHES[language].items():
        found = search_results(page, f"{server}{language}/search.html?q={quote(term)}")
        assert lessons and lessons <= found, f"{term!r} finds {sorted(found)}"
    page.close()


def test_screenshots_of_a_lesson_page(server, browser):
    """The top of the first lesson and its first figure, in each language and size."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for language in LANGUAGES:
        for size, viewport in SIZES.items():
            page = Tab(browser, server, viewport=viewport).open(f"{server}{language}/{LESSONS[0].name}.html")
            for where in ("top", "figure"):
                if where == "figure":
                    page.locator("div.cell_output img").first.scroll_into_view_if_needed()
                shot = SCREENSHOTS / f"{LESSONS[0].name}.{language}.{size}.{where}.png"
                page.screenshot(path=shot)
                assert shot.stat().st_size > 10_000
            page.close()


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_lesson_page_has_no_serious_accessibility_violations(server, browser, language):
    from axe_playwright_python.sync_playwright import Axe

    page = Tab(browser, server).open(f"{server}{language}/{LESSONS[0].name}.html")
    violations = Axe().run(page).response["violations"]
    page.close()
    serious = [(v["id"], v["help"], [n["target"] for n in v["nodes"]])
               for v in violations if v["impact"] in ("serious", "critical")]
    assert not serious, json.dumps(serious, ensure_ascii=False, indent=1)


def test_readmes_link_the_site_and_say_how_to_build_and_open_it():
    for readme in READMES.values():
        text = readme.read_text(encoding="utf-8")
        for needed in (pages_url(), "make site", "python -m http.server -d build/site"):
            assert needed in text, f"{readme.name} does not mention {needed}"
