"""The checks of lesson 2's exercises."""

import copy
from collections.abc import Mapping

import torch
from torch import nn

from saveload_lessons.exercise_checks.common import (
    Checks,
    _chance,
    _file_name,
    _folder,
    _is_count,
    _Payload,
    _same_tensors,
    _seeded,
    _seeds,
)


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
        self.passed(1, "a general checkpoint with the epoch and the state dicts of the model and the optimizer.",
                    "这是一个通用检查点，其中有轮数以及模型和优化器的状态字典。")

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
