"""The checks of lesson 7's exercises, on their solutions (the lesson's own, as its notebook
defines them) and on the wrong answers they are meant to catch, written out here.

7.1 resumes training in the middle of an epoch with a ``StatefulDataLoader``; 7.2 handles
``SIGTERM`` (the check sends it from inside a step and protects this process with a handler of
its own); 7.3 keeps the latest and the best K checkpoints, and survives a save that fails.
"""

import os
import re
import signal
import sys
from pathlib import Path

import pytest
import torch
from test_exercises import reference_answers
from torch import nn

from saveload_lessons import LANGUAGES, exercise_checks
from saveload_lessons.files import atomic_write

CHINESE = re.compile(r"[\u4e00-\u9fff]")


def _step(model, optimizer, inputs, targets):
    optimizer.zero_grad()
    nn.functional.mse_loss(model(inputs), targets).backward()
    optimizer.step()


# --------------------------------------------------------------------------- 7.1

def _resume(path, model, optimizer, loader=None):
    """The step in the file at ``path`` (0 if none), after loading what it holds."""
    if not Path(path).exists():
        return 0
    checkpoint = torch.load(path, weights_only=True)
    model.load_state_dict(checkpoint["model"])
    if "optimizer" in checkpoint:
        optimizer.load_state_dict(checkpoint["optimizer"])
    if loader is not None and "loader" in checkpoint:
        loader.load_state_dict(checkpoint["loader"])
    return checkpoint["step"]


def _train_without_loader_state(model, optimizer, loader, steps, path):
    step = _resume(path, model, optimizer)
    while step < steps:
        for inputs, targets in loader:
            _step(model, optimizer, inputs, targets)
            step += 1
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}, path)
            if step == steps:
                return


def _train_without_optimizer_state(model, optimizer, loader, steps, path):
    step = _resume(path, model, optimizer, loader)
    while step < steps:
        for inputs, targets in loader:
            _step(model, optimizer, inputs, targets)
            step += 1
            torch.save({"model": model.state_dict(), "loader": loader.state_dict(), "step": step}, path)
            if step == steps:
                return


def _train_saving_only_at_the_end(model, optimizer, loader, steps, path):
    step = _resume(path, model, optimizer, loader)
    while step < steps:
        for inputs, targets in loader:
            _step(model, optimizer, inputs, targets)
            step += 1
            if step == steps:
                break
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "loader": loader.state_dict(), "step": step}, path)


def _train_whole_epochs(model, optimizer, loader, steps, path):
    step = _resume(path, model, optimizer, loader)
    while step < steps:
        for inputs, targets in loader:
            _step(model, optimizer, inputs, targets)
            step += 1
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "loader": loader.state_dict(), "step": step}, path)


def _train_from_scratch_every_time(model, optimizer, loader, steps, path):
    step = 0
    while step < steps:
        for inputs, targets in loader:
            _step(model, optimizer, inputs, targets)
            step += 1
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "loader": loader.state_dict(), "step": step}, path)
            if step == steps:
                return


def _train_saving_objects(model, optimizer, loader, steps, path):
    step = 0
    if Path(path).exists():
        checkpoint = torch.load(path, weights_only=False)
        model.load_state_dict(checkpoint["model"].state_dict())
        optimizer.load_state_dict(checkpoint["optimizer"].state_dict())
        loader.load_state_dict(checkpoint["loader"])
        step = checkpoint["step"]
    while step < steps:
        for inputs, targets in loader:
            _step(model, optimizer, inputs, targets)
            step += 1
            torch.save({"model": model, "optimizer": optimizer, "loader": loader.state_dict(), "step": step}, path)
            if step == steps:
                return


def _train_saving_nothing(model, optimizer, loader, steps, path):
    step = 0
    while step < steps:
        for inputs, targets in loader:
            _step(model, optimizer, inputs, targets)
            step += 1
            if step == steps:
                return


def _train_without_zero_grad(model, optimizer, loader, steps, path):
    step = _resume(path, model, optimizer, loader)
    while step < steps:
        for inputs, targets in loader:
            nn.functional.mse_loss(model(inputs), targets).backward()
            optimizer.step()
            step += 1
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "loader": loader.state_dict(), "step": step}, path)
            if step == steps:
                return


def _train_without_loading_the_model(model, optimizer, loader, steps, path):
    step = 0
    if Path(path).exists():
        checkpoint = torch.load(path, weights_only=True)
        optimizer.load_state_dict(checkpoint["optimizer"])
        loader.load_state_dict(checkpoint["loader"])
        step = checkpoint["step"]
    while step < steps:
        for inputs, targets in loader:
            _step(model, optimizer, inputs, targets)
            step += 1
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "loader": loader.state_dict(), "step": step}, path)
            if step == steps:
                return


def _train_fast_forwarding(model, optimizer, loader, steps, path):
    """Saves no loader state: on resuming, it draws (and skips) the batches already trained on.
    The fresh loader shuffles as the first did, so this reproduces the same batches: correct,
    only slower."""
    step = _resume(path, model, optimizer)
    drawn = 0
    while step < steps:
        for inputs, targets in loader:
            drawn += 1
            if drawn <= step:
                continue
            _step(model, optimizer, inputs, targets)
            step += 1
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}, path)
            if step == steps:
                return


# --------------------------------------------------------------------------- 7.2

def _run_without_a_handler(train_step, save, steps):
    for _ in range(steps):
        train_step()
    return steps


def _save_in_the_handler(train_step, save, steps):
    stop = {"requested": False}

    def handler(signal_number, frame):
        save()
        stop["requested"] = True

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        for done in range(1, steps + 1):
            train_step()
            if stop["requested"]:
                return done
        return steps
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exit_in_the_handler(train_step, save, steps):
    def handler(signal_number, frame):
        sys.exit(0)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        for _ in range(steps):
            train_step()
        return steps
    finally:
        signal.signal(signal.SIGTERM, previous)


def _not_restoring_the_handler(train_step, save, steps):
    stop = {"requested": False}

    def handler(signal_number, frame):
        stop["requested"] = True

    signal.signal(signal.SIGTERM, handler)
    for done in range(1, steps + 1):
        train_step()
        if stop["requested"]:
            save()
            return done
    return steps


def _restoring_the_default(train_step, save, steps):
    stop = {"requested": False}

    def handler(signal_number, frame):
        stop["requested"] = True

    signal.signal(signal.SIGTERM, handler)
    try:
        for done in range(1, steps + 1):
            train_step()
            if stop["requested"]:
                save()
                return done
        return steps
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _check_before_each_step(train_step, save, steps):
    stop = {"requested": False}

    def handler(signal_number, frame):
        stop["requested"] = True

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        for done in range(steps):
            if stop["requested"]:
                save()
                return done
            train_step()
        return steps
    finally:
        signal.signal(signal.SIGTERM, previous)


def _save_at_the_end(train_step, save, steps):
    stop = {"requested": False}

    def handler(signal_number, frame):
        stop["requested"] = True

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        for _ in range(steps):
            train_step()
        if stop["requested"]:
            save()
        return steps
    finally:
        signal.signal(signal.SIGTERM, previous)


def _ignore_the_signal(train_step, save, steps):
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        for _ in range(steps):
            train_step()
        return steps
    finally:
        signal.signal(signal.SIGTERM, previous)


def _return_one_too_few(train_step, save, steps):
    stop = {"requested": False}

    def handler(signal_number, frame):
        stop["requested"] = True

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        for done in range(steps):
            train_step()
            if stop["requested"]:
                save()
                return done
        return steps
    finally:
        signal.signal(signal.SIGTERM, previous)


def _save_twice(train_step, save, steps):
    stop = {"requested": False}

    def handler(signal_number, frame):
        stop["requested"] = True

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        for done in range(1, steps + 1):
            train_step()
            if stop["requested"]:
                save()
                return done
        return steps
    finally:
        if stop["requested"]:
            save()
        signal.signal(signal.SIGTERM, previous)


def _handler_without_arguments(train_step, save, steps):
    stop = {"requested": False}

    def handler():
        stop["requested"] = True

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        for done in range(1, steps + 1):
            train_step()
            if stop["requested"]:
                save()
                return done
        return steps
    finally:
        signal.signal(signal.SIGTERM, previous)


# --------------------------------------------------------------------------- 7.3

def _prune(folder, states, keep, name=lambda step: f"step-{step:06d}.pt"):
    """Delete the files of ``states`` that are neither the latest nor among the ``keep`` best."""
    latest = max(states, key=lambda s: s["step"])
    best = sorted(states, key=lambda s: (-s["accuracy"], s["step"]))[:keep]
    kept = {latest["step"], *(s["step"] for s in best)}
    for state in states:
        if state["step"] not in kept:
            (Path(folder) / name(state["step"])).unlink()


def _saved_states(folder):
    return [torch.load(p, weights_only=True) for p in Path(folder).glob("step-*.pt")]


def _save_in_place(folder, state, keep):
    torch.save(state, Path(folder) / f"step-{state['step']:06d}.pt")
    _prune(folder, _saved_states(folder), keep)


def _prune_before_saving(folder, state, keep):
    others = _saved_states(folder)
    _prune(folder, [*others, {"step": state["step"], "accuracy": state["accuracy"]}], keep)
    with atomic_write(Path(folder) / f"step-{state['step']:06d}.pt") as file:
        torch.save(state, file)


def _keep_only_the_best(folder, state, keep):
    with atomic_write(Path(folder) / f"step-{state['step']:06d}.pt") as file:
        torch.save(state, file)
    states = sorted(_saved_states(folder), key=lambda s: (-s["accuracy"], s["step"]))
    for old in states[keep:]:
        (Path(folder) / f"step-{old['step']:06d}.pt").unlink()


def _keep_k_in_all(folder, state, keep):
    with atomic_write(Path(folder) / f"step-{state['step']:06d}.pt") as file:
        torch.save(state, file)
    states = _saved_states(folder)
    latest = max(states, key=lambda s: s["step"])
    best = sorted((s for s in states if s is not latest), key=lambda s: (-s["accuracy"], s["step"]))
    for old in best[keep - 1:]:
        (Path(folder) / f"step-{old['step']:06d}.pt").unlink()


def _leave_the_temporary_file(folder, state, keep):
    path = Path(folder) / f"step-{state['step']:06d}.pt"
    temporary = path.with_name(path.name + ".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)
    _prune(folder, _saved_states(folder), keep)


def _name_without_padding(folder, state, keep):
    with atomic_write(Path(folder) / f"step-{state['step']}.pt") as file:
        torch.save(state, file)
    _prune(folder, _saved_states(folder), keep, name=lambda step: f"step-{step}.pt")


# --------------------------------------------------------------------------- the tests

SOLUTIONS = sorted(reference_answers(7).items())


@pytest.fixture(autouse=True)
def sigterm_handler_is_kept():
    """Every check puts back the SIGTERM handler it found, whatever the answer did."""
    before = signal.getsignal(signal.SIGTERM)
    yield
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("number, answer", [*SOLUTIONS, (1, _train_fast_forwarding)],
                         ids=["7.1", "7.2", "7.3", "7.1-fast-forwarding"])
def test_a_right_answer_passes(number, answer, language, capsys):
    getattr(exercise_checks.for_lesson(7, language), f"exercise_{number}")(answer)
    printed = capsys.readouterr().out
    assert printed.startswith("✓ " + ("练习" if language == "zh-CN" else "Exercise") + f" 7.{number}")
    assert bool(CHINESE.search(printed)) == (language == "zh-CN"), printed


WRONG_ANSWERS = [
    (1, _train_without_loader_state, "Save `loader.state_dict()`", "数据加载器读到的位置"),
    (1, _train_without_optimizer_state, "holds no optimizer state", "文件中没有优化器的状态"),
    (1, _train_saving_only_at_the_end, "Save after every step", "请在每一步之后都保存"),
    (1, _train_whole_epochs, "even in the middle of an epoch", "即使正处在一轮的中途"),
    (1, _train_from_scratch_every_time, "it started again from step 0", "它从第 0 步重新开始了"),
    (1, _train_saving_objects, "`torch.load(..., weights_only=True)` refuses the file", "拒绝加载这个文件"),
    (1, _train_saving_nothing, "no file was written", "没有在传给它的路径"),
    (1, _train_without_zero_grad, "from scratch does not give the weights", "从头训练"),
    (1, _train_without_loading_the_model, "give everything in the file back", "请在训练之前恢复文件中的一切"),
    (2, _run_without_a_handler, "default action would have ended the process", "默认处理会立即结束进程"),
    (2, _save_in_the_handler, "`save()` was called in the middle of step", "`save()` 在第"),
    (2, _exit_in_the_handler, "your handler raised SystemExit", "抛出了 SystemExit"),
    (2, _not_restoring_the_handler, "put it back in a `finally:` block", "在 `finally:` 块中把它装回去"),
    (2, _restoring_the_default, "the handler of `SIGTERM` was `SIG_DFL`", "处理函数是 `SIG_DFL`"),
    (2, _check_before_each_step, "the signal came during the last step", "信号是在最后一步之中到达的"),
    (2, _save_at_the_end, "and it went on to step", "它却继续训练到了第"),
    (2, _ignore_the_signal, "was ignored (`SIG_IGN`)", "却被忽略了"),
    (2, _return_one_too_few, "the number of steps done", "应当返回已经完成的步数"),
    (2, _save_twice, "`save()` was called 2 times", "`save()` 被调用了 2 次"),
    (2, _handler_without_arguments, "your handler raised TypeError", "抛出了 TypeError"),
    (3, _save_in_place, "a half-written step-", "写了一半的 step-"),
    (3, _prune_before_saving, "had already been deleted", "已经被删除了"),
    (3, _keep_only_the_best, "the latest checkpoint: keep it whatever its accuracy", "无论它的准确率如何都要保留它"),
    (3, _keep_k_in_all, "(the latest checkpoint and the", "（最新的检查点和准确率最高的"),
    (3, _leave_the_temporary_file, ".pt.tmp'] in the folder", ".pt.tmp']"),
    (3, _name_without_padding, "(the step in 6 digits)", "步数写成 6 位数字"),
]


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("number, answer, english, chinese", WRONG_ANSWERS,
                         ids=[f"7.{number}-{answer.__name__}" for number, answer, *_ in WRONG_ANSWERS])
def test_a_wrong_answer_gets_the_message_meant_for_it(number, answer, english, chinese, language, capsys):
    with pytest.raises(exercise_checks.ExerciseFailed) as info:
        getattr(exercise_checks.for_lesson(7, language), f"exercise_{number}")(answer)
    assert not info.value.not_done
    message = str(info.value)
    assert message.startswith("练习 7." if language == "zh-CN" else "Exercise 7.")
    assert (chinese if language == "zh-CN" else english) in message, message
    assert bool(CHINESE.search(message)) == (language == "zh-CN"), message


@pytest.mark.parametrize("number", [1, 2, 3])
def test_a_stub_is_not_done_yet_and_the_handler_is_put_back(number):
    def stub(*args):
        raise NotImplementedError()

    with pytest.raises(exercise_checks.ExerciseFailed) as info:
        getattr(exercise_checks.for_lesson(7), f"exercise_{number}")(stub)
    assert info.value.not_done


def test_an_error_in_the_learners_code_keeps_its_traceback_and_the_handler_is_put_back(capsys):
    def run_until_preempted(train_step, save, steps):
        signal.signal(signal.SIGTERM, lambda number, frame: None)
        return steps.no_such_attribute

    with pytest.raises(AttributeError, match="no_such_attribute"):
        exercise_checks.for_lesson(7).exercise_2(run_until_preempted)
    assert "✗ Exercise 7.2: `run_until_preempted` raised an error" in capsys.readouterr().out


def test_the_check_of_7_1_leaves_the_learners_random_numbers_alone(capsys):
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    exercise_checks.for_lesson(7).exercise_1(reference_answers(7)[1])
    assert torch.equal(torch.rand(4), expected)
