"""The checks of lesson 7's exercises.

Exercise 7.1 trains a tiny regression without a stop, then again in several calls, each with a
new model, optimizer and ``StatefulDataLoader``, and once kills a call during a step (an
optimizer hook raises ``_Killed``); the optimizer's steps are counted in every call, so an answer
that saves too seldom is caught even when its weights come out right. The loaders are built
from one seed, as a restarted job builds its own: an answer that saves no loader state but, on
resuming, draws and skips the batches already trained on reproduces the same batches, and
passes (it is right, only slower). Exercise 7.2 sends
``SIGTERM`` from inside a step, with a handler of its own installed first so that an answer
without one does not end the process. Exercise 7.3 makes one save fail halfway with a value
that cannot be pickled.
"""

import copy
import signal
import warnings
from collections.abc import Mapping

import torch
from torch import nn

from saveload_lessons.exercise_checks.common import (
    Checks,
    _chance,
    _file_name,
    _folder,
    _is_count,
    _load,
    _quiet,
    _same_tensors,
    _seeded,
    _seeds,
)

# --------------------------------------------------------------------------- exercise 7.1


class _Killed(BaseException):
    """Ends a call of the learner's function in the middle of a step, as a kill would. A
    ``BaseException``, so that an answer's ``except Exception`` does not swallow it."""


class _Run:
    """A tiny regression: its data, its network, its optimizer and its shuffling loader, built
    the same way every time (the loader's own generator from ``loader_seed``)."""

    def __init__(self, chance):
        size, self.batch_size = chance.randint(10, 40), chance.randint(3, 7)
        self.features, self.outputs = chance.randint(2, 5), chance.randint(1, 3)
        self.steps_per_epoch = -(-size // self.batch_size)
        data_seed, self.loader_seed = _seeds(chance, 2)
        generator = torch.Generator().manual_seed(data_seed)
        self.dataset = torch.utils.data.TensorDataset(torch.randn(size, self.features, generator=generator),
                                                      torch.randn(size, self.outputs, generator=generator))
        self.adam = chance.random() < 0.5

    def model(self, seed):
        with _seeded(seed):
            return nn.Linear(self.features, self.outputs)

    def optimizer(self, model):
        if self.adam:
            return torch.optim.Adam(model.parameters(), lr=0.01)
        return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def loader(self):
        from torchdata.stateful_dataloader import StatefulDataLoader

        # The sampler takes its generator's seed from torch's: the same seed gives the same
        # orders, epoch after epoch, and the learner's generator is left as it was.
        with _seeded(self.loader_seed), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchdata's note that set_vital is deprecated
            return StatefulDataLoader(self.dataset, batch_size=self.batch_size, shuffle=True, num_workers=0)

    def weights_after_each_step(self, seed, steps):
        """``[state dict after 0 steps, after 1 step, ...]`` of a run without a stop."""
        model = self.model(seed)
        optimizer, loader = self.optimizer(model), self.loader()
        after = [copy.deepcopy(model.state_dict())]
        while len(after) <= steps:
            for inputs, targets in loader:
                optimizer.zero_grad()
                nn.functional.mse_loss(model(inputs), targets).backward()
                optimizer.step()
                after.append(copy.deepcopy(model.state_dict()))
                if len(after) > steps:
                    break
        return after


def _stops(chance, steps_per_epoch):
    """The totals of the calls, ``[t1, ..., N]`` (N between 2 and 3 epochs), and the index of the
    call that is killed during a step: one stop at least falls in the middle of an epoch, one
    every other run at the end of one, and the killed call (not the first) has at least two
    steps to do, so that one step at least is done before the kill. The first call does two
    steps at least: a step that depends on the one before (no ``zero_grad``) shows there."""
    total = chance.randint(2 * steps_per_epoch + 1, 3 * steps_per_epoch)
    while True:
        stops = chance.sample(range(2, total), chance.randint(2, 3))
        if chance.random() < 0.5:
            stops[0] = chance.choice([steps_per_epoch, 2 * steps_per_epoch])
        stops = sorted({*stops, total})
        killable = [i for i in range(1, len(stops)) if stops[i] - stops[i - 1] >= 2]
        if len(stops) >= 3 and killable and any(stop % steps_per_epoch for stop in stops):
            return stops, chance.choice(killable)


def _n_steps(count):
    """"1 step", "2 steps", ...: a number of steps in an English message."""
    return f"{count} step" if count == 1 else f"{count} steps"


def _find(value, found):
    """Whether ``value``, or a mapping or sequence nested in it, is a mapping for which
    ``found(mapping)`` is true."""
    if isinstance(value, Mapping):
        return found(value) or any(_find(item, found) for item in value.values())
    if isinstance(value, list | tuple):
        return any(_find(item, found) for item in value)
    return False


def _has_loader_state(mapping):
    return "_num_yielded" in mapping or "_snapshot" in mapping


def _has_optimizer_state(mapping):
    return "param_groups" in mapping and isinstance(mapping.get("state"), Mapping) and bool(mapping["state"])


# --------------------------------------------------------------------------- exercise 7.2


class _Signals:
    """What happened during one run of the learner's ``run_until_preempted``."""

    def __init__(self, signal_at):
        self.signal_at = signal_at     # the step during which SIGTERM arrives (None: no signal)
        self.started = self.finished = 0
        self.in_step = False
        self.saves = []                # (in the middle of a step?, steps finished) at each save
        self.default_action = False    # SIGTERM found no handler of the learner's: the process would die
        self.ignored = False           # SIGTERM found SIG_IGN
        self.raised = None             # what the learner's handler raised inside the step
        self.restored = None           # whether the handler before the call was back after it

    def safety_handler(self, signal_number, frame):
        self.default_action = True

    def train_step(self, chance):
        self.started += 1
        self.in_step = True
        _work(chance)
        if self.started == self.signal_at:
            handler = signal.getsignal(signal.SIGTERM)
            if handler is signal.SIG_IGN:
                self.ignored = True
            elif not callable(handler):  # SIG_DFL: raising it would end this process
                self.default_action = True
            else:
                try:
                    signal.raise_signal(signal.SIGTERM)  # the handler runs before this returns
                except BaseException as error:  # what the learner's handler raised
                    self.raised = error
            _work(chance)
        self.in_step = False
        self.finished += 1

    def save(self):
        self.saves.append((self.in_step, self.finished))


def _work(chance):
    """A little arithmetic: a step's work, before and after the signal arrives."""
    return sum(range(chance.randint(100, 2000)))


# --------------------------------------------------------------------------- exercise 7.3


class _Unpicklable:
    """A value that ``torch.save`` cannot write: pickling it fails after the file was opened."""

    def __reduce__(self):
        raise RuntimeError("this value cannot be saved: the check makes this save fail halfway")


def _checkpoint_name(step):
    return f"step-{step:06d}.pt"


def _keeping_states(chance, count, keep):
    """``count`` states with increasing steps and distinct accuracies, one of them (after the
    first ``keep``) less accurate than all before it, so that only being the latest keeps it."""
    steps, step = [], chance.randint(1, 300)
    for _ in range(count):
        steps.append(step)
        step += chance.randint(1, 400)
    accuracies = [value / 10_000 for value in chance.sample(range(3000, 9500), count)]
    low = chance.randint(keep, count - 1)
    lowest = min(range(low + 1), key=accuracies.__getitem__)
    accuracies[low], accuracies[lowest] = accuracies[lowest], accuracies[low]
    rows, columns = chance.randint(2, 4), chance.randint(2, 5)
    generator = torch.Generator().manual_seed(_seeds(chance, 1)[0])
    return [{"step": step, "accuracy": accuracy,
             "model": {"weight": torch.randn(rows, columns, generator=generator),
                       "bias": torch.randn(rows, generator=generator)}}
            for step, accuracy in zip(steps, accuracies)]


def _copy(state):
    return {**state, "model": {name: tensor.clone() for name, tensor in state["model"].items()}}


def _best(saved, keep):
    """The ``keep`` states of highest accuracy among ``saved`` (the earlier of two equal ones)."""
    return sorted(saved, key=lambda state: (-state["accuracy"], state["step"]))[:keep]


def _kept(saved, keep):
    """The names of the checkpoints to keep among the states ``saved``: the latest and the
    ``keep`` of highest accuracy."""
    latest = max(saved, key=lambda state: state["step"])
    return {_checkpoint_name(state["step"]) for state in (latest, *_best(saved, keep))}


def _contents(folder):
    """``{name: bytes}`` of everything in ``folder``, hidden files included (None: not a file)."""
    return {path.name: path.read_bytes() if path.is_file() else None for path in folder.iterdir()}


class Lesson7(Checks):
    lesson = 7

    # ----------------------------------------------------------------------- 7.1

    def exercise_1(self, train_steps_resumable):
        """``train_steps_resumable(model, optimizer, loader, steps, path)`` trains to ``steps``
        steps in all, saving after every step, and continues from ``path`` when it exists."""
        chance = _chance()
        run = _Run(chance)
        stops, killed_call = _stops(chance, run.steps_per_epoch)
        seeds = _seeds(chance, len(stops) + 2)
        # A DataLoader's iterator draws a seed from torch's generator: the learner's is kept.
        with _folder() as folder, torch.random.fork_rng(devices=[]):
            expected = run.weights_after_each_step(seeds[0], stops[-1])
            path = folder / _file_name(chance, "resumable", ".pt")
            done, saved, kill = 0, None, None  # steps in the file, what it holds, the last kill
            calls = [(stop, None) for stop in stops]
            stop = stops[killed_call]
            calls.insert(killed_call, (stop, chance.randint(stops[killed_call - 1] + 2, stop)))
            for (stop, kill_at), seed in zip(calls, seeds):
                model = run.model(seed)
                optimizer = run.optimizer(model)
                count = self._count_steps(optimizer, None if kill_at is None else kill_at - done)
                try:
                    self.call(1, train_steps_resumable, model, optimizer, run.loader(), stop, path)
                except _Killed:
                    pass
                if kill_at is not None:  # the process is gone, whatever the answer did with the kill
                    kill, done = (kill_at, done), kill_at - 1
                    saved = self._read(path) if path.exists() else None
                    continue
                right = _same_tensors(model.state_dict(), expected[stop])
                self._check_count(count["steps"], stop, done, kill, right)
                if not right:
                    self._weights_differ(stop, done, saved)
                saved, done, kill = self._read(path), stop, None
        self.passed(1, "stopped in the middle of an epoch and killed during a step, the resumed runs "
                    "end with bit-identical weights.",
                    "在一轮的中途停下、在一步之中被杀掉之后，恢复的训练最终都得到了逐位相同的权重。")

    @staticmethod
    def _count_steps(optimizer, kill_at):
        """Count the optimizer's steps in ``count["steps"]``; raise ``_Killed`` at the start of
        step ``kill_at`` of this call (None: never)."""
        count = {"steps": 0}

        def hook(optimizer, args, kwargs):
            if count["steps"] + 1 == kill_at:
                raise _Killed()
            count["steps"] += 1

        optimizer.register_step_pre_hook(hook)
        return count

    def _read(self, path):
        return self.read_saved(1, path, (
            "it holds Python objects. Save state dicts and plain values: `model.state_dict()`, "
            "`optimizer.state_dict()`, `loader.state_dict()` and the step.",
            "文件中有 Python 对象。请保存状态字典和普通的值：`model.state_dict()`、"
            "`optimizer.state_dict()`、`loader.state_dict()` 和步数。"))

    def _check_count(self, count, stop, before, kill, right):
        """Fail unless a call with ``steps=stop``, with ``before`` steps in the file, did
        ``stop - before`` steps. ``kill`` is ``(step, steps in the file before it)`` when the
        previous call was killed during that step; ``right``: whether the weights are right."""
        if count == stop - before:
            return
        if kill is not None and right and count == stop - kill[1]:
            step = kill[0]
            self.fail(1, f"the run was killed during step {step}, after {_n_steps(step - 1)}; the call that "
                      f"followed, with `steps={stop}`, did {_n_steps(count)}, not {stop - before}: the file did "
                      "not hold the steps done before the kill. Save after every step.",
                      f"训练在第 {step} 步之中被杀掉，此前已完成 {step - 1} 步；随后以 `steps={stop}` 进行的"
                      f"那次调用做了 {count} 步，而不是 {stop - before} 步：文件中没有记录被杀掉之前完成的那些步。"
                      "请在每一步之后都保存。")
        if before and count == stop:
            self.fail(1, f"with {_n_steps(before)} done in the file, a call with `steps={stop}` did "
                      f"{_n_steps(count)}: it started again from step 0. When `path` exists, load it and "
                      "continue from the step it holds.",
                      f"文件中已完成 {before} 步，以 `steps={stop}` 进行的调用却做了 {count} 步：它从第 0 步"
                      "重新开始了。`path` 存在时，请加载它，从其中记录的步数继续。")
        if not before:
            self.fail(1, f"from scratch, a call with `steps={stop}` did {_n_steps(count)}: stop as soon as "
                      f"{_n_steps(stop)} are done, even in the middle of an epoch.",
                      f"从头开始时，以 `steps={stop}` 进行的调用做了 {count} 步：一旦完成 {stop} 步就停止，"
                      "即使正处在一轮的中途。")
        self.fail(1, f"with {_n_steps(before)} done before, a call with `steps={stop}` did {_n_steps(count)}, "
                  f"not {stop - before}: count the steps across calls and epochs, and stop as soon as {stop} "
                  "are done in all, even in the middle of an epoch.",
                  f"之前已完成 {before} 步，以 `steps={stop}` 进行的调用做了 {count} 步，而不是 "
                  f"{stop - before} 步：步数要跨越各次调用和各轮累计，一旦总共完成 {stop} 步就停止，"
                  "即使正处在一轮的中途。")

    def _weights_differ(self, stop, before, saved):
        """Fail, naming the probable cause: the weights after a call to ``stop`` steps, resumed
        from the file ``saved`` that holds ``before`` steps, are not those of a run without a stop."""
        if not before:
            self.fail(1, f"training {_n_steps(stop)} from scratch does not give the weights of a run without a "
                      "stop: each step is `optimizer.zero_grad()`, `nn.functional.mse_loss(model(inputs), "
                      "targets).backward()`, `optimizer.step()`, on the batches the loader gives, in order.",
                      f"从头训练 {stop} 步得到的权重，与不间断的训练得到的不同：每一步依次是 "
                      "`optimizer.zero_grad()`、`nn.functional.mse_loss(model(inputs), targets).backward()`"
                      " 和 `optimizer.step()`，按顺序用在数据加载器给出的各个批次上。")
        english = (f"resumed from the file saved after step {before}, the run to step {stop} does not give "
                   "the weights of a run without a stop: ")
        chinese = f"从第 {before} 步之后保存的文件恢复、运行到第 {stop} 步，得到的权重与不间断的训练不同："
        if not _find(saved, _has_loader_state):
            self.fail(1, english + "the file does not hold the loader's position, so the resumed run started "
                      "a new epoch, with other batches. Save `loader.state_dict()` in the checkpoint and give "
                      "it back with `loader.load_state_dict(...)` before iterating.",
                      chinese + "文件中没有数据加载器读到的位置，所以恢复后的训练重新开始了一轮，拿到的是别的"
                      "批次。请把 `loader.state_dict()` 保存在检查点中，并在遍历之前用 "
                      "`loader.load_state_dict(...)` 恢复它。")
        if not _find(saved, _has_optimizer_state):
            self.fail(1, english + "the file holds no optimizer state (momentum buffers, or Adam's running "
                      "averages), so the resumed steps are not the same. Save `optimizer.state_dict()` and "
                      "load it with `optimizer.load_state_dict(...)`.",
                      chinese + "文件中没有优化器的状态（动量缓冲区，或 Adam 的移动平均值），所以恢复后的"
                      "各步与原来的不同。请保存 `optimizer.state_dict()`，并用 "
                      "`optimizer.load_state_dict(...)` 加载它。")
        self.fail(1, english + "give everything in the file back before training: `model.load_state_dict`, "
                  "`optimizer.load_state_dict` and `loader.load_state_dict`, each with the state saved after "
                  "the same step.",
                  chinese + "请在训练之前恢复文件中的一切：`model.load_state_dict`、`optimizer.load_state_dict`"
                  " 和 `loader.load_state_dict`，所用的状态都应是同一步之后保存的。")

    # ----------------------------------------------------------------------- 7.2

    def exercise_2(self, run_until_preempted):
        """``run_until_preempted(train_step, save, steps)``: SIGTERM during a step (one in the
        middle of the run, one during the last step), then a run without a signal."""
        chance = _chance()
        original = signal.getsignal(signal.SIGTERM)
        try:
            steps = chance.randint(3, 9)
            self._preempted(run_until_preempted, steps, chance.randint(1, steps - 1), chance)
            steps = chance.randint(2, 9)
            self._preempted(run_until_preempted, steps, steps, chance)
            self._not_preempted(run_until_preempted, chance.randint(2, 9), chance)
        finally:
            # None: a handler installed outside Python, which Python cannot put back; the
            # default action is the nearest to it, and better than the check's own handler.
            signal.signal(signal.SIGTERM, signal.SIG_DFL if original is None else original)
        self.passed(2, "the step under way finishes, one save follows, and the previous handler is back.",
                    "正在进行的这一步完成了，随后保存了一次，之前的信号处理函数也恢复了。")

    def _run(self, run_until_preempted, steps, signal_at, chance):
        """Run the learner's function with the check's safety handler installed; returns what
        happened and what it returned."""
        log = _Signals(signal_at)
        safety = log.safety_handler  # one bound method: each access makes a new one
        signal.signal(signal.SIGTERM, safety)
        returned = self.call(2, run_until_preempted, lambda: log.train_step(chance), log.save, steps)
        log.restored = signal.getsignal(signal.SIGTERM) is safety
        return log, returned

    def _preempted(self, run_until_preempted, steps, signal_at, chance):
        log, returned = self._run(run_until_preempted, steps, signal_at, chance)
        k = signal_at
        if log.default_action:
            self.fail(2, f"`SIGTERM` arrived during step {k} and found no handler of yours: Python's default "
                      "action would have ended the process (here, the notebook's kernel) at once, without "
                      "saving; the check's own handler caught it. Install yours with "
                      "`signal.signal(signal.SIGTERM, handler)` before the first step.",
                      f"`SIGTERM` 在第 {k} 步之中到达，却没有找到你的信号处理函数：Python 的默认处理会立即结束"
                      "进程（在这里就是 notebook 的内核），什么都来不及保存；是检查单元格自己的处理函数接住了它。"
                      "请在第一步之前用 `signal.signal(signal.SIGTERM, handler)` 安装你的处理函数。")
        if log.ignored:
            self.fail(2, f"`SIGTERM` arrived during step {k} and was ignored (`SIG_IGN`): the job never saves, "
                      "and the scheduler kills it with `SIGKILL` when the grace period ends. Install a handler "
                      "that records the request.",
                      f"`SIGTERM` 在第 {k} 步之中到达，却被忽略了（`SIG_IGN`）：任务永远不会保存，宽限期一过，"
                      "调度器就用 `SIGKILL` 把它杀掉。请安装一个记下这个请求的信号处理函数。")
        if log.saves and log.saves[0][0]:
            self.fail(2, f"`save()` was called in the middle of step {k}, from the handler: Python runs a "
                      "handler between any two bytecodes, for example halfway through `optimizer.step()` "
                      "(some parameters updated, others not) or while `torch.save` is writing, so what it "
                      "saves may be a state that training never had. Let the handler only record the "
                      "request, and call `save()` once the step is done.",
                      f"`save()` 在第 {k} 步的中间被调用了，是在信号处理函数里调用的：Python 会在任意两条字节码"
                      "指令之间运行处理函数，例如正处在 `optimizer.step()` 的中间（一部分参数已经更新，另一部分还没有），或者"
                      "正处在 `torch.save` 写入的过程中，所以这时保存的可能是训练从未有过的状态。请让处理函数"
                      "只记下这个请求，等这一步完成之后再调用 `save()`。")
        if log.raised is not None:
            error = type(log.raised).__name__
            self.fail(2, f"your handler raised {error} in the middle of step {k}: an exception (`sys.exit` "
                      "raises `SystemExit`) stops the step wherever it happens to be, for example after "
                      "`backward()` but before `optimizer.step()`, and skips the saving. Let the handler "
                      "only record the request; finish the step, save, then return.",
                      f"你的信号处理函数在第 {k} 步的中间抛出了 {error}：异常（`sys.exit` 会抛出 "
                      "`SystemExit`）会让这一步停在任意位置，例如 `backward()` 之后、`optimizer.step()` "
                      "之前，而且跳过了保存。请让处理函数只记下这个请求；完成这一步，保存，然后返回。")
        last = self.say(" (the signal came during the last step: check for the request after every step, "
                        "the last one included)", "（信号是在最后一步之中到达的：每一步之后都要检查这个请求，"
                        "最后一步也不例外）") if k == steps else ""
        if log.started > k:
            self.fail(2, f"`SIGTERM` arrived during step {k}, and it went on to step {log.started}: stop after "
                      "the step under way, since the scheduler kills the job a few seconds after `SIGTERM`.",
                      f"`SIGTERM` 在第 {k} 步之中到达，它却继续训练到了第 {log.started} 步：请在正在进行的这一步"
                      "之后停止，因为调度器在发出 `SIGTERM` 几秒之后就会杀掉任务。")
        if not log.saves:
            self.fail(2, f"`SIGTERM` arrived during step {k}, and `save()` was never called{last}.",
                      f"`SIGTERM` 在第 {k} 步之中到达，但 `save()` 一次也没有被调用{last}。")
        if len(log.saves) > 1:
            self.fail(2, f"`save()` was called {len(log.saves)} times after `SIGTERM`; call it once.",
                      f"`SIGTERM` 之后 `save()` 被调用了 {len(log.saves)} 次；只应调用一次。")
        if not _is_count(returned, k):
            self.fail(2, f"it returned {returned!r}; when `SIGTERM` arrives during step {k}, return {k}, the "
                      "number of steps done.",
                      f"它返回了 {returned!r}；`SIGTERM` 在第 {k} 步之中到达时，应当返回已经完成的步数 {k}。")
        self._check_restored(log)

    def _not_preempted(self, run_until_preempted, steps, chance):
        log, returned = self._run(run_until_preempted, steps, None, chance)
        if log.started != steps or log.saves or not _is_count(returned, steps):
            self.fail(2, f"with no signal, it should do all {steps} steps and return {steps} without "
                      f"saving; it did {log.started} steps, called `save()` {len(log.saves)} times and "
                      f"returned {returned!r}.",
                      f"没有信号时，它应当完成全部 {steps} 步并返回 {steps}，不保存；它却做了 {log.started} 步，"
                      f"调用了 {len(log.saves)} 次 `save()`，并返回了 {returned!r}。")
        self._check_restored(log)

    def _check_restored(self, log):
        if not log.restored:
            handler = signal.getsignal(signal.SIGTERM)
            name = handler.name if isinstance(handler, signal.Handlers) else getattr(handler, "__name__", repr(handler))
            self.fail(2, f"when it returned, the handler of `SIGTERM` was `{name}`, not the one installed before "
                      "the call: keep what `signal.signal` returns and put it back in a `finally:` block, so "
                      "that the rest of the program handles `SIGTERM` as before.",
                      f"它返回时，`SIGTERM` 的处理函数是 `{name}`，而不是调用之前安装的那个：请保存 "
                      "`signal.signal` 的返回值，并在 `finally:` 块中把它装回去，让程序的其余部分像之前"
                      "一样处理 `SIGTERM`。")

    # ----------------------------------------------------------------------- 7.3

    def exercise_3(self, save_keeping_best):
        """``save_keeping_best(folder, state, keep)``: after every save the folder holds exactly
        the latest checkpoint and the ``keep`` most accurate ones; a save that fails halfway
        leaves it as it was."""
        chance = _chance()
        keep, count = chance.randint(1, 3), chance.randint(5, 9)
        states = _keeping_states(chance, count, keep)
        failing_at = chance.randint(keep, count - 1)
        with _folder() as folder:
            for index, state in enumerate(states):
                if index == failing_at:
                    self._failing_save(save_keeping_best, folder, states[:index], keep, state["step"])
                self.call(3, save_keeping_best, folder, _copy(state), keep)
                self._check_folder(folder, states[:index + 1], keep)
        self.passed(3, "after every save the folder holds the latest checkpoint and the best ones, each "
                    "complete; a failed save changes nothing.",
                    "每次保存之后，目录中都是最新的检查点和最佳的检查点，每个都是完整的；失败的保存不改变任何东西。")

    def _check_folder(self, folder, saved, keep):
        """Fail unless ``folder`` holds exactly the checkpoints to keep among the states
        ``saved`` (in the order saved), each holding its state."""
        state = saved[-1]
        expected, found = _kept(saved, keep), {path.name for path in folder.iterdir()}
        new = _checkpoint_name(state["step"])
        if expected != found:
            only_latest = new not in {_checkpoint_name(s["step"]) for s in _best(saved, keep)}
            if new not in found and only_latest and not found - expected:
                self.fail(3, f"after saving step {state['step']}, the folder lacks {new}, the latest checkpoint: "
                          "keep it whatever its accuracy, since it is the one to resume from.",
                          f"保存第 {state['step']} 步之后，目录中没有最新的检查点 {new}：无论它的准确率如何都要"
                          "保留它，因为恢复训练要从它开始。")
            if new not in found:
                self.fail(3, f"after saving step {state['step']}, the folder has no {new}: save the state as "
                          "`folder / f\"step-{step:06d}.pt\"` (the step in 6 digits).",
                          f"保存第 {state['step']} 步之后，目录中没有 {new}：请把状态保存为 "
                          "`folder / f\"step-{step:06d}.pt\"`（步数写成 6 位数字）。")
            self.fail(3, f"after saving step {state['step']} with keep={keep}, the folder should hold "
                      f"{sorted(expected)} (the latest checkpoint and the {keep} of highest accuracy), "
                      f"but it holds {sorted(found)}.",
                      f"以 keep={keep} 保存第 {state['step']} 步之后，目录中应当是 {sorted(expected)}"
                      f"（最新的检查点和准确率最高的 {keep} 个），实际却是 {sorted(found)}。")
        by_name = {_checkpoint_name(s["step"]): s for s in saved}
        for name in sorted(expected):
            self._check_file(folder / name, by_name[name])

    def _check_file(self, path, state):
        try:
            with _quiet():
                loaded = _load(path, weights_only=True)
        except Exception as error:
            self.fail(3, f"{path.name} does not load with `torch.load(..., weights_only=True)` "
                      f"({type(error).__name__}): save the state dict with `torch.save`.",
                      f"{path.name} 无法用 `torch.load(..., weights_only=True)` 加载"
                      f"（{type(error).__name__}）：请用 `torch.save` 保存这个状态字典。")
        if not (isinstance(loaded, Mapping) and loaded.keys() == state.keys()
                and _is_count(loaded["step"], state["step"]) and loaded["accuracy"] == state["accuracy"]
                and _same_tensors(loaded["model"], state["model"])):
            self.fail(3, f"{path.name} does not hold the state saved at step {state['step']}: save `state` "
                      "as it is.",
                      f"{path.name} 中不是第 {state['step']} 步保存的状态：请原样保存 `state`。")

    def _failing_save(self, save_keeping_best, folder, saved, keep, step):
        """Save a state of ``step``, the most accurate yet, whose ``torch.save`` fails halfway
        (the same step is then saved again, as a job that goes on would); fail unless ``folder``
        is left exactly as it was."""
        before = _contents(folder)
        accuracy = max(state["accuracy"] for state in saved) + 0.01
        tensors = {name: torch.zeros_like(tensor) for name, tensor in saved[-1]["model"].items()}
        state = {"step": step, "accuracy": accuracy, "model": tensors, "extra": _Unpicklable()}
        new = _checkpoint_name(step)
        try:
            with _quiet():
                save_keeping_best(folder, state, keep)
        except Exception:  # the save failed: what matters is what it left behind
            pass
        after = _contents(folder)
        english = f"a save of step {step} failed halfway (a value in the state cannot be pickled), and "
        chinese = f"第 {step} 步的保存中途失败了（状态中有一个无法用 pickle 序列化的值），"
        if new in after:
            self.fail(3, english + f"a half-written {new} was left in the folder: a crash leaves the same. "
                      "Write to a temporary file and rename it once complete, for example with "
                      "`saveload_lessons.files.atomic_write`.",
                      chinese + f"目录中留下了一个写了一半的 {new}：程序崩溃时也会留下同样的文件。请先写入"
                      "临时文件，写完后再重命名，例如使用 `saveload_lessons.files.atomic_write`。")
        deleted = sorted(before.keys() - after.keys())
        if deleted:
            self.fail(3, english + f"{deleted} had already been deleted: delete old checkpoints only once "
                      "the new file is complete.",
                      chinese + f"而 {deleted} 已经被删除了：请等新文件完整写好之后，再删除旧的检查点。")
        left = sorted(after.keys() - before.keys())
        if left:
            self.fail(3, english + f"it left {left} in the folder: remove the temporary file when the save "
                      "fails (`atomic_write` does).",
                      chinese + f"目录中留下了 {left}：保存失败时请删除临时文件（`atomic_write` 会这样做）。")
        changed = sorted(name for name in before if before[name] != after[name])
        if changed:
            self.fail(3, english + f"{changed} changed: a failed save must leave the folder as it was.",
                      chinese + f"{changed} 被改动了：失败的保存必须让目录保持原样。")
