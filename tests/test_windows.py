"""Windows, simulated on any machine: lesson 5's kill while saving.

Windows has no ``signal.SIGKILL``. There ``os.kill`` with any signal but the two
console events ends the process with ``TerminateProcess`` (immediate, and no
handler runs), so ``fsdp_training`` sends ``SIGTERM`` instead. These tests take
``SIGKILL`` away from the ``signal`` module and record ``os.kill`` rather than
letting it kill the test process.
"""

import os
import signal

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

from saveload_lessons import fsdp_training


class Killed(Exception):
    """What the recording ``os.kill`` raises: a real kill would never return."""


@pytest.fixture
def recorded_kills(monkeypatch):
    kills = []

    def kill(pid, sig):
        kills.append((pid, sig))
        raise Killed

    monkeypatch.setattr(os, "kill", kill)
    return kills


def test_kill_signal_is_sigkill_where_it_exists():
    if not hasattr(signal, "SIGKILL"):
        pytest.skip("this platform has no SIGKILL (Windows)")
    assert fsdp_training.kill_signal() is signal.SIGKILL


def test_kill_signal_on_windows_is_sigterm(monkeypatch):
    monkeypatch.delattr(signal, "SIGKILL", raising=False)
    assert fsdp_training.kill_signal() is signal.SIGTERM


@pytest.mark.parametrize("windows", [False, True], ids=["posix", "windows"])
def test_killed_while_saving_kills_its_own_process(windows, recorded_kills, monkeypatch, tmp_path,
                                                   capsys):
    if windows:
        monkeypatch.delattr(signal, "SIGKILL", raising=False)
    elif not hasattr(signal, "SIGKILL"):
        pytest.skip("this platform has no SIGKILL (Windows)")
    expected = signal.SIGTERM if windows else signal.SIGKILL
    monkeypatch.setattr(fsdp_training.dist, "get_rank", lambda *args, **kwargs: 0)
    folder = tmp_path / "step-000020"
    with pytest.raises((Killed, CheckpointException)):  # DCP wraps a rank's exception
        dcp.save({"weight": torch.arange(6.0)}, storage_writer=fsdp_training._KilledWhileSaving(folder),
                 no_dist=True)
    assert recorded_kills == [(os.getpid(), expected)]
    # The shards are written, the checkpoint is not complete: no .metadata.
    assert sorted(path.name for path in folder.iterdir()) == ["__0_0.distcp"]
    assert f"then was killed ({expected.name}) before the checkpoint was complete" in capsys.readouterr().out
