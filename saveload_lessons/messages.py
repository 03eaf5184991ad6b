"""The language of what the companion package tells a learner: English or Chinese.

The Chinese notebooks call ``messages.set_language("zh-CN")`` in their first
cells (the English ones ``set_language("en")``); from then on, what the
package prints, and the errors a lesson shows, come in that language
(``say(english, chinese)`` picks one). Processes started with
``launching.torchrun`` inherit it through the environment variable
``SAVELOAD_LESSONS_LANGUAGE``. Rarer errors, which no lesson shows, stay English.
"""

import os

from saveload_lessons import LANGUAGES

ENVIRONMENT_VARIABLE = "SAVELOAD_LESSONS_LANGUAGE"

_current = os.environ.get(ENVIRONMENT_VARIABLE) if os.environ.get(ENVIRONMENT_VARIABLE) in LANGUAGES else "en"


def set_language(language):
    """Speak ``language`` ("en" or "zh-CN") from now on."""
    global _current
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {LANGUAGES}, got {language!r}")
    _current = language


def language():
    """The language messages are in now."""
    return _current


def say(english, chinese):
    """``chinese`` when the language is "zh-CN", ``english`` otherwise."""
    return chinese if _current == "zh-CN" else english
