"""Checks for the exercises at the end of each lesson.

A lesson's exercise section starts with::

    check = exercise_checks.for_lesson(2, language="en")

Each exercise asks for a function; ``check.exercise_1(save_general_checkpoint)``
then calls the learner's function on small objects of its own (a tiny network,
a temporary folder), so it runs in well under a second and does not depend on
the rest of the notebook. A correct answer gets a short "well done". Otherwise
the check raises ``ExerciseFailed``, whose message says, in the notebook's
language, what is missing or wrong and what to try; Jupyter shows that message
without a traceback. An exercise that is still nbgrader's stub (it raises
``NotImplementedError``) is reported as not done yet. An error inside the
learner's own code is left as it is, with its traceback, to debug.
"""

import contextlib
import copy
import datetime
import json
import pickle
import tempfile
from pathlib import Path

import torch
from torch import nn

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
    """What every lesson's checks share: the language, calling the learner's code, and
    telling the result."""

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


def _tiny_network(output_size=3, hidden_layers=(6, 5), seed=0):
    import fc_model

    torch.manual_seed(seed)
    return fc_model.Network(8, output_size, list(hidden_layers))


def _same_tensors(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@contextlib.contextmanager
def _folder():
    with tempfile.TemporaryDirectory(prefix="exercise-") as name:
        yield Path(name)


# --------------------------------------------------------------------------- lesson 1

class Lesson1(Checks):
    lesson = 1

    def exercise_1(self, save_weights):
        """``save_weights(model, path)`` saves the model's ``state_dict`` and nothing else."""
        model = _tiny_network()
        with _folder() as folder:
            path = folder / "weights.pth"
            self.call(1, save_weights, model, path)
            if not path.is_file():
                self.fail(1, f"no file was written at the path the function received ({path.name}).",
                          f"传给函数的路径（{path.name}）上没有写出文件。")
            try:
                saved = torch.load(path, weights_only=True)
            except pickle.UnpicklingError:
                self.fail(1, "`torch.load(..., weights_only=True)` refuses the file: it holds Python "
                          "objects, probably the whole model. Save `model.state_dict()` instead.",
                          "`torch.load(..., weights_only=True)` 拒绝加载这个文件：文件中有 Python 对象，"
                          "多半是整个模型。请改为保存 `model.state_dict()`。")
        if not isinstance(saved, dict) or not all(isinstance(v, torch.Tensor) for v in saved.values()):
            self.fail(1, f"the file holds a {type(saved).__name__}, not a state dict (names → tensors).",
                      f"文件中保存的是 {type(saved).__name__}，而不是状态字典（名字 → 张量）。")
        if not _same_tensors(dict(saved), model.state_dict()):
            self.fail(1, "the file's tensors are not the model's `state_dict()`: "
                      f"it has {sorted(saved)}.",
                      f"文件中的张量不是模型的 `state_dict()`：它包含 {sorted(saved)}。")
        self.passed(1, "the file holds exactly the model's state dict and loads with weights_only=True.",
                    "文件中恰好是模型的状态字典，并且可以用 weights_only=True 加载。")

    def exercise_2(self, snapshot):
        """``snapshot(model)`` returns a copy of the state dict that training does not change."""
        model = _tiny_network()
        before = copy.deepcopy(model.state_dict())
        taken = self.call(2, snapshot, model)
        if not hasattr(taken, "keys") or not _same_tensors(dict(taken), before):
            self.fail(2, "return the model's state dict (names → tensors), copied.",
                      "请返回模型的状态字典（名字 → 张量）的副本。")
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(1.0)  # what an optimizer step does: change the weights in place
        if not _same_tensors(dict(taken), before):
            self.fail(2, "the snapshot changed when the model's weights changed: `state_dict()` "
                      "refers to the live tensors. Copy them, e.g. with `copy.deepcopy`.",
                      "模型权重改变后，快照也跟着变了：`state_dict()` 引用的是模型中正在使用的张量。"
                      "请复制它们，例如用 `copy.deepcopy`。")
        self.passed(2, "the snapshot keeps the old weights while the model changes.",
                    "模型改变后，快照仍保留着原来的权重。")


# --------------------------------------------------------------------------- lesson 2

def _regression_batches(seed=0, count=4):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 5, generator=generator), torch.randn(16, 2, generator=generator))
            for _ in range(count)]


def _regression_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2))


def _sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def _train_epoch(model, optimizer, batches):
    for inputs, targets in batches:
        optimizer.zero_grad()
        nn.functional.mse_loss(model(inputs), targets).backward()
        optimizer.step()


class Lesson2(Checks):
    lesson = 2
    KEYS = ("epoch", "model_state_dict", "optimizer_state_dict")

    def exercise_1(self, save_general_checkpoint):
        """``save_general_checkpoint(path, model, optimizer, epoch)`` writes the three entries."""
        model = _regression_model()
        optimizer = _sgd(model)
        _train_epoch(model, optimizer, _regression_batches())
        with _folder() as folder:
            path = folder / "checkpoint.pth"
            self.call(1, save_general_checkpoint, path, model, optimizer, 1)
            if not path.is_file():
                self.fail(1, "no file was written at `path`.", "`path` 上没有写出文件。")
            try:
                saved = torch.load(path, weights_only=True)
            except pickle.UnpicklingError:
                self.fail(1, "`weights_only=True` refuses the file: save state dicts and plain "
                          "values, not the model or optimizer objects.",
                          "`weights_only=True` 拒绝加载这个文件：请保存状态字典和普通的值，"
                          "而不是模型或优化器对象本身。")
        missing = [key for key in self.KEYS if not isinstance(saved, dict) or key not in saved]
        if missing:
            self.fail(1, f"the checkpoint lacks {missing}; it needs a dict with {list(self.KEYS)}.",
                      f"检查点缺少 {missing}；它应当是包含 {list(self.KEYS)} 的字典。")
        if saved["epoch"] != 1:
            self.fail(1, f"`epoch` is {saved['epoch']!r}, not the value passed in (1).",
                      f"`epoch` 是 {saved['epoch']!r}，而不是传入的值（1）。")
        if not _same_tensors(saved["model_state_dict"], model.state_dict()):
            self.fail(1, "`model_state_dict` is not `model.state_dict()`.",
                      "`model_state_dict` 不是 `model.state_dict()`。")
        if not saved["optimizer_state_dict"].get("state"):
            self.fail(1, "`optimizer_state_dict` has no momentum buffers: save `optimizer.state_dict()`.",
                      "`optimizer_state_dict` 中没有动量缓冲区：请保存 `optimizer.state_dict()`。")
        self.passed(1, "a general checkpoint with the epoch, the model and the optimizer.",
                    "这是一个包含轮数、模型和优化器的通用检查点。")

    def _saved_after_one_epoch(self, path):
        model = _regression_model()
        optimizer = _sgd(model)
        _train_epoch(model, optimizer, _regression_batches())
        torch.save({"epoch": 1, "model_state_dict": model.state_dict(),
                    "optimizer_state_dict": optimizer.state_dict()}, path)
        return model, optimizer

    def exercise_2(self, resume):
        """``resume(path, model, optimizer)`` restores both in place and returns the epoch."""
        with _folder() as folder:
            path = folder / "checkpoint.pth"
            original, original_optimizer = self._saved_after_one_epoch(path)
            model = _regression_model(seed=1)
            optimizer = _sgd(model)
            epoch = self.call(2, resume, path, model, optimizer)
            hostile = folder / "hostile.pth"
            torch.save({"epoch": 1, "model_state_dict": model.state_dict(),
                        "optimizer_state_dict": optimizer.state_dict(), "extra": _Payload()}, hostile)
            self.refuses_hostile_file(2, lambda p: resume(p, _regression_model(), _sgd(_regression_model())),
                                      hostile)
        if epoch != 1:
            self.fail(2, f"it returned {epoch!r}; return the epoch stored in the checkpoint (1).",
                      f"它返回了 {epoch!r}；请返回检查点中保存的轮数（1）。")
        if not _same_tensors(model.state_dict(), original.state_dict()):
            self.fail(2, "the model's weights were not restored: `model.load_state_dict(...)`.",
                      "模型的权重没有恢复：请调用 `model.load_state_dict(...)`。")
        if not optimizer.state:
            self.fail(2, "the optimizer's momentum buffers were not restored: "
                      "`optimizer.load_state_dict(...)`.",
                      "优化器的动量缓冲区没有恢复：请调用 `optimizer.load_state_dict(...)`。")
        batches = _regression_batches(seed=1)
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
        ``path`` when it exists and saves after every epoch."""
        batches = _regression_batches()
        with _folder() as folder:
            straight = _regression_model()
            self.call(3, train_with_checkpoints, straight, _sgd(straight), batches, 3,
                      folder / "straight.pth")
            reference = _regression_model()
            reference_optimizer = _sgd(reference)
            for _ in range(3):
                _train_epoch(reference, reference_optimizer, batches)
            if not _same_tensors(straight.state_dict(), reference.state_dict()):
                self.fail(3, "3 epochs from scratch do not give the expected weights: each epoch "
                          "should run `zero_grad`, `mse_loss(model(x), y).backward()` and `step` "
                          "on every batch, in order.",
                          "从头训练 3 轮没有得到预期的权重：每一轮都应按顺序对每个批次执行 `zero_grad`、"
                          "`mse_loss(model(x), y).backward()` 和 `step`。")
            path = folder / "interrupted.pth"
            first = _regression_model()
            self.call(3, train_with_checkpoints, first, _sgd(first), batches, 1, path)
            if not path.is_file():
                self.fail(3, "nothing was saved at `path` after an epoch.",
                          "训练一轮之后，`path` 上没有保存任何文件。")
            resumed = _regression_model(seed=1)  # other weights: only the file can make it right
            self.call(3, train_with_checkpoints, resumed, _sgd(resumed), batches, 3, path)
            saved_epoch = torch.load(path, weights_only=True).get("epoch")
        if not _same_tensors(resumed.state_dict(), reference.state_dict()):
            self.fail(3, "1 epoch, a stop, then a run to 3 epochs does not give the weights of 3 "
                      "epochs without a stop: resume from the file and train only the epochs left.",
                      "先训练 1 轮、停下、再运行到第 3 轮，得到的权重与不中断地训练 3 轮不同："
                      "请从文件恢复，并且只训练剩下的轮数。")
        if saved_epoch != 3:
            self.fail(3, f"after the run to 3 epochs the file says epoch {saved_epoch!r}, not 3.",
                      f"运行到第 3 轮之后，文件中的轮数是 {saved_epoch!r}，而不是 3。")
        self.passed(3, "stopped after 1 epoch and resumed, the run ends with bit-identical weights.",
                    "训练 1 轮后停下再恢复，最终权重与不中断的训练逐位相同。")


# --------------------------------------------------------------------------- lesson 3

class Lesson3(Checks):
    lesson = 3

    def exercise_1(self, load_with_allowlist):
        """``load_with_allowlist(path)`` loads a file that needs two allowed globals, scoped."""
        state = {"weights": torch.arange(4.0),
                 "saved_on": datetime.date(2026, 12, 1),
                 "training_time": datetime.timedelta(minutes=42)}
        allowed_before = list(torch.serialization.get_safe_globals())
        with _folder() as folder:
            path = folder / "with-extras.pth"
            torch.save(state, path)
            hostile = folder / "hostile.pth"
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
        if not isinstance(loaded, dict) or loaded.get("saved_on") != state["saved_on"] \
                or loaded.get("training_time") != state["training_time"] \
                or not torch.equal(loaded.get("weights", torch.empty(0)), state["weights"]):
            self.fail(1, "return what the file holds (a dict with weights, saved_on and training_time).",
                      "请返回文件中保存的内容（包含 weights、saved_on 和 training_time 的字典）。")
        self.passed(1, "the two classes were allowed for this load only, and a hostile file is "
                    "still refused.",
                    "只在这次加载中放行了这两个类，恶意文件仍然被拒绝。")

    def exercise_2(self, save_for_sharing):
        """``save_for_sharing(model, path)`` writes safetensors with the architecture as metadata."""
        from safetensors import SafetensorError
        from safetensors.torch import safe_open

        model = _tiny_network(output_size=4, hidden_layers=(7,))
        with _folder() as folder:
            path = folder / "shared.safetensors"
            self.call(2, save_for_sharing, model, path)
            try:
                with safe_open(str(path), framework="pt") as file:
                    metadata = file.metadata() or {}
                    tensors = {name: file.get_tensor(name) for name in file.keys()}
            except (SafetensorError, OSError, FileNotFoundError):
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
        source = _tiny_network()
        for prefix in ("", "module.", "_orig_mod.", "_orig_mod.module."):
            state_dict = {prefix + name: tensor.clone() for name, tensor in source.state_dict().items()}
            model = _tiny_network(seed=1)
            self.call(1, load_any_prefix, model, state_dict)
            if not _same_tensors(model.state_dict(), source.state_dict()):
                self.fail(1, f"with the prefix {prefix!r} the weights were not loaded.",
                          f"带前缀 {prefix!r} 时权重没有加载进来。")
        self.passed(1, "loads with no prefix, `module.`, `_orig_mod.` and both.",
                    "无论没有前缀，还是 `module.`、`_orig_mod.` 或两者兼有，都能加载。")

    def exercise_2(self, load_matching):
        """``load_matching(model, state_dict)`` loads the tensors whose name and shape match and
        returns the sorted names it skipped."""
        source = _tiny_network(output_size=10)
        model = _tiny_network(output_size=3, seed=1)
        head_before = {name: t.clone() for name, t in model.state_dict().items() if name.startswith("output")}
        skipped = self.call(2, load_matching, model, dict(source.state_dict()))
        loaded = model.state_dict()
        wrong = [name for name in loaded if not name.startswith("output")
                 and not torch.equal(loaded[name], source.state_dict()[name])]
        if wrong:
            self.fail(2, f"the matching layers were not loaded: {wrong}.",
                      f"匹配的层没有加载进来：{wrong}。")
        if any(not torch.equal(loaded[name], head_before[name]) for name in head_before):
            self.fail(2, "the new output layer changed: leave the tensors whose shape differs as they are.",
                      "新的输出层被改动了：形状不同的张量应当保持原样。")
        if list(skipped or []) != ["output.bias", "output.weight"]:
            self.fail(2, f"it returned {skipped!r}; return the sorted names it skipped: "
                      "['output.bias', 'output.weight'].",
                      f"它返回了 {skipped!r}；请返回按名字排序的、被跳过的键："
                      "['output.bias', 'output.weight']。")
        self.passed(2, "the hidden layers come from the checkpoint, the new head keeps its own weights.",
                    "隐藏层来自检查点，新的输出层保留了自己的权重。")


# --------------------------------------------------------------------------- lesson 5

class Lesson5(Checks):
    lesson = 5

    def exercise_1(self, newest_complete):
        """``newest_complete(root)`` returns the newest step folder that has ``.metadata``, or None."""
        with _folder() as root:
            found = self.call(1, newest_complete, root)
            if found is not None:
                self.fail(1, f"an empty folder has no checkpoint; it returned {found!r}, not None.",
                          f"空目录里没有检查点；它返回了 {found!r}，而不是 None。")
            for step, complete in ((10, True), (20, True), (30, False), (9, True)):
                folder = root / f"step-{step:06d}"
                folder.mkdir()
                (folder / "__0_0.distcp").write_bytes(b"shards")
                if complete:
                    (folder / ".metadata").write_bytes(b"metadata")
            (root / "notes.txt").write_text("not a checkpoint")
            found = self.call(1, newest_complete, root)
        if found is None or Path(found).name != "step-000020":
            self.fail(1, f"it returned {found!r}; the newest complete folder is step-000020 "
                      "(step-000030 has no .metadata: its save was interrupted).",
                      f"它返回了 {found!r}；最新的完整目录是 step-000020"
                      "（step-000030 没有 .metadata：它的保存被中断了）。")
        self.passed(1, "the newest folder whose save finished; the interrupted one is skipped.",
                    "找到了保存完成的最新目录，跳过了被中断的那个。")

    def exercise_2(self, load_dcp):
        """``load_dcp(model, folder)`` loads a DCP folder (saved as {"model": ...}) into ``model``
        in this single process, checking the folder first."""
        import torch.distributed.checkpoint as dcp

        source = _tiny_network()
        with _folder() as root, _quiet_dcp():
            folder = root / "step-000010"
            dcp.save({"model": source.state_dict()}, checkpoint_id=folder, no_dist=True)
            model = _tiny_network(seed=1)
            self.call(2, load_dcp, model, folder)
            hostile = root / "step-000020"
            dcp.save({"model": source.state_dict()}, checkpoint_id=hostile, no_dist=True)
            (hostile / ".metadata").write_bytes(pickle.dumps(_Payload()))
            self.refuses_hostile_file(2, lambda f: load_dcp(_tiny_network(seed=1), f), hostile, advice=(
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


@contextlib.contextmanager
def _quiet_dcp():
    """Silence DCP's warnings about running without a process group."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


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

