"""The checks of lesson 1's exercises."""

import copy
from collections.abc import Mapping

import torch

from saveload_lessons.exercise_checks.common import (
    Checks,
    _chance,
    _file_name,
    _folder,
    _layout,
    _same_tensors,
    _seeds,
    _tiny_network,
)


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
                    "模型改变后，快照仍持有原来的权重。")
