"""The collection's own tools: building the notebooks from lessons/ (``build_notebooks``),
running them as the main job (``run_notebooks``), starting a new lesson (``new_lesson``),
the website (``build_site``, with ``site_links`` and ``site_sphinx``), installing torch
(``install_torch``), and what they and the tests share (``project``). Run them from the repository's root,
for example ``python -m tools.build_notebooks --check``."""
