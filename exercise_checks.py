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
"""

import contextlib
import copy
import datetime
import json
import os
import pickle
import random
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors import safe_open as _safe_open
from torch import nn

# Taken now, so that an answer which replaces torch.load or torch.equal afterwards
# cannot change what a check reads or how it compares.
_load = torch.serialization.load
_equal = torch.equal

LANGUAGES = ("en", "zh-CN")


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

class Checks:
    """What every lesson's checks share: the language, calling the learner's code, reading
    what it saved, and telling the result."""

    lesson = None

    def __init__(self, language="en"):
        if language not in LANGUAGES:
            raise ValueError(f"language must be one of {LANGUAGES}, got {language!r}")
        self.language = language

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
        except NotImplementedError:
            raise ExerciseFailed(self.label(number), self.say(
                f"not done yet: write the body of `{name}` in place of "
                "`raise NotImplementedError()`, run that cell, then run this one again.",
                f"还没有完成：把 `{name}` 中的 `raise NotImplementedError()` 换成你的代码，"
                "运行那个单元格，再重新运行这个单元格。"), not_done=True) from None
        except Exception:
            print("✗ " + self.label(number) + self.say(f"`{name}` raised an error; its traceback follows.",
                                                       f"`{name}` 抛出了错误，下面是它的回溯信息。"))
            raise

    def require_file(self, number, path):
        """Fail unless the learner's answer wrote a file at ``path``."""
        if not path.is_file():
            self.fail(number, f"no file was written at the path the function received ({path.name}).",
                      f"传给函数的路径（{path.name}）上没有写出文件。")

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


# --------------------------------------------------------------------------- lesson 1

class Lesson1(Checks):
    lesson = 1

    def exercise_1(self, save_weights):
        """``save_weights(model, path)`` saves the model's ``state_dict`` and nothing else."""
        chance = _chance()
        model = _tiny_network(*_layout(chance), seed=_seeds(chance, 1)[0])
        with _folder() as folder:
            path = folder / _file_name(chance, "weights", ".pth")
            self.call(1, save_weights, model, path)
            saved = self.read_saved(1, path, (
                "it holds Python objects, probably the whole model. Save `model.state_dict()` instead.",
                "文件中有 Python 对象，多半是整个模型。请改为保存 `model.state_dict()`。"))
        if not isinstance(saved, Mapping) or not all(isinstance(v, torch.Tensor) for v in saved.values()):
            self.fail(1, f"the file holds a {type(saved).__name__}, not a state dict (names → tensors).",
                      f"文件中保存的是 {type(saved).__name__}，而不是状态字典（名字 → 张量）。")
        if not _same_tensors(saved, model.state_dict()):
            self.fail(1, "the file's tensors are not the model's `state_dict()`: "
                      f"it has {sorted(saved, key=str)}.",
                      f"文件中的张量不是模型的 `state_dict()`：它包含 {sorted(saved, key=str)}。")
        self.passed(1, "the file holds exactly the model's state dict and loads with weights_only=True.",
                    "文件中恰好是模型的状态字典，并且可以用 weights_only=True 加载。")

    def exercise_2(self, snapshot):
        """``snapshot(model)`` returns a copy of the state dict that training does not change."""
        chance = _chance()
        model = _tiny_network(*_layout(chance), seed=_seeds(chance, 1)[0])
        before = copy.deepcopy(model.state_dict())
        taken = self.call(2, snapshot, model)
        if not _same_tensors(taken, before):
            self.fail(2, "return the model's state dict (names → tensors), copied.",
                      "请返回模型的状态字典（名字 → 张量）的副本。")
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(1.0)  # what an optimizer step does: change the weights in place
        if not _same_tensors(taken, before):
            self.fail(2, "the snapshot changed when the model's weights changed: `state_dict()` "
                      "refers to the live tensors. Copy them, e.g. with `copy.deepcopy`.",
                      "模型权重改变后，快照也跟着变了：`state_dict()` 引用的是模型中正在使用的张量。"
                      "请复制它们，例如用 `copy.deepcopy`。")
        self.passed(2, "the snapshot keeps the old weights while the model changes.",
                    "模型改变后，快照仍保留着原来的权重。")


# --------------------------------------------------------------------------- lesson 2

def _regression_batches(chance):
    """Two to five random batches of 16 ``(inputs, targets)`` pairs, 5 features to 2 targets."""
    generator = torch.Generator().manual_seed(_seeds(chance, 1)[0])
    return [(torch.randn(16, 5, generator=generator), torch.randn(16, 2, generator=generator))
            for _ in range(chance.randint(2, 5))]


def _regression_model(width, seed):
    """A small regression network with ``width`` hidden units, its weights drawn from ``seed``."""
    with _seeded(seed):
        return nn.Sequential(nn.Linear(5, width), nn.ReLU(), nn.Linear(width, 2))


def _sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def _train_epoch(model, optimizer, batches):
    for inputs, targets in batches:
        optimizer.zero_grad()
        nn.functional.mse_loss(model(inputs), targets).backward()
        optimizer.step()


def _resume_into_new_model(resume, path, width):
    """``resume(path, ...)`` into a new model of ``width`` hidden units and its optimizer."""
    model = _regression_model(width, seed=0)
    return resume(path, model, _sgd(model))


def _weights_after_each_epoch(width, seed, batches, epochs):
    """``{epoch: state dict}`` of an uninterrupted run of ``epochs`` epochs, after each one."""
    model = _regression_model(width, seed)
    optimizer = _sgd(model)
    after = {}
    for epoch in range(1, epochs + 1):
        _train_epoch(model, optimizer, batches)
        after[epoch] = copy.deepcopy(model.state_dict())
    return after


class Lesson2(Checks):
    lesson = 2
    KEYS = ("epoch", "model_state_dict", "optimizer_state_dict")

    def read_general_checkpoint(self, number, path):
        """The general checkpoint the learner's answer saved at ``path``; fails unless the file
        loads with ``weights_only=True`` and holds a dict with ``KEYS``."""
        saved = self.read_saved(number, path, (
            "it holds Python objects. Save state dicts and plain values, not the model or "
            "optimizer objects.",
            "文件中有 Python 对象。请保存状态字典和普通的值，而不是模型或优化器对象本身。"))
        if not isinstance(saved, Mapping):
            self.fail(number, f"the file holds a {type(saved).__name__}, not a general checkpoint: "
                      f"save a dict with {list(self.KEYS)}.",
                      f"文件中保存的是 {type(saved).__name__}，而不是通用检查点：请保存一个包含 "
                      f"{list(self.KEYS)} 的字典。")
        missing = [key for key in self.KEYS if key not in saved]
        if missing:
            self.fail(number, f"the checkpoint lacks {missing}; it needs a dict with {list(self.KEYS)}.",
                      f"检查点缺少 {missing}；它应当是包含 {list(self.KEYS)} 的字典。")
        return saved

    def exercise_1(self, save_general_checkpoint):
        """``save_general_checkpoint(path, model, optimizer, epoch)`` writes the three entries."""
        chance = _chance()
        model = _regression_model(chance.randint(4, 12), _seeds(chance, 1)[0])
        optimizer = _sgd(model)
        _train_epoch(model, optimizer, _regression_batches(chance))
        epoch = chance.randint(2, 99)
        with _folder() as folder:
            path = folder / _file_name(chance, "checkpoint", ".pth")
            self.call(1, save_general_checkpoint, path, model, optimizer, epoch)
            saved = self.read_general_checkpoint(1, path)
        if not _is_count(saved["epoch"], epoch):
            self.fail(1, f"`epoch` is {saved['epoch']!r}, not the value passed in (the int {epoch}).",
                      f"`epoch` 是 {saved['epoch']!r}，而不是传入的值（整数 {epoch}）。")
        if not _same_tensors(saved["model_state_dict"], model.state_dict()):
            self.fail(1, "`model_state_dict` is not `model.state_dict()`.",
                      "`model_state_dict` 不是 `model.state_dict()`。")
        optimizer_state = saved["optimizer_state_dict"]
        if not isinstance(optimizer_state, Mapping) or not optimizer_state.get("state"):
            self.fail(1, "`optimizer_state_dict` has no momentum buffers: save `optimizer.state_dict()`.",
                      "`optimizer_state_dict` 中没有动量缓冲区：请保存 `optimizer.state_dict()`。")
        self.passed(1, "a general checkpoint with the epoch, the model and the optimizer.",
                    "这是一个包含轮数、模型和优化器的通用检查点。")

    def exercise_2(self, resume):
        """``resume(path, model, optimizer)`` restores both in place and returns the epoch."""
        chance = _chance()
        width, epoch = chance.randint(4, 12), chance.randint(2, 99)
        seed, other_seed = _seeds(chance, 2)
        original = _regression_model(width, seed)
        original_optimizer = _sgd(original)
        _train_epoch(original, original_optimizer, _regression_batches(chance))
        saved = {"epoch": epoch, "model_state_dict": original.state_dict(),
                 "optimizer_state_dict": original_optimizer.state_dict()}
        model = _regression_model(width, other_seed)
        optimizer = _sgd(model)
        with _folder() as folder:
            path = folder / _file_name(chance, "checkpoint", ".pth")
            torch.save(saved, path)
            returned = self.call(2, resume, path, model, optimizer)
            hostile = folder / _file_name(chance, "hostile", ".pth")
            torch.save({**saved, "extra": _Payload()}, hostile)
            self.refuses_hostile_file(2, lambda p: _resume_into_new_model(resume, p, width), hostile)
        if not _is_count(returned, epoch):
            self.fail(2, f"it returned {returned!r}; return the epoch stored in the checkpoint ({epoch}).",
                      f"它返回了 {returned!r}；请返回检查点中保存的轮数（{epoch}）。")
        if not _same_tensors(model.state_dict(), original.state_dict()):
            self.fail(2, "the model's weights were not restored: `model.load_state_dict(...)`.",
                      "模型的权重没有恢复：请调用 `model.load_state_dict(...)`。")
        if not optimizer.state:
            self.fail(2, "the optimizer's momentum buffers were not restored: "
                      "`optimizer.load_state_dict(...)`.",
                      "优化器的动量缓冲区没有恢复：请调用 `optimizer.load_state_dict(...)`。")
        batches = _regression_batches(chance)
        _train_epoch(model, optimizer, batches)
        _train_epoch(original, original_optimizer, batches)
        if not _same_tensors(model.state_dict(), original.state_dict()):
            self.fail(2, "training on after `resume` does not match training on without a stop.",
                      "`resume` 之后继续训练的结果，与不中断训练的结果不一致。")
        self.passed(2, "model and optimizer continue exactly where they stopped, and a hostile "
                    "file is refused.",
                    "模型和优化器精确地从中断处继续，恶意文件也被拒绝了。")

    def exercise_3(self, train_with_checkpoints):
        """``train_with_checkpoints(model, optimizer, batches, epochs, path)`` resumes from
        ``path`` when it exists and saves after every epoch.

        It trains ``total`` epochs straight; then, on one path, 1 epoch, a stop, a run to
        ``middle`` epochs, another stop and a run to ``total``, each run with a fresh model
        whose own weights are wrong, so that only the file can make them right."""
        chance = _chance()
        width, total = chance.randint(4, 12), chance.randint(3, 5)
        stops = (1, chance.randint(2, total - 1), total)
        seeds = _seeds(chance, 3)  # the first run starts from scratch: it has the reference's seed
        batches = _regression_batches(chance)
        expected = _weights_after_each_epoch(width, seeds[0], batches, total)
        with _folder() as folder:
            straight = _regression_model(width, seeds[0])
            self.call(3, train_with_checkpoints, straight, _sgd(straight), batches, total,
                      folder / _file_name(chance, "straight", ".pth"))
            if not _same_tensors(straight.state_dict(), expected[total]):
                self.fail(3, f"{total} epochs from scratch do not give the expected weights: each epoch "
                          "should run `zero_grad`, `mse_loss(model(x), y).backward()` and `step` "
                          "on every batch, in order.",
                          f"从头训练 {total} 轮没有得到预期的权重：每一轮都应按顺序对每个批次执行 `zero_grad`、"
                          "`mse_loss(model(x), y).backward()` 和 `step`。")
            path = folder / _file_name(chance, "interrupted", ".pth")
            for previous, stop, seed in zip((0, *stops), stops, seeds):
                model = _regression_model(width, seed)
                self.call(3, train_with_checkpoints, model, _sgd(model), batches, stop, path)
                self._check_stop(path, model, previous, stop, expected[stop])
        self.passed(3, "stopped and resumed along the way, the run ends with bit-identical weights.",
                    "中途停下再恢复，最终权重与不中断的训练逐位相同。")

    def _check_stop(self, path, model, previous, stop, expected):
        """Fail unless a run to ``stop`` epochs, resumed from the file saved after epoch
        ``previous`` (0: no file yet), left ``model`` with the ``expected`` weights and saved
        a general checkpoint of epoch ``stop`` at ``path``."""
        saved = self.read_general_checkpoint(3, path)
        if previous and not _same_tensors(model.state_dict(), expected):
            self.fail(3, f"a run to {stop} epochs that starts from the file saved after epoch "
                      f"{previous} does not give the weights of {stop} epochs without a stop: "
                      "resume from the file and train only the epochs left.",
                      f"从第 {previous} 轮之后保存的文件出发、运行到第 {stop} 轮，得到的权重与不中断地"
                      f"训练 {stop} 轮不同：请从文件恢复，并且只训练剩下的轮数。")
        if not _is_count(saved["epoch"], stop):
            self.fail(3, f"after the run to epoch {stop} the file says epoch {saved['epoch']!r}, not {stop}.",
                      f"运行到第 {stop} 轮之后，文件中的轮数是 {saved['epoch']!r}，而不是 {stop}。")


# --------------------------------------------------------------------------- lesson 3

def _run_record(chance):
    """What the file of exercise 3.1 holds: a tensor, the date of a run and its duration."""
    first, last = datetime.date(2020, 1, 1).toordinal(), datetime.date(2030, 12, 31).toordinal()
    return {"weights": torch.tensor([chance.uniform(-1, 1) for _ in range(chance.randint(2, 8))]),
            "saved_on": datetime.date.fromordinal(chance.randint(first, last)),
            "training_time": datetime.timedelta(minutes=chance.randint(1, 600))}


class Lesson3(Checks):
    lesson = 3

    def exercise_1(self, load_with_allowlist):
        """``load_with_allowlist(path)`` loads a file that needs two allowed globals, scoped."""
        chance = _chance()
        state = _run_record(chance)
        allowed_before = list(torch.serialization.get_safe_globals())
        with _folder() as folder:
            path = folder / _file_name(chance, "with-extras", ".pth")
            torch.save(state, path)
            hostile = folder / _file_name(chance, "hostile", ".pth")
            torch.save({**state, "extra": _Payload()}, hostile)
            try:
                loaded = self.call(1, load_with_allowlist, path)
                allowed_after = list(torch.serialization.get_safe_globals())
                self.refuses_hostile_file(1, load_with_allowlist, hostile)
            finally:  # undo what an answer with add_safe_globals would leave behind
                torch.serialization.clear_safe_globals()
                torch.serialization.add_safe_globals(allowed_before)
        if set(allowed_after) != set(allowed_before):
            self.fail(1, "the allowlist outlived the load (`add_safe_globals` changes every later "
                      "`torch.load`): use the `torch.serialization.safe_globals([...])` context manager.",
                      "放行清单在加载结束后仍然有效（`add_safe_globals` 会影响之后所有的 `torch.load`）："
                      "请使用上下文管理器 `torch.serialization.safe_globals([...])`。")
        if not isinstance(loaded, Mapping) or loaded.get("saved_on") != state["saved_on"] \
                or loaded.get("training_time") != state["training_time"] \
                or not _same_tensor(loaded.get("weights"), state["weights"]):
            self.fail(1, "return what the file holds (a dict with weights, saved_on and training_time).",
                      "请返回文件中保存的内容（包含 weights、saved_on 和 training_time 的字典）。")
        self.passed(1, "the two classes were allowed for this load only, and a hostile file is "
                    "still refused.",
                    "只在这次加载中放行了这两个类，恶意文件仍然被拒绝。")

    def exercise_2(self, save_for_sharing):
        """``save_for_sharing(model, path)`` writes safetensors with the architecture as metadata."""
        chance = _chance()
        model = _tiny_network(*_layout(chance), seed=_seeds(chance, 1)[0])
        with _folder() as folder:
            path = folder / _file_name(chance, "shared", ".safetensors")
            self.call(2, save_for_sharing, model, path)
            self.require_file(2, path)
            try:
                with _safe_open(str(path), framework="pt") as file:
                    metadata = file.metadata() or {}
                    tensors = {name: file.get_tensor(name) for name in file.keys()}
            except (SafetensorError, OSError):
                self.fail(2, "the file is not a safetensors file: write it with "
                          "`safetensors.torch.save_file(tensors, path, metadata=...)`.",
                          "写出的文件不是 safetensors 文件：请用 `safetensors.torch.save_file(tensors, path, metadata=...)` 写入。")
        if not _same_tensors(tensors, model.state_dict()):
            self.fail(2, "the tensors in the file are not the model's state dict.",
                      "文件中的张量不是模型的状态字典。")
        try:
            architecture = json.loads(metadata.get("architecture", ""))
        except json.JSONDecodeError:
            architecture = None
        if architecture != model.architecture:
            self.fail(2, "the metadata needs an entry \"architecture\": `json.dumps(model.architecture)` "
                      "(metadata values are strings).",
                      "元数据需要一项 \"architecture\"：`json.dumps(model.architecture)`（元数据的值都是字符串）。")
        self.passed(2, "weights and architecture in a file that holds no code.",
                    "权重和架构都保存在一个不含任何代码的文件中。")


# --------------------------------------------------------------------------- lesson 4

class Lesson4(Checks):
    lesson = 4

    def exercise_1(self, load_any_prefix):
        """``load_any_prefix(model, state_dict)`` loads a state dict with or without wrapper prefixes."""
        chance = _chance()
        layout = _layout(chance)
        seed, other_seed = _seeds(chance, 2)
        source = _tiny_network(*layout, seed=seed)
        prefixes = ["", "module.", "_orig_mod.", "_orig_mod.module."]
        chance.shuffle(prefixes)
        for prefix in prefixes:
            state_dict = {prefix + name: tensor.clone() for name, tensor in source.state_dict().items()}
            model = _tiny_network(*layout, seed=other_seed)
            self.call(1, load_any_prefix, model, state_dict)
            if not _same_tensors(model.state_dict(), source.state_dict()):
                self.fail(1, f"with the prefix {prefix!r} the weights were not loaded.",
                          f"带前缀 {prefix!r} 时权重没有加载进来。")
        self.passed(1, "loads with no prefix, `module.`, `_orig_mod.` and both.",
                    "无论没有前缀，还是 `module.`、`_orig_mod.` 或两者兼有，都能加载。")

    def exercise_2(self, load_matching):
        """``load_matching(model, state_dict)`` loads the tensors whose name and shape match and
        returns the sorted names it skipped.

        The checkpoint's network has another number of classes and sometimes more hidden
        layers than ``model``: its output layer, and any extra layer, must be skipped."""
        chance = _chance()
        hidden, extra = _hidden_sizes(chance, 1, 2), _hidden_sizes(chance, 0, 2)
        classes, new_classes = chance.sample(range(2, 13), 2)
        seed, other_seed = _seeds(chance, 2)
        offered = _tiny_network(classes, hidden + extra, seed=seed).state_dict()
        model = _tiny_network(new_classes, hidden, seed=other_seed)
        before = copy.deepcopy(model.state_dict())
        expected = sorted(name for name, tensor in offered.items()
                          if name not in before or before[name].shape != tensor.shape)
        skipped = self.call(2, load_matching, model, dict(offered))
        loaded = model.state_dict()
        wrong = [name for name in loaded
                 if name not in expected and not _same_tensor(loaded[name], offered[name])]
        if wrong:
            self.fail(2, f"the matching layers were not loaded: {wrong}.",
                      f"匹配的层没有加载进来：{wrong}。")
        if any(not _same_tensor(loaded[name], before[name]) for name in loaded if name in expected):
            self.fail(2, "the new output layer changed: leave the tensors whose shape differs as they are.",
                      "新的输出层被改动了：形状不同的张量应当保持原样。")
        if not isinstance(skipped, list | tuple) or list(skipped) != expected:
            self.fail(2, f"it returned {skipped!r}; return the sorted names it skipped: {expected}.",
                      f"它返回了 {skipped!r}；请返回按名字排序的、被跳过的键：{expected}。")
        self.passed(2, "the hidden layers come from the checkpoint, the new head keeps its own weights.",
                    "隐藏层来自检查点，新的输出层保留了自己的权重。")


# --------------------------------------------------------------------------- lesson 5

def _step_name(step):
    """The name of the step folder of ``step``: ``step-000040``."""
    return f"step-{step:06d}"


def _killed_run(root, chance):
    """Fill ``root`` as a run killed while saving leaves it: 3 to 6 step folders at random
    steps, the newest without ``.metadata`` (and sometimes an older one too), a complete
    folder whose name is not a step folder's, and a text file. Returns the names of the
    newest complete step folder, of the interrupted newest one and of the other folder."""
    steps = sorted(chance.sample(range(1, 10**6), chance.randint(3, 6)))
    interrupted = {steps[-1], *chance.sample(steps[:-2], chance.randint(0, 1))}
    other = "step-best"
    for name, complete in [*((_step_name(s), s not in interrupted) for s in steps), (other, True)]:
        folder = root / name
        folder.mkdir()
        (folder / "__0_0.distcp").write_bytes(b"shards")
        if complete:
            (folder / ".metadata").write_bytes(b"metadata")
    (root / "notes.txt").write_text("not a checkpoint")
    return _step_name(steps[-2]), _step_name(steps[-1]), other


class Lesson5(Checks):
    lesson = 5

    def exercise_1(self, newest_complete):
        """``newest_complete(root)`` returns the newest step folder that has ``.metadata``, or None."""
        chance = _chance()
        with _folder() as root:
            found = self.call(1, newest_complete, root)
            if found is not None:
                self.fail(1, f"an empty folder has no checkpoint; it returned {found!r}, not None.",
                          f"空目录里没有检查点；它返回了 {found!r}，而不是 None。")
            expected, interrupted, other = _killed_run(root, chance)
            found = self.call(1, newest_complete, root)
        if not isinstance(found, str | os.PathLike) or Path(found).name != expected:
            self.fail(1, f"it returned {found!r}; the newest complete step folder is {expected} "
                      f"({interrupted} has no .metadata: its save was interrupted; {other} is not "
                      "a step folder).",
                      f"它返回了 {found!r}；最新的完整步骤目录是 {expected}"
                      f"（{interrupted} 没有 .metadata：它的保存被中断了；{other} 不是步骤目录）。")
        self.passed(1, "the newest folder whose save finished; the interrupted one is skipped.",
                    "找到了保存完成的最新目录，跳过了被中断的那个。")

    def exercise_2(self, load_dcp):
        """``load_dcp(model, folder)`` loads a DCP folder (saved as {"model": ...}) into ``model``
        in this single process, checking the folder first."""
        import torch.distributed.checkpoint as dcp

        chance = _chance()
        layout = _layout(chance)
        seed, other_seed = _seeds(chance, 2)
        source = _tiny_network(*layout, seed=seed)
        step, hostile_step = chance.sample(range(1, 10**6), 2)
        with _folder() as root, _quiet():
            folder = root / _step_name(step)
            dcp.save({"model": source.state_dict()}, checkpoint_id=folder, no_dist=True)
            model = _tiny_network(*layout, seed=other_seed)
            self.call(2, load_dcp, model, folder)
            hostile = root / _step_name(hostile_step)
            dcp.save({"model": source.state_dict()}, checkpoint_id=hostile, no_dist=True)
            (hostile / ".metadata").write_bytes(pickle.dumps(_Payload()))
            self.refuses_hostile_file(
                2, lambda f: load_dcp(_tiny_network(*layout, seed=other_seed), f), hostile, advice=(
                    "plain `dcp.load` unpickles `.metadata` without any restriction. Check the folder "
                    "first with `distributed_checkpoints.check_metadata`, or load with "
                    "`distributed_checkpoints.load`, which does both.",
                    "直接调用 `dcp.load` 会不加限制地反序列化 `.metadata`。请先用 "
                    "`distributed_checkpoints.check_metadata` 检查目录，或者改用 "
                    "`distributed_checkpoints.load`，它会先检查再加载。"))
        if not _same_tensors(model.state_dict(), source.state_dict()):
            self.fail(2, "the model does not hold the saved weights: load into "
                      "`{\"model\": model.state_dict()}` (DCP loads in place).",
                      "模型中的权重不是保存的那些：请加载到 `{\"model\": model.state_dict()}` 中（DCP 原地加载）。")
        self.passed(2, "the weights are back, and a folder with a hostile .metadata is refused.",
                    "权重恢复了，带恶意 .metadata 的目录也被拒绝了。")


LESSONS = {checks.lesson: checks for checks in (Lesson1, Lesson2, Lesson3, Lesson4, Lesson5)}


def for_lesson(lesson, language="en"):
    """The checks of ``lesson``'s exercises, speaking ``language`` ("en" or "zh-CN")."""
    if lesson not in LESSONS:
        raise ValueError(f"there are exercises for lessons {sorted(LESSONS)}, not {lesson!r}")
    return LESSONS[lesson](language)


def exercise_numbers(lesson):
    """The numbers of ``lesson``'s exercises, as its checks define them."""
    return sorted(int(name.rsplit("_", 1)[1]) for name in dir(LESSONS[lesson])
                  if name.startswith("exercise_"))
