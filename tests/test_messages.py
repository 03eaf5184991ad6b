"""The language of the companion package's messages (``saveload_lessons.messages``)."""

import subprocess
import sys

import nbformat
import papermill
import pytest

import fc_model
from saveload_lessons import checkpoint_io, devices, launching, messages


def test_say_picks_the_language_set():
    assert messages.say("saved", "已保存") == "saved"
    messages.set_language("zh-CN")
    try:
        assert messages.say("saved", "已保存") == "已保存"
    finally:
        messages.set_language("en")


def test_an_unknown_language_is_refused():
    with pytest.raises(ValueError, match=r"language must be one of \('en', 'zh-CN'\), got 'fr'"):
        messages.set_language("fr")
    assert messages.language() == "en"


def test_a_refusal_that_a_lesson_shows_is_in_the_notebooks_language(tmp_path, chinese):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(checkpoint_io.CheckpointError, match="不是完整的 PyTorch 检查点：它被截断了"):
        checkpoint_io.load_torch_file(path, "cpu")


def test_processes_started_with_torchrun_inherit_the_language(monkeypatch, chinese):
    seen = {}

    def run(command, **kwargs):
        seen.update(kwargs["env"])
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(launching.subprocess, "run", run)
    launching.torchrun("saveload_lessons.fsdp_training", ["train"])
    assert seen[messages.ENVIRONMENT_VARIABLE] == "zh-CN"


def test_a_new_process_starts_in_the_language_of_the_environment():
    script = "from saveload_lessons import messages; print(messages.language())"
    for value, expected in (("zh-CN", "zh-CN"), ("fr", "en"), ("", "en")):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              env={"PATH": "", messages.ENVIRONMENT_VARIABLE: value})
        assert done.stdout.strip() == expected, done.stderr


# --------------------------------------------------------------------------- the lessons' early checks

def test_the_value_checks_of_the_first_cells_follow_the_notebooks_language(chinese):
    """What the cell after a lesson's parameters can show, after messages.set_language."""
    with pytest.raises(ValueError, match="^epochs 必须是正整数，实际为 0$"):
        fc_model.check_positive_int(epochs=0)
    with pytest.raises(ValueError, match=r"^未知的设备 'tpu'：请使用 \[.*'cpu'\] 中的一个（本机可用的设备）$"):
        devices.get_device("tpu")
    with pytest.raises(ValueError, match="^device 必须是 'auto' 或 'cpu' 这样的字符串，实际为 0$"):
        devices.get_device(0)
    missing = next(kind for kind in ("cuda", "mps") if kind not in devices.available_devices())
    with pytest.raises(ValueError, match=f"^本机没有设备 '{missing}'；可用的设备：.*map_location='cpu'"):
        devices.get_device(missing)


def test_the_value_checks_speak_english_by_default():
    with pytest.raises(ValueError, match="^epochs must be a positive integer, got 0$"):
        fc_model.check_positive_int(epochs=0)
    with pytest.raises(ValueError, match="^unknown device 'tpu': use one of"):
        devices.get_device("tpu")


ZH_CASES = [  # (lesson, parameters, environment, the start of the Chinese message)
    (1, {"device": "tpu"}, {}, "未知的设备 'tpu'：请使用"),
    (3, {"epochs": 0}, {}, "epochs 必须是正整数，实际为 0"),
    (4, {"data_dir": "{tmp}/empty"}, {"FASHION_MNIST_SOURCE": "{tmp}/no-copy"},
     "Fashion-MNIST 的源目录 {tmp}/no-copy 不存在"),
]


@pytest.mark.parametrize("number, parameters, environment, message", ZH_CASES,
                         ids=[f"{case[0]}-{next(iter(case[1]))}" for case in ZH_CASES])
def test_a_chinese_notebook_stops_early_in_chinese(number, parameters, environment, message,
                                                   tmp_path, monkeypatch):
    """The Chinese notebook made from the lesson's source (as the build makes it), run with a
    wrong value: its first checks already speak Chinese, because the cell after the parameters
    sets the language before them (a lesson rule); no folder is left behind."""
    from tools import build_notebooks, run_notebooks
    from tools.project import LESSONS

    lesson = build_notebooks.load_lesson(next(LESSONS.glob(f"{number:02d}-*.py")))
    path = tmp_path / f"{lesson.name}.ipynb"
    nbformat.write(build_notebooks.make_notebook(lesson, "zh-CN"), path)
    for name, value in environment.items():
        monkeypatch.setenv(name, value.format(tmp=tmp_path))
    parameters = {name: value.format(tmp=tmp_path) if isinstance(value, str) else value
                  for name, value in parameters.items()}
    with pytest.raises(papermill.PapermillExecutionError) as info:
        run_notebooks.run_notebook(path, tmp_path / "out", parameters)
    assert info.value.evalue.startswith(message.format(tmp=tmp_path)), info.value.evalue
    assert not (tmp_path / "empty").exists()
