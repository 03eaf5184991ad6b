"""What the checks of every lesson share: the language, calling the learner's function,
reading what it saved, random inputs, and the registry that ``for_lesson`` reads.

A lesson's checks are a subclass of ``Checks`` with its ``lesson`` number, in a
module ``lessonNN.py`` of this package; defining the class registers it.
"""

import contextlib
import pickle
import random
import tempfile
import traceback
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from saveload_lessons import LANGUAGES

# Taken now, so that an answer which replaces torch.load or torch.equal afterwards
# cannot change what a check reads or how it compares.
_load = torch.serialization.load
_equal = torch.equal

class ExerciseFailed(AssertionError):
    """An answer that does not pass its check; ``not_done`` when it is still the stub."""

    def __init__(self, label, message, not_done=False):
        super().__init__(label + message)
        self.label = label
        self.not_done = not_done

    def _render_traceback_(self):
        # IPython shows these lines in place of a traceback: the message is all a learner needs.
        return ["✗ " + str(self)]


# --------------------------------------------------------------------------- a harmless payload

class _PayloadLog:
    """Records whether the harmless payload of the hostile test files ever ran."""
    ran = False


def _payload_ran():
    _PayloadLog.ran = True


class _Payload:
    """Unpickling this object calls ``_payload_ran``: it stands for any code an attacker wants run."""

    def __reduce__(self):
        return (_payload_ran, ())


# --------------------------------------------------------------------------- the checks

# The checks of each lesson, by lesson number: filled as the classes are defined.
REGISTRY = {}


class Checks:
    """What every lesson's checks share: the language, calling the learner's code, reading
    what it saved, and telling the result. A subclass sets ``lesson`` to its lesson's number
    and defines ``exercise_1``, ``exercise_2``, ...; defining it registers it."""

    lesson = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        registered = REGISTRY.get(cls.lesson)
        if registered is not None and registered.__qualname__ != cls.__qualname__:
            raise TypeError(f"lesson {cls.lesson} already has its checks, {registered.__qualname__}")
        REGISTRY[cls.lesson] = cls

    def __init__(self, language="en"):
        if language not in LANGUAGES:
            raise ValueError(f"language must be one of {LANGUAGES}, got {language!r}")
        self.language = language
        _explain_undefined_names(self)

    def say(self, english, chinese):
        return chinese if self.language == "zh-CN" else english

    def label(self, number):
        """"Exercise 2.1: " or "练习 2.1：", which starts every message."""
        return self.say(f"Exercise {self.lesson}.{number}: ", f"练习 {self.lesson}.{number}：")

    def fail(self, number, english, chinese):
        raise ExerciseFailed(self.label(number), self.say(english, chinese))

    def passed(self, number, english, chinese):
        print(f"✓ {self.label(number)}" + self.say(english, chinese))

    def call(self, number, function, *args):
        """``function(*args)``; a stub (``NotImplementedError``) or a missing function fails."""
        name = getattr(function, "__name__", repr(function))
        if not callable(function):
            self.fail(number, f"expected your function, got {function!r}.",
                      f"这里应当传入你写的函数，实际得到的却是 {function!r}。")
        try:
            return function(*args)
        except NotImplementedError as err:
            stub = _unfinished(err, name)
            calls = "" if stub == name else self.say(f" (`{name}` calls it)", f"（`{name}` 调用了它）")
            raise ExerciseFailed(self.label(number), self.say(
                f"not done yet: write the body of `{stub}`{calls} in place of "
                "`raise NotImplementedError()`, run that cell, then run this one again.",
                f"还没有完成：把 `{stub}`{calls}中的 `raise NotImplementedError()` 换成你的代码，"
                "运行那个单元格，再重新运行这个单元格。"), not_done=True) from None
        except Exception:
            print("✗ " + self.label(number) + self.say(f"`{name}` raised an error; its traceback follows.",
                                                       f"`{name}` 抛出了错误，下面是它的回溯信息。"))
            raise

    def require_file(self, number, path):
        """Fail unless the learner's answer wrote a file at ``path``."""
        if not path.is_file():
            self.fail(number, f"no file was written at the path the function received ({path.name}).",
                      f"函数没有在传给它的路径（{path.name}）上写出文件。")

    def read_saved(self, number, path, refused):
        """What the learner's answer saved at ``path``, read with ``weights_only=True``. Fails
        when there is no file or it does not load; ``refused`` is an (English, Chinese) pair
        that says what to save when ``weights_only=True`` refuses the file."""
        self.require_file(number, path)
        try:
            with _quiet():
                return _load(path, weights_only=True)
        except pickle.UnpicklingError:
            self.fail(number, "`torch.load(..., weights_only=True)` refuses the file: " + refused[0],
                      "`torch.load(..., weights_only=True)` 拒绝加载这个文件：" + refused[1])
        except Exception as err:  # not a torch.save file: empty, text, truncated, ...
            self.fail(number, f"`torch.load` cannot read the file ({type(err).__name__}): "
                      "write it with `torch.save`.",
                      f"`torch.load` 无法读取这个文件（{type(err).__name__}）：请用 `torch.save` 写入。")

    def refuses_hostile_file(self, number, load, path, advice=None):
        """Fail unless ``load(path)`` refuses a file whose payload would run when unpickled;
        ``advice`` is an (English, Chinese) pair that says how to load safely instead."""
        _PayloadLog.ran = False
        try:
            load(path)
        except NotImplementedError:
            self.call(number, load, path)  # reports the stub
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # a refusal; DCP's CheckpointException is a BaseException
            pass
        if _PayloadLog.ran:
            english, chinese = advice or (
                "it loads with `weights_only=False` (or plain pickle). Load with "
                "`weights_only=True`, which refuses such files.",
                "它用 `weights_only=False`（或直接用 pickle）加载文件。请用 `weights_only=True` "
                "加载，它会拒绝这样的文件。")
            self.fail(number, "your function ran the code planted in a hostile file: " + english,
                      "你的函数执行了恶意文件中植入的代码：" + chinese)


def _unfinished(error, called):
    """The name of the function whose stub raised ``error``: the learner's function ``called``
    itself, or one it calls (exercise 2.3 calls the answers of 2.1 and 2.2)."""
    frames = traceback.extract_tb(error.__traceback__)
    names = [frame.name for frame in frames]
    if called in names:  # the stub is in the last frame at or below the learner's function
        return names[-1] if names[-1] != "<module>" else called
    return called


def _explain_undefined_names(checks):
    """In IPython (Jupyter), follow a ``NameError`` with a line in the checks' language: a
    check cell run before the exercise's cell names a function that does not exist yet, and
    Python's own message does not say what to do. Elsewhere, nothing changes."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return

    def explain(shell, kind, error, traceback, tb_offset=None):
        shell.showtraceback((kind, error, traceback), tb_offset=tb_offset)
        name = getattr(error, "name", None) or "?"
        print(checks.say(f"→ `{name}` is not defined yet: run the cell that defines it (the "
                         "exercise's cell above), then run this cell again.",
                         f"→ `{name}` 还没有定义：请先运行定义它的单元格（上面的练习单元格），"
                         "再重新运行这个单元格。"))

    shell.set_custom_exc((NameError,), explain)


# --------------------------------------------------------------------------- random inputs

def _chance():
    """A new source of randomness for one run of a check, drawn from the operating system
    (``os.urandom``), so a seed the learner sets does not repeat it."""
    return random.SystemRandom()


def _seeds(chance, count):
    """``count`` different random seeds."""
    return chance.sample(range(2**31), count)


def _layout(chance):
    """Random sizes for a tiny network: ``(output_size, hidden_layers)``."""
    return chance.randint(2, 6), _hidden_sizes(chance, 1, 3)


def _hidden_sizes(chance, fewest, most):
    """Between ``fewest`` and ``most`` random hidden-layer sizes."""
    return [chance.randint(3, 9) for _ in range(chance.randint(fewest, most))]


def _file_name(chance, stem, suffix):
    """A file name such as ``weights-048213.pth``, new on every run."""
    return f"{stem}-{chance.randrange(10**6):06d}{suffix}"


@contextlib.contextmanager
def _seeded(seed):
    """Run the block with torch's CPU generator seeded with ``seed``; the learner's generator
    state is restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


def _tiny_network(output_size, hidden_layers, seed):
    """An ``fc_model.Network`` with 8 inputs, its weights drawn from ``seed``."""
    import fc_model

    with _seeded(seed):
        return fc_model.Network(8, output_size, hidden_layers)


def _same_tensor(a, b):
    """Whether ``a`` is a tensor with the dtype, shape and values of the tensor ``b``."""
    return isinstance(a, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and _equal(a, b)


def _same_tensors(a, b):
    """Whether ``a`` is a mapping with the names of ``b`` and the same tensors under them."""
    return isinstance(a, Mapping) and a.keys() == b.keys() and all(_same_tensor(a[k], b[k]) for k in b)


def _is_count(value, expected):
    """Whether ``value`` is the int ``expected`` (not a tensor or a float that equals it)."""
    return type(value) is int and value == expected


@contextlib.contextmanager
def _folder():
    with tempfile.TemporaryDirectory(prefix="exercise-") as name:
        yield Path(name)


@contextlib.contextmanager
def _quiet():
    """Silence warnings: DCP's about running without a process group, and torch.load's about
    pickle protocols in a file that it then refuses."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
