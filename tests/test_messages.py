"""The language of the companion package's messages (``saveload_lessons.messages``)."""

import subprocess
import sys

import pytest

from saveload_lessons import checkpoint_io, launching, messages


@pytest.fixture
def chinese():
    """Messages in Chinese for one test, English again afterwards."""
    messages.set_language("zh-CN")
    yield
    messages.set_language("en")


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
