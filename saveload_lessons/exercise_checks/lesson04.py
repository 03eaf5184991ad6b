"""The checks of lesson 4's exercises."""

import copy

from saveload_lessons.exercise_checks.common import (
    Checks,
    _chance,
    _hidden_sizes,
    _layout,
    _same_tensor,
    _same_tensors,
    _seeds,
    _tiny_network,
)


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
                if prefix:
                    self.fail(1, f"with the prefix {prefix!r} the weights were not loaded.",
                              f"键带前缀 {prefix!r} 时，权重没有加载进来。")
                self.fail(1, "with no prefix the weights were not loaded.",
                          "键不带前缀时，权重没有加载进来。")
        self.passed(1, "loads with no prefix, `module.`, `_orig_mod.` and both.",
                    "键不带前缀、带 `module.`、带 `_orig_mod.` 或两者都带，都能加载。")

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
                      f"你的函数返回了 {skipped!r}；请返回按名字排序的、被跳过的键：{expected}。")
        self.passed(2, "the hidden layers come from the checkpoint, the new head keeps its own weights.",
                    "隐藏层来自检查点，新的输出层保留了自己的权重。")
