"""Start a new lesson from the templates: ``python -m tools.new_lesson 6 big-checkpoints``.

Writes the two files a lesson needs, and nothing else:

- ``lessons/NN-words.py``, the lesson source (``tools/templates/lesson.py``), which
  already follows the lesson rules, with two exercises;
- ``saveload_lessons/exercise_checks/lessonNN.py``, the checks of those exercises
  (``tools/templates/exercise_checks.py``).

Then write the lesson, and run ``python -m tools.build_notebooks NN``: the build
finds both files, executes the new notebooks, links the previous lesson to the
new one (without running it again) and adds the lesson to every list and table.
"""

import argparse
import re
import sys
from pathlib import Path

from tools.project import LESSONS, REPO, lesson_paths

TEMPLATES = Path(__file__).resolve().parent / "templates"
CHECKS = REPO / "saveload_lessons" / "exercise_checks"


def new_lesson(number, words, title=None):
    """Write the source and the checks of lesson ``number`` (file name ``NN-words.py``);
    returns their paths. Refuses a number or a name that is taken."""
    if not 1 <= number <= 99:
        raise ValueError(f"a lesson number has two digits, 1 to 99, got {number}")
    if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", words):
        raise ValueError(f"name the lesson with lowercase words joined by '-', got {words!r}")
    taken = [path.name for path in lesson_paths(LESSONS) if int(path.name[:2]) == number]
    if taken:
        raise ValueError(f"lesson {number} exists already: lessons/{taken[0]}")
    source = LESSONS / f"{number:02d}-{words}.py"
    checks = CHECKS / f"lesson{number:02d}.py"
    if checks.exists():
        raise ValueError(f"{checks.relative_to(REPO)} exists already")
    title = title or words.replace("-", " ").capitalize()
    for template, target in (("lesson.py", source), ("exercise_checks.py", checks)):
        text = (TEMPLATES / template).read_text(encoding="utf-8")
        target.write_text(text.replace("NUMBER", str(number)).replace("TITLE", title), encoding="utf-8")
    return source, checks


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("number", type=int, help="the lesson's number, e.g. 6")
    parser.add_argument("words", help="its file name's words, e.g. big-checkpoints")
    parser.add_argument("--title", help="its English title (default: from the words)")
    args = parser.parse_args(argv)
    try:
        written = new_lesson(args.number, args.words, args.title)
    except ValueError as err:
        parser.error(str(err))
    print("wrote " + " and ".join(str(path.relative_to(REPO)) for path in written))
    print(f"next: write the lesson, then run python -m tools.build_notebooks {args.number:02d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
