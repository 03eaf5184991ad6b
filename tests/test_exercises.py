"""The lessons' exercises and their checks, both ways, and the student edition.

The exercise sections run here in this process, cell by cell, as a learner
would after a kernel restart: with the solutions every check passes; in the
student edition every check says, in the notebook's language, that the
exercise is not done yet. Wrong answers get the message meant for them, also
when what they save or return is of the wrong kind; every run of a check
hands the answer new inputs, so an answer written for one case fails; and an
answer that replaces torch.load or torch.equal does not fool a check.
"""

import contextlib
import datetime
import functools
import io
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import nbformat
import pytest
import torch

from conftest import REPO
from saveload_lessons import LANGUAGES, distributed_checkpoints, exercise_checks
from tools import build_notebooks

LESSONS = build_notebooks.all_lessons()
CASES = [(lesson, language) for lesson in LESSONS for language in LANGUAGES]
CHINESE = re.compile(r"[\u4e00-\u9fff]")


def case_id(case):
    return f"{case[0].name[:2]}-{case[1]}"


def exercise_section(lesson, language, student=False):
    """The code cells of the lesson's exercise section, as its notebook (or student
    edition) has them: from the cell that calls exercise_checks.for_lesson to the end."""
    nb = build_notebooks.make_notebook(lesson, language)
    if student:
        nb = build_notebooks.student_notebook(nb, language)
    code = [cell.source for cell in nb.cells if cell.cell_type == "code"]
    start = next(i for i, source in enumerate(code) if "exercise_checks.for_lesson(" in source)
    return code[start:]


def run_cells(cells, tmp_path, monkeypatch):
    """Execute ``cells`` in one fresh namespace; ``[(source, printed, exception or None)]``."""
    monkeypatch.chdir(tmp_path)
    namespace, results = {"__name__": "__main__"}, []
    for source in cells:
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                exec(compile(source, "<cell>", "exec"), namespace)
            results.append((source, printed.getvalue(), None))
        except Exception as err:
            results.append((source, printed.getvalue(), err))
    return results


def label(language, lesson, number):
    """How a check's message starts, in each language (with the language's own colon)."""
    return f"练习 {lesson}.{number}：" if language == "zh-CN" else f"Exercise {lesson}.{number}: "


def is_check(source):
    return build_notebooks.EXERCISE_CHECK.search(source) is not None


def test_every_lesson_has_checks_for_its_exercises():
    for lesson in LESSONS:
        cells = exercise_section(lesson, "en")
        called = sorted(int(n) for source in cells for n in build_notebooks.EXERCISE_CHECK.findall(source))
        assert called == exercise_checks.exercise_numbers(lesson.number), lesson.name
        assert f"for_lesson({lesson.number}," in cells[0]


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_the_solutions_pass_their_checks(case, tmp_path, monkeypatch):
    lesson, language = case
    results = run_cells(exercise_section(lesson, language), tmp_path, monkeypatch)
    failures = [(source, error) for source, _, error in results if error is not None]
    assert failures == []
    passed = [printed for source, printed, _ in results if is_check(source)]
    assert len(passed) == len(exercise_checks.exercise_numbers(lesson.number))
    for number, printed in enumerate(passed, start=1):
        assert printed.startswith(f"✓ {label(language, lesson.number, number)}")
        assert bool(CHINESE.search(printed)) == (language == "zh-CN"), printed


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_the_student_edition_checks_say_not_done_in_the_notebooks_language(case, tmp_path, monkeypatch):
    lesson, language = case
    results = run_cells(exercise_section(lesson, language, student=True), tmp_path, monkeypatch)
    checks = [(source, error) for source, _, error in results if is_check(source)]
    others = [(source, error) for source, _, error in results if not is_check(source)]
    assert [error for _, error in others if error is not None] == [], \
        "only the check cells may fail in the student edition"
    assert len(checks) == len(exercise_checks.exercise_numbers(lesson.number))
    for number, (_, error) in enumerate(checks, start=1):
        assert isinstance(error, exercise_checks.ExerciseFailed), error
        assert error.not_done
        message = str(error)
        assert message.startswith(label(language, lesson.number, number))
        assert "raise NotImplementedError()" in message
        assert bool(CHINESE.search(message)) == (language == "zh-CN"), message
        assert error._render_traceback_() == ["✗ " + message]


# --------------------------------------------------------------------------- wrong answers

def _save_whole_model(model, path):
    torch.save(model, path)


def _live_state_dict(model):
    return model.state_dict()


def _save_without_optimizer(path, model, optimizer, epoch):
    torch.save({"epoch": epoch, "model_state_dict": model.state_dict(),
                "optimizer_state_dict": {"state": {}, "param_groups": []}}, path)


def _resume_unsafely(path, model, optimizer):
    checkpoint = torch.load(path, weights_only=False)
    model.load_state_dict(checkpoint["model_state_dict"])
    optimizer.load_state_dict(checkpoint["optimizer_state_dict"])
    return checkpoint["epoch"]


def _resume_model_only(path, model, optimizer):
    checkpoint = torch.load(path, weights_only=True)
    model.load_state_dict(checkpoint["model_state_dict"])
    return checkpoint["epoch"]


def _train_from_scratch_every_time(model, optimizer, batches, epochs, path):
    for epoch in range(epochs):
        for inputs, targets in batches:
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(inputs), targets).backward()
            optimizer.step()
        torch.save({"epoch": epoch + 1, "model_state_dict": model.state_dict(),
                    "optimizer_state_dict": optimizer.state_dict()}, path)


def _allow_for_good(path):
    torch.serialization.add_safe_globals([datetime.date, datetime.timedelta])
    return torch.load(path, weights_only=True)


def _save_without_metadata(model, path):
    import safetensors.torch

    safetensors.torch.save_file(model.state_dict(), path)


def _strip_module_only(model, state_dict):
    model.load_state_dict({key.removeprefix("module."): value for key, value in state_dict.items()},
                          strict=False)


def _load_everything_loosely(model, state_dict):
    model.load_state_dict({k: v for k, v in state_dict.items() if not k.startswith("output")},
                          strict=False)


def _newest_by_name(root):
    folders = sorted(root.glob("step-*"))
    return folders[-1] if folders else None


def _plain_dcp_load(model, folder):
    import torch.distributed.checkpoint as dcp

    state_dict = {"model": model.state_dict()}
    dcp.load(state_dict, checkpoint_id=folder, no_dist=True)


WRONG_ANSWERS = [
    (1, 1, _save_whole_model, "refuses the file: it holds Python objects"),
    (1, 2, _live_state_dict, "the snapshot changed when the model's weights changed"),
    (2, 1, _save_without_optimizer, "has no momentum buffers"),
    (2, 2, _resume_unsafely, "ran the code planted in a hostile file"),
    (2, 2, _resume_model_only, "momentum buffers were not restored"),
    (2, 3, _train_from_scratch_every_time, "resume from the file and train only the epochs left"),
    (3, 1, _allow_for_good, "the allowlist outlived the load"),
    (3, 2, _save_without_metadata, "the metadata needs an entry \"architecture\""),
    (4, 1, _strip_module_only, "with the prefix '_orig_mod."),  # or '_orig_mod.module.': the order varies
    (4, 2, _load_everything_loosely, "it returned None"),
    (5, 1, _newest_by_name, "has no .metadata: its save was interrupted"),
    (5, 2, _plain_dcp_load, "plain `dcp.load` unpickles `.metadata` without any restriction"),
]


@pytest.mark.parametrize("lesson, number, answer, message", WRONG_ANSWERS,
                         ids=[f"{lesson}.{number}-{answer.__name__}" for lesson, number, answer, _ in WRONG_ANSWERS])
def test_a_wrong_answer_gets_the_message_meant_for_it(lesson, number, answer, message, capsys):
    allowed = set(torch.serialization.get_safe_globals())
    with pytest.raises(exercise_checks.ExerciseFailed) as info:
        getattr(exercise_checks.for_lesson(lesson), f"exercise_{number}")(answer)
    assert not info.value.not_done
    assert message in str(info.value)
    assert set(torch.serialization.get_safe_globals()) == allowed, "a check must undo an answer's allowlist"


def test_an_error_in_the_learners_code_keeps_its_traceback(capsys):
    def save_weights(model, path):
        return model.no_such_method(path)

    with pytest.raises(AttributeError, match="no_such_method"):
        exercise_checks.for_lesson(1, "zh-CN").exercise_1(save_weights)
    assert "✗ 练习 1.1：`save_weights` 抛出了错误" in capsys.readouterr().out


def test_a_check_needs_a_function_and_a_known_language_and_lesson():
    with pytest.raises(exercise_checks.ExerciseFailed, match="expected your function, got 3"):
        exercise_checks.for_lesson(1).exercise_1(3)
    with pytest.raises(ValueError, match="language must be one of"):
        exercise_checks.for_lesson(1, language="fr")
    numbers = [lesson.number for lesson in LESSONS]
    with pytest.raises(ValueError, match=re.escape(f"there are exercises for lessons {numbers}, not 0")):
        exercise_checks.for_lesson(0)


# --------------------------------------------------------------------------- new inputs on every run

def _hard_coded_newest(root):
    return Path(root) / "step-000020" if any(Path(root).iterdir()) else None


def _save_epoch_one(path, model, optimizer, epoch):
    torch.save({"epoch": 1, "model_state_dict": model.state_dict(),
                "optimizer_state_dict": optimizer.state_dict()}, path)


def _resume_safely(path, model, optimizer):
    checkpoint = torch.load(path, weights_only=True)
    model.load_state_dict(checkpoint["model_state_dict"])
    optimizer.load_state_dict(checkpoint["optimizer_state_dict"])
    return checkpoint["epoch"]


def _resume_returning_one(path, model, optimizer):
    _resume_safely(path, model, optimizer)
    return 1


def _one_epoch(model, optimizer, batches):
    for inputs, targets in batches:
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(inputs), targets).backward()
        optimizer.step()


def _train_to_epoch_three(model, optimizer, batches, epochs, path):
    done = _resume_safely(path, model, optimizer) if Path(path).exists() else 0
    for epoch in range(done, 3):
        _one_epoch(model, optimizer, batches)
        torch.save({"epoch": epoch + 1, "model_state_dict": model.state_dict(),
                    "optimizer_state_dict": optimizer.state_dict()}, path)


HARD_CODED = [
    (2, 1, _save_epoch_one, r"`epoch` is 1, not the value passed in \(the int \d+\)"),
    (2, 2, _resume_returning_one, r"it returned 1; return the epoch stored in the checkpoint \(\d+\)"),
    (2, 3, _train_to_epoch_three, r"\d epochs from scratch do not give|the file says epoch 3, not 1"),
    (5, 1, _hard_coded_newest, r"it returned .*step-000020.*; the newest complete step folder is step-\d{6}"),
]


@pytest.mark.parametrize("lesson, number, answer, pattern", HARD_CODED,
                         ids=[f"{lesson}.{number}-{answer.__name__}"
                              for lesson, number, answer, _ in HARD_CODED])
def test_an_answer_written_for_one_case_fails(lesson, number, answer, pattern, capsys):
    with pytest.raises(exercise_checks.ExerciseFailed, match=pattern) as info:
        getattr(exercise_checks.for_lesson(lesson), f"exercise_{number}")(answer)
    assert not info.value.not_done


@functools.cache
def reference_answers(lesson_number):
    """``{exercise number: function}``: the lesson's solutions, defined as its notebook defines them."""
    lesson = next(lesson for lesson in LESSONS if lesson.number == lesson_number)
    namespace, answers = {"__name__": "__main__"}, {}
    for source in exercise_section(lesson, "en"):
        call = re.fullmatch(r"check\.exercise_(\d+)\((\w+)\)", source.strip())
        if call:
            answers[int(call[1])] = namespace[call[2]]
        else:
            exec(compile(source, "<cell>", "exec"), namespace)
    return answers


def fingerprint(value):
    """A comparable summary of what a check hands an answer: the names, shapes and sums of
    tensors, file names and what folders hold (a temporary folder's own name aside)."""
    if isinstance(value, torch.nn.Module):
        return fingerprint(value.state_dict())
    if isinstance(value, Mapping):
        return tuple((key, fingerprint(item)) for key, item in value.items())
    if isinstance(value, list | tuple):
        return tuple(fingerprint(item) for item in value)
    if isinstance(value, torch.Tensor):
        return tuple(value.shape), value.sum().item()
    if isinstance(value, Path):
        return tuple(sorted(p.name for p in value.iterdir())) if value.is_dir() else value.name
    return repr(value)


def run_recording(lesson, number, record, language="en"):
    """Run the check of exercise ``lesson.number`` on its solution, calling ``record(args)``
    with the arguments of every call the check makes."""
    answer = reference_answers(lesson)[number]

    def recording(*args):
        record(args)
        return answer(*args)

    getattr(exercise_checks.for_lesson(lesson, language), f"exercise_{number}")(recording)


EXERCISES = [(lesson.number, number) for lesson in LESSONS
             for number in exercise_checks.exercise_numbers(lesson.number)]


@pytest.mark.parametrize("lesson, number", EXERCISES,
                         ids=[f"{lesson}.{number}" for lesson, number in EXERCISES])
def test_every_run_of_a_check_hands_the_answer_new_inputs(lesson, number, capsys):
    runs = [[], []]
    for seen in runs:
        run_recording(lesson, number, lambda args, seen=seen: seen.append(fingerprint(args)))
    assert runs[0] != runs[1]


def test_the_step_folders_of_exercise_5_1_change_from_run_to_run(capsys):
    runs = [set(), set()]
    for steps in runs:
        run_recording(5, 1, lambda args, steps=steps: steps.update(
            distributed_checkpoints.folder_step(p) for p in Path(args[0]).iterdir()))
    assert runs[0] - {None} and runs[1] - {None}
    assert runs[0] != runs[1]


def test_a_message_quotes_the_values_of_its_own_run():
    seen = {}

    def newest_by_name(root):
        folders = sorted(p for p in Path(root).iterdir()
                         if distributed_checkpoints.folder_step(p) is not None)
        seen["complete"] = [p.name for p in folders if distributed_checkpoints.is_complete(p)]
        return folders[-1] if folders else None

    with pytest.raises(exercise_checks.ExerciseFailed) as info:
        exercise_checks.for_lesson(5, "zh-CN").exercise_1(newest_by_name)
    assert f"最新的完整步骤目录是 {seen['complete'][-1]}" in str(info.value)

    def save_epoch_one(path, model, optimizer, epoch):
        seen["epoch"] = epoch
        _save_epoch_one(path, model, optimizer, epoch)

    with pytest.raises(exercise_checks.ExerciseFailed) as info:
        exercise_checks.for_lesson(2).exercise_1(save_epoch_one)
    assert f"not the value passed in (the int {seen['epoch']})" in str(info.value)


# --------------------------------------------------------------------------- answers that replace torch

def test_an_answer_that_replaces_torch_load_does_not_fool_the_check(monkeypatch):
    def save_weights(model, path):
        torch.save(model, path)  # the whole model, which weights_only=True refuses
        monkeypatch.setattr(torch, "load", lambda *args, **kwargs: model.state_dict())

    with pytest.raises(exercise_checks.ExerciseFailed, match="refuses the file: it holds Python objects"):
        exercise_checks.for_lesson(1).exercise_1(save_weights)


def test_an_answer_that_replaces_torch_equal_does_not_fool_the_check(monkeypatch):
    def snapshot(model):
        monkeypatch.setattr(torch, "equal", lambda a, b: True)
        return model.state_dict()

    with pytest.raises(exercise_checks.ExerciseFailed,
                       match="the snapshot changed when the model's weights changed"):
        exercise_checks.for_lesson(1).exercise_2(snapshot)


# --------------------------------------------------------------------------- saved or returned, of the wrong kind

def _train_saving_objects(model, optimizer, batches, epochs, path):
    done = 0
    if Path(path).exists():
        checkpoint = torch.load(path, weights_only=False)
        model.load_state_dict(checkpoint["model"].state_dict())
        optimizer.load_state_dict(checkpoint["optimizer"].state_dict())
        done = checkpoint["epoch"]
    for epoch in range(done, epochs):
        _one_epoch(model, optimizer, batches)
        torch.save({"epoch": epoch + 1, "model": model, "optimizer": optimizer}, path)


def _train_saving_a_list(model, optimizer, batches, epochs, path):
    done = 0
    if Path(path).exists():
        done, model_state, optimizer_state = torch.load(path, weights_only=True)
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optimizer_state)
    for epoch in range(done, epochs):
        _one_epoch(model, optimizer, batches)
        torch.save([epoch + 1, model.state_dict(), optimizer.state_dict()], path)


def _write_text(model, path):
    path.write_text("the weights")


def _snapshot_as_lists(model):
    return {name: tensor.tolist() for name, tensor in model.state_dict().items()}


def _save_weights_as_a_list(path, model, optimizer, epoch):
    torch.save({"epoch": epoch, "model_state_dict": list(model.state_dict().values()),
                "optimizer_state_dict": optimizer.state_dict()}, path)


def _save_epoch_as_a_tensor(path, model, optimizer, epoch):
    torch.save({"epoch": torch.tensor(epoch), "model_state_dict": model.state_dict(),
                "optimizer_state_dict": optimizer.state_dict()}, path)


def _load_weights_as_a_list(path):
    with torch.serialization.safe_globals([datetime.date, datetime.timedelta]):
        loaded = torch.load(path, weights_only=True)
    return {**loaded, "weights": loaded["weights"].tolist()}


def _save_nothing(model, path):
    pass


def _count_skipped(model, state_dict):
    own = model.state_dict()
    matching = {k: v for k, v in state_dict.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(matching, strict=False)
    return len(state_dict) - len(matching)


def _newest_step_number(root):
    steps = [distributed_checkpoints.folder_step(p) for p in Path(root).iterdir()
             if distributed_checkpoints.is_complete(p)]
    return max((step for step in steps if step is not None), default=None)


WRONG_KINDS = [
    (1, 1, _write_text, "`torch.load` cannot read the file", "`torch.load` 无法读取这个文件"),
    (1, 2, _snapshot_as_lists, "return the model's state dict (names → tensors)", "请返回模型的状态字典"),
    (2, 1, _save_weights_as_a_list, "`model_state_dict` is not `model.state_dict()`",
     "`model_state_dict` 不是 `model.state_dict()`"),
    (2, 1, _save_epoch_as_a_tensor, "`epoch` is tensor(", "`epoch` 是 tensor("),
    (2, 3, _train_saving_objects, "`torch.load(..., weights_only=True)` refuses the file", "拒绝加载这个文件"),
    (2, 3, _train_saving_a_list, "the file holds a list, not a general checkpoint",
     "文件中保存的是 list，而不是通用检查点"),
    (3, 1, _load_weights_as_a_list, "return what the file holds", "请返回文件中保存的内容"),
    (3, 2, _save_nothing, "no file was written at the path", "没有在传给它的路径"),
    (4, 2, _count_skipped, "return the sorted names it skipped", "请返回按名字排序的、被跳过的键"),
    (5, 1, _newest_step_number, "the newest complete step folder is", "最新的完整步骤目录是"),
]


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("lesson, number, answer, english, chinese", WRONG_KINDS,
                         ids=[f"{lesson}.{number}-{answer.__name__}"
                              for lesson, number, answer, *_ in WRONG_KINDS])
def test_something_of_the_wrong_kind_gets_a_message_in_the_notebooks_language(
        lesson, number, answer, english, chinese, language, capsys):
    with pytest.raises(exercise_checks.ExerciseFailed) as info:
        getattr(exercise_checks.for_lesson(lesson, language), f"exercise_{number}")(answer)
    message = str(info.value)
    assert message.startswith(label(language, lesson, number))
    assert (chinese if language == "zh-CN" else english) in message
    assert bool(CHINESE.search(message)) == (language == "zh-CN"), message


# --------------------------------------------------------------------------- the student edition

STUDENT_PATHS = sorted((REPO / "student").glob("*/*.ipynb"))


@pytest.mark.parametrize("path", STUDENT_PATHS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_a_student_notebook_is_the_notebook_without_solutions_and_outputs(path):
    student = nbformat.read(path, as_version=4)
    main = nbformat.read(REPO / "notebooks" / path.parent.name / path.name, as_version=4)
    assert len(student.cells) == len(main.cells)
    stubs = 0
    for mine, theirs in zip(student.cells, main.cells):
        assert mine.cell_type == theirs.cell_type
        if mine.cell_type == "code":
            assert mine.outputs == [] and mine.execution_count is None
            assert mine.metadata.get("tags", []) == theirs.metadata.get("tags", [])
        if build_notebooks.BEGIN_SOLUTION in theirs.source:
            assert build_notebooks.BEGIN_SOLUTION not in mine.source
            assert mine.source.splitlines()[-2:] == ["    # YOUR CODE HERE", "    raise NotImplementedError()"]
            assert mine.source.splitlines()[0] == theirs.source.splitlines()[0]  # the same def line
            stubs += 1
        else:
            assert mine.source == theirs.source
    assert stubs == len(exercise_checks.exercise_numbers(int(path.name[:2])))


def test_a_solution_region_that_does_not_pair_up_is_refused():
    for source, message in [("### BEGIN SOLUTION\nx = 1", "without '### END SOLUTION'"),
                            ("x = 1\n### END SOLUTION", "without '### BEGIN SOLUTION'"),
                            ("### BEGIN SOLUTION\n### BEGIN SOLUTION", "a second")]:
        with pytest.raises(build_notebooks.LessonError, match=message):
            build_notebooks.student_code(source)


def test_the_stub_keeps_the_indentation_and_the_code_around_it():
    source = "def f(x):\n    y = x\n    ### BEGIN SOLUTION\n    return y\n    ### END SOLUTION\n"
    assert build_notebooks.student_code(source) == \
        "def f(x):\n    y = x\n    # YOUR CODE HERE\n    raise NotImplementedError()"
    assert build_notebooks.student_code(source, "zh-CN") == \
        "def f(x):\n    y = x\n    # 在这里写你的代码，运行这个单元格，再运行它后面的检查单元格。\n" \
        "    # YOUR CODE HERE\n    raise NotImplementedError()"



def test_a_check_run_before_its_function_says_what_to_do_in_the_notebooks_language():
    """In Jupyter, the NameError of a check cell run too early is followed by a line that says
    what to do, in the notebook's language (a fresh IPython shell in a child process)."""
    script = ("from IPython.core.interactiveshell import InteractiveShell\n"
              "shell = InteractiveShell.instance()\n"
              "shell.run_cell('from saveload_lessons import exercise_checks\\n"
              "check = exercise_checks.for_lesson(1, language=\"zh-CN\")')\n"
              "result = shell.run_cell('check.exercise_1(save_weights)')\n"
              "print('failed:', not result.success)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert "NameError" in done.stdout and "failed: True" in done.stdout, done.stdout + done.stderr
    assert "`save_weights` 还没有定义：请先运行定义它的单元格" in done.stdout


def test_a_stub_called_by_the_learners_function_is_the_one_named():
    """The lesson's own solution of exercise 2.3, with ``resume`` (exercise 2.2) still a stub."""
    train_with_checkpoints = reference_answers(2)[3]

    def resume(path, model, optimizer):
        raise NotImplementedError()

    train_with_checkpoints.__globals__["resume"] = resume  # the namespace its cells ran in
    for language, expected in (("en", "write the body of `resume` (`train_with_checkpoints` calls it)"),
                               ("zh-CN", "把 `resume`（`train_with_checkpoints` 调用了它）中的")):
        with pytest.raises(exercise_checks.ExerciseFailed, match=re.escape(expected)) as info:
            exercise_checks.for_lesson(2, language).exercise_3(train_with_checkpoints)
        assert info.value.not_done
