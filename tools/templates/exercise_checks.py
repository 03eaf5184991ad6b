"""The checks of lesson NUMBER's exercises."""

import torch

from saveload_lessons.exercise_checks.common import (
    Checks,
    _chance,
    _folder,
    _layout,
    _same_tensors,
    _seeds,
    _tiny_network,
)


class LessonNUMBER(Checks):
    lesson = NUMBER

    def exercise_1(self, save_weights):
        chance = _chance()
        model = _tiny_network(*_layout(chance), _seeds(chance, 1)[0])
        with _folder() as folder:
            path = folder / "weights.pth"
            self.call(1, save_weights, model, path)
            saved = self.read_saved(1, path, ("save `model.state_dict()`.", "请保存 `model.state_dict()`。"))
        if not _same_tensors(saved, model.state_dict()):
            self.fail(1, "the file does not hold `model.state_dict()`.", "文件中保存的不是 `model.state_dict()`。")
        self.passed(1, "the weights are saved.", "权重已保存。")

    def exercise_2(self, load_weights):
        chance = _chance()
        layout, (first, second) = _layout(chance), _seeds(chance, 2)
        source, model = _tiny_network(*layout, first), _tiny_network(*layout, second)
        with _folder() as folder:
            path = folder / "weights.pth"
            torch.save(source.state_dict(), path)
            self.call(2, load_weights, model, path)
        if not _same_tensors(model.state_dict(), source.state_dict()):
            self.fail(2, "the model does not hold the saved weights.", "模型中的权重不是保存的那些。")
        self.passed(2, "the weights are back.", "权重恢复了。")
