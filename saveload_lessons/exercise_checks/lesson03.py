"""The checks of lesson 3's exercises."""

import datetime
import json
from collections.abc import Mapping

import torch
from safetensors import SafetensorError
from safetensors import safe_open as _safe_open

from saveload_lessons.exercise_checks.common import (
    Checks,
    _chance,
    _file_name,
    _folder,
    _layout,
    _Payload,
    _same_tensor,
    _same_tensors,
    _seeds,
    _tiny_network,
)


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
                      "元数据需要一项 `\"architecture\"`，它的值是 `json.dumps(model.architecture)`（元数据的值都是字符串）。")
        self.passed(2, "weights and architecture in a file that holds no code.",
                    "权重和架构都保存在一个不含任何代码的文件中。")
