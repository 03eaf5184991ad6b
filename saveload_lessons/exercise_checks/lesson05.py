"""The checks of lesson 5's exercises."""

import os
import pickle
from pathlib import Path

from saveload_lessons.exercise_checks.common import (
    Checks,
    _chance,
    _folder,
    _layout,
    _Payload,
    _quiet,
    _same_tensors,
    _seeds,
    _tiny_network,
)


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
                          f"空目录里没有检查点，应当返回 None，而你的函数返回了 {found!r}。")
            expected, interrupted, other = _killed_run(root, chance)
            found = self.call(1, newest_complete, root)
        if not isinstance(found, str | os.PathLike) or Path(found).name != expected:
            self.fail(1, f"it returned {found!r}; the newest complete step folder is {expected} "
                      f"({interrupted} has no .metadata: its save was interrupted; {other} is not "
                      "a step folder).",
                      f"你的函数返回了 {found!r}；最新的完整步骤目录是 {expected}"
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
                      "模型中的权重与保存的权重不同：请加载到 `{\"model\": model.state_dict()}` 中（DCP 会就地加载到这些张量中）。")
        self.passed(2, "the weights are back, and a folder with a hostile .metadata is refused.",
                    "权重恢复了，带恶意 .metadata 的目录也被拒绝了。")
