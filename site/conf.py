"""Sphinx's configuration of the website, the same for both languages.

``python -m tools.build_site`` runs Sphinx once per language on the sources it lays out
(``tools.site_links`` says which), with this folder as the configuration, and sets what
differs (``tools.build_site.lay_out``): ``language`` ("en" or "zh_CN", which also picks the
search's word splitter), the title, the folder of the notebooks to download
(``html_extra_path``), the site's published address (``html_baseurl``) and, for Chinese, the
glossary's terms as words for the search (``html_search_options``).
"""

extensions = ["myst_nb", "tools.site_sphinx"]

# The notebooks are shown as committed: CI executed them, and the site never runs them again.
nb_execution_mode = "off"

html_theme = "sphinx_book_theme"
html_theme_options = {
    "article_header_end": ["language-switch.html", "article-header-buttons.html"],
    "home_page_in_toc": True,
    # One search field, in the sidebar (the bar above the page has a search button too)
    "navbar_persistent": [],
    "show_toc_level": 2,
    # The lesson pages have their own download links (tools.site_sphinx)
    "use_download_button": False,
}
html_favicon = "_static/favicon.svg"  # or the browser asks for /favicon.ico, which no site has
# Light or dark as the reader's system is set (the theme's switch in the bar changes it)
html_context = {"default_mode": "auto"}
html_static_path = ["_static"]
html_css_files = ["site.css"]
templates_path = ["_templates"]
# No page's source beside it: the notebooks to download are the committed files themselves
html_copy_source = False
html_show_sourcelink = False
html_show_sphinx = False
