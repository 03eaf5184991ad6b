"""Checks of plain values that several modules share, and how a message quotes a value.

``is_count`` and ``is_number`` answer yes or no; ``check_positive_int`` and
``positive_int_argument`` raise the error their callers need (a ``ValueError``
for a function's arguments, an ``argparse`` error for a command line), with
one wording: "must be a positive integer, got ...". ``check_positive_int``, which
the lessons call in their first cells, says it in the notebook's language
(``messages``). ``quote`` keeps any value, however large or deeply nested, short
in a message.
"""

import argparse
import reprlib
import sys

from saveload_lessons.messages import say

_short = reprlib.Repr()
_short.maxlevel, _short.maxstring, _short.maxother, _short.maxlong = 3, 60, 60, 40
_short.maxlist = _short.maxtuple = _short.maxdict = _short.maxset = 6


def quote(value):
    """``repr(value)`` cut short: no value, however large or deeply nested, makes a message
    long or slow to write."""
    return _short.repr(value)


def is_count(value, minimum=0):
    """True for an integer (not a bool) of at least ``minimum``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def is_number(value):
    """True for a float, or an int (not a bool) small enough to become one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, float) or abs(value) <= sys.float_info.max


def positive_int_problem(name, value):
    """The message for a ``value`` of ``name`` that is not a positive integer, or None."""
    if is_count(value, 1):
        return None
    return say(f"{name} must be a positive integer, got {quote(value)}",
               f"{name} 必须是正整数，实际为 {quote(value)}")


def check_positive_int(**values):
    """Raise ``ValueError`` unless every value is a positive integer.

    Used as ``check_positive_int(epochs=epochs)``, so the message names the
    parameter: ``epochs must be a positive integer, got 0``.
    """
    for name, value in values.items():
        problem = positive_int_problem(name, value)
        if problem:
            raise ValueError(problem)


def positive_int_argument(text):
    """An ``argparse`` type: the command-line ``text`` as a positive integer."""
    try:
        value = int(text)
    except ValueError:
        value = text
    if not is_count(value, 1):
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value
