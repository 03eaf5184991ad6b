"""Checks for the exercises at the end of each lesson.

A lesson's exercise section starts with::

    check = exercise_checks.for_lesson(2, language="en")

Each exercise asks for a function; ``check.exercise_1(save_general_checkpoint)``
then calls the learner's function on small objects of its own (a tiny network,
a temporary folder), so it runs in well under a second and does not depend on
the rest of the notebook. Every run draws new inputs (sizes, seeds, epochs,
file names, step folders), so only an answer that works on what it is given
passes, not one written for a single case. A correct answer gets a short "well
done". Otherwise the check raises ``ExerciseFailed``, whose message says, in
the notebook's language, what is missing or wrong and what to try; Jupyter
shows that message without a traceback. An exercise that is still nbgrader's
stub (it raises ``NotImplementedError``) is reported as not done yet. An error
inside the learner's own code is left as it is, with its traceback, to debug.

The checks run in the learner's own process: they are teaching aids, not a
sandbox. They read files and compare tensors with the functions torch had when
this module was imported, so an answer that replaces ``torch.load`` later does
not change what they see; an answer that patches this module or torch's
internals can still fool them.

The checks of lesson N live in ``lessonNN.py`` beside this file (a ``Checks``
subclass); ``for_lesson`` finds them there, so a new lesson adds its module
and edits nothing else.
"""

import importlib
import pkgutil

from saveload_lessons import LANGUAGES
from saveload_lessons.exercise_checks.common import REGISTRY, Checks, ExerciseFailed

__all__ = ["Checks", "ExerciseFailed", "exercise_numbers", "for_lesson", "lessons_with_exercises"]


def _registry():
    """``{lesson number: its Checks class}``, once every ``lessonNN`` module is imported."""
    for module in pkgutil.iter_modules(__path__):
        if module.name.startswith("lesson"):
            importlib.import_module(f"{__name__}.{module.name}")
    return REGISTRY


def lessons_with_exercises():
    """The numbers of the lessons that have checks, in order."""
    return sorted(_registry())


def for_lesson(lesson, language="en"):
    """The checks of ``lesson``'s exercises, speaking ``language`` ("en" or "zh-CN")."""
    registry = _registry()
    if lesson not in registry:
        raise ValueError(f"there are exercises for lessons {sorted(registry)}, not {lesson!r}")
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {LANGUAGES}, got {language!r}")
    return registry[lesson](language)


def exercise_numbers(lesson):
    """The numbers of ``lesson``'s exercises, as its checks define them."""
    return sorted(int(name.rsplit("_", 1)[1]) for name in dir(_registry()[lesson])
                  if name.startswith("exercise_"))
