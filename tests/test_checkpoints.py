"""Checkpoint files: atomic saving, safe loading with clear errors, exact resume."""

import errno
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch import nn, optim

import fc_model
from conftest import load_checkpoint
from saveload_lessons import checkpoint_io
from saveload_lessons.files import atomic_write

WORKER = pathlib.Path(__file__).with_name("resume_worker.py")


def assert_same(a, b, where="state"):
    """Bit-for-bit equality of nested dicts, lists and tensors."""
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for index, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{index}]")
    else:
        assert a == b, where


@pytest.fixture
def trained(tmp_path):
    """A small network and its Adam optimizer after one step, and a general checkpoint of them."""
    torch.manual_seed(0)
    model = fc_model.Network(784, 10, [32, 16])
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    loss = nn.NLLLoss()(model(torch.randn(8, 784)), torch.randint(0, 10, (8,)))
    loss.backward()
    optimizer.step()
    path = tmp_path / "checkpoint.pt"
    checkpoint_io.save_checkpoint(path, model, optimizer, epoch=1, step=1, loss=loss.item())
    return model, optimizer, path


# --------------------------------------------------------------------------- saving

def test_general_checkpoint_round_trip(trained):
    model, optimizer, path = trained
    checkpoint = checkpoint_io.load_checkpoint(path, fc_model.NETWORK)
    assert checkpoint["format"] == fc_model.NETWORK.checkpoint_format
    assert checkpoint["architecture"] == model.architecture
    assert (checkpoint["epoch"], checkpoint["step"]) == (1, 1)
    assert isinstance(checkpoint["loss"], float)
    assert_same(checkpoint["model_state_dict"], model.state_dict())
    assert_same(checkpoint["optimizer_state_dict"], optimizer.state_dict())

    torch.manual_seed(123)
    generator_at_save = torch.get_rng_state()
    checkpoint_io.save_checkpoint(path, model, optimizer)
    torch.manual_seed(0)
    assert torch.equal(checkpoint_io.load_checkpoint(path, fc_model.NETWORK)["rng"]["cpu"], generator_at_save)

    fresh = fc_model.Network(784, 10, [32, 16])
    fresh_optimizer = optim.Adam(fresh.parameters(), lr=0.01)
    checkpoint_io.restore(checkpoint, fresh, fresh_optimizer)
    assert_same(fresh.state_dict(), model.state_dict())
    assert_same(fresh_optimizer.state_dict(), optimizer.state_dict())


def test_load_network_rebuilds_in_eval_mode(trained):
    model, _, path = trained
    loaded = fc_model.load_network(path)
    assert not loaded.training
    x = torch.randn(4, 784)
    assert torch.equal(loaded(x), model.eval()(x))


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "file.bin"
    target.write_bytes(b"good")
    with pytest.raises(ZeroDivisionError):
        with atomic_write(target) as file:
            file.write(b"half of the new content")
            1 / 0  # noqa: B018 (fail in the middle of a write)
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]
    with atomic_write(target) as file:
        file.write(b"new")
    assert target.read_bytes() == b"new"
    assert oct(target.stat().st_mode & 0o777) == "0o644"


@pytest.mark.parametrize("name", ["c" * 247 + ".pt", "检查点" * 27 + ".pt"],
                         ids=["250 characters", "246 bytes of Chinese"])
def test_a_long_file_name_can_be_saved(tmp_path, trained, name):
    """The temporary file's name is built from the file's, which may take up the 255 bytes
    a file name may have: it is cut short."""
    model, optimizer, _ = trained
    checkpoint_io.save_checkpoint(tmp_path / name, model, optimizer)
    assert checkpoint_io.load_checkpoint(tmp_path / name, fc_model.NETWORK)["architecture"] == model.architecture


def test_a_folder_that_cannot_be_opened_does_not_fail_a_save(tmp_path, trained, monkeypatch):
    """As on Windows, where opening a folder raises PermissionError: the file is replaced and
    its data on disk by then, so syncing the folder is left out."""
    model, optimizer, _ = trained
    real_open = os.open

    def open_no_folder(path, flags, *args, **kwargs):
        if os.path.isdir(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_no_folder)
    checkpoint_io.save_checkpoint(tmp_path / "saved.pt", model, optimizer)
    monkeypatch.undo()
    assert_same(checkpoint_io.load_checkpoint(tmp_path / "saved.pt", fc_model.NETWORK)["model_state_dict"],
                model.state_dict())


# --------------------------------------------------------------------------- other kinds

def test_classic_course_checkpoint_loads(tmp_path, trained):
    model, _, _ = trained
    path = tmp_path / "classic.pth"
    torch.save({"input_size": 784, "output_size": 10, "hidden_layers": [32, 16],
                "state_dict": model.state_dict()}, path)
    checkpoint = checkpoint_io.load_checkpoint(path, fc_model.NETWORK)
    assert checkpoint["architecture"] == {"input_size": 784, "output_size": 10,
                                          "hidden_layers": [32, 16], "drop_p": 0.5}
    assert checkpoint["optimizer_state_dict"] is None
    x = torch.randn(2, 784)
    assert torch.equal(fc_model.load_network(path)(x), model.eval()(x))


def test_bare_state_dict_loads_with_sizes_read_off_the_weights(tmp_path, trained):
    model, optimizer, _ = trained
    path = tmp_path / "weights.pth"
    torch.save(model.state_dict(), path)
    loaded = fc_model.load_network(path)
    assert loaded.architecture["hidden_layers"] == [32, 16]
    # but training cannot resume from it: there is no optimizer state
    with pytest.raises(checkpoint_io.CheckpointError, match="no optimizer state"):
        checkpoint_io.restore(checkpoint_io.load_checkpoint(path, fc_model.NETWORK), model, optimizer)


@pytest.mark.parametrize("wrap, prefix", [
    (nn.DataParallel, "module."),
    (lambda model: torch.compile(model, backend="eager"), "_orig_mod."),
], ids=["DataParallel", "compile"])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_wrappers_prefix_is_named_with_the_fix(tmp_path, trained, wrap, prefix, suffix):
    model, _, _ = trained
    state_dict = wrap(model).state_dict()
    path = tmp_path / f"wrapped{suffix}"
    save = torch.save if suffix == ".pth" else (lambda tensors, p: _write_safetensors(p, tensors, None))
    save(state_dict, path)
    with pytest.raises(checkpoint_io.CheckpointError,
                       match=rf"keys start with '{prefix}'.*consume_prefix_in_state_dict_if_present"):
        fc_model.load_network(path)

    # the advice works
    state_dict = dict(state_dict)
    torch.nn.modules.utils.consume_prefix_in_state_dict_if_present(state_dict, prefix)
    save(state_dict, path)
    assert_same(fc_model.load_network(path).state_dict(), model.state_dict())


def test_no_prefix_advice_for_keys_without_one(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"module.weight": torch.ones(2), "bias": torch.ones(2)}, path)
    with pytest.raises(checkpoint_io.CheckpointError) as info:
        fc_model.load_network(path)
    assert "consume_prefix" not in str(info.value)


# --------------------------------------------------------------------------- bad files

def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _random_bytes(path):
    path.write_bytes(random.Random(0).randbytes(path.stat().st_size))


def _empty(path):
    path.write_bytes(b"")


@pytest.mark.parametrize("damage", [_truncate, _random_bytes, _empty])
def test_damaged_files_get_a_clear_error(trained, damage):
    _, _, path = trained
    damage(path)
    with pytest.raises(checkpoint_io.CheckpointError) as info:
        checkpoint_io.load_checkpoint(path, fc_model.NETWORK)
    message = str(info.value)
    assert str(path) in message
    assert "is not a complete PyTorch checkpoint: it is truncated, damaged" in message


def test_missing_file(tmp_path):
    with pytest.raises(checkpoint_io.CheckpointError, match="no such checkpoint file"):
        fc_model.load_network(tmp_path / "nowhere.pt")


@pytest.mark.parametrize("content, message", [
    ({"weights": torch.zeros(3)}, "dict with keys \\['weights'\\]"),
    ([torch.zeros(3)], "holds a list"),
    ({"format": "other/9", "x": 1}, "has format 'other/9'"),
    ({"format": fc_model.NETWORK.checkpoint_format}, "incomplete checkpoint"),
])
def test_foreign_content_is_named(tmp_path, content, message):
    path = tmp_path / "foreign.pt"
    torch.save(content, path)
    with pytest.raises(checkpoint_io.CheckpointError, match=message):
        checkpoint_io.load_checkpoint(path, fc_model.NETWORK)


class Payload:
    """Unpickling this would create a marker file: the stand-in for malicious code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("loader", [load_checkpoint, fc_model.load_network])
def test_a_planted_payload_is_refused_and_never_runs(tmp_path, trained, loader):
    model, _, _ = trained
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": model.state_dict(), "extra": Payload(marker)}, path)
    assert not marker.exists()
    with pytest.raises(checkpoint_io.CheckpointError, match=r"refused \(found builtins.exec\)"):
        loader(path)
    assert not marker.exists()


def test_wrong_architecture_is_explained_and_changes_nothing(trained):
    _, _, path = trained
    other = fc_model.Network(784, 10, [64, 16])
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(checkpoint_io.CheckpointError, match=r"saved from a model with .*\[32, 16\]"):
        checkpoint_io.restore(checkpoint_io.load_checkpoint(path, fc_model.NETWORK), other)
    assert_same(other.state_dict(), before)


def test_optimizer_that_does_not_fit(trained):
    model, _, path = trained
    sgd_on_part = optim.SGD(list(model.parameters())[:2], lr=0.1)
    with pytest.raises(checkpoint_io.CheckpointError, match="optimizer state does not fit"):
        checkpoint_io.restore(checkpoint_io.load_checkpoint(path, fc_model.NETWORK), model, sgd_on_part)


def test_resume_from_a_file_without_training_state_is_refused_and_changes_nothing(trained):
    model, optimizer, path = trained  # saved by save_checkpoint with epoch and step only
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(checkpoint_io.CheckpointError, match="holds no training state"):
        fc_model.train(model, [], [(torch.zeros(1, 784), torch.zeros(1, dtype=torch.long))],
                       nn.NLLLoss(), optimizer, checkpoint_path=path, resume=True)
    assert_same(model.state_dict(), before)


def test_training_state_goes_into_a_checkpoint_and_comes_back(tmp_path, trained):
    model, optimizer, _ = trained
    state = fc_model.TrainingState(epoch=2, batch=5, step=99, loss=0.25, running_loss=1.5,
                                   best_accuracy=0.8, history=[{"step": 40}],
                                   epoch_start_rng=checkpoint_io.rng_state())
    path = tmp_path / "state.pt"
    checkpoint_io.save_checkpoint(path, model, optimizer, **state.to_checkpoint())
    loaded = fc_model.TrainingState.from_checkpoint(checkpoint_io.load_checkpoint(path, fc_model.NETWORK), path)
    assert_same(loaded.to_checkpoint(), state.to_checkpoint())


def test_resume_needs_a_checkpoint_path():
    model = fc_model.Network(784, 10, [8])
    with pytest.raises(ValueError, match="need a checkpoint_path"):
        fc_model.train(model, [], [], nn.NLLLoss(), optim.SGD(model.parameters(), lr=0.1),
                       resume=True)


# --------------------------------------------------------------------------- safetensors

def test_safetensors_round_trip_rebuilds_from_metadata(tmp_path, trained):
    model, _, _ = trained
    path = tmp_path / "model.safetensors"
    checkpoint_io.save_safetensors(path, model)
    checkpoint = checkpoint_io.load_checkpoint(path, fc_model.NETWORK)
    assert checkpoint["architecture"] == model.architecture
    assert checkpoint["optimizer_state_dict"] is None
    loaded = fc_model.load_network(path)
    assert loaded.architecture == model.architecture and not loaded.training
    x = torch.randn(3, 784)
    assert torch.equal(loaded(x), model.eval()(x))


def test_safetensors_of_a_bare_state_dict_loads_with_sizes_read_off_the_weights(tmp_path, trained):
    model, _, _ = trained
    path = tmp_path / "weights.safetensors"
    _write_safetensors(path, model.state_dict(), None)
    assert fc_model.load_network(path).architecture == model.architecture


def _write_safetensors(path, tensors, metadata):
    import safetensors.torch
    safetensors.torch.save_file(tensors, str(path), metadata=metadata)


@pytest.mark.parametrize("tensors, metadata, message", [
    ({"weights": torch.zeros(3)}, None, r"no fc_model.Network architecture in its metadata \(found \[\]\)"),
    (None, {"format": fc_model.NETWORK.safetensors_format, "architecture": "{not json"},
     "unreadable architecture metadata"),
    (None, {"format": fc_model.NETWORK.safetensors_format,
            "architecture": '{"input_size": 784, "output_size": 10, "hidden_layers": [99, 16]}'},
     "its tensors do not match its architecture"),
])
def test_safetensors_with_wrong_metadata(tmp_path, trained, tensors, metadata, message):
    model, _, _ = trained
    path = tmp_path / "model.safetensors"
    _write_safetensors(path, model.state_dict() if tensors is None else tensors, metadata)
    with pytest.raises(checkpoint_io.CheckpointError, match=message):
        fc_model.load_network(path)


@pytest.mark.parametrize("damage", [_truncate, _random_bytes, _empty])
@pytest.mark.parametrize("loader", [load_checkpoint, fc_model.load_network])
def test_damaged_safetensors_get_a_clear_error(tmp_path, trained, damage, loader):
    model, _, _ = trained
    path = tmp_path / "model.safetensors"
    checkpoint_io.save_safetensors(path, model)
    damage(path)
    with pytest.raises(checkpoint_io.CheckpointError, match="truncated, damaged") as info:
        loader(path)
    assert str(path) in str(info.value)


def test_whole_pickled_model_is_refused_by_every_loader(tmp_path, trained):
    model, _, _ = trained
    path = tmp_path / "whole.pth"
    torch.save(model, path)
    for loader in (load_checkpoint, fc_model.load_network):
        with pytest.raises(checkpoint_io.CheckpointError, match=r"refused \(found .*fc_model.Network"):
            loader(path)


# --------------------------------------------------------------------------- resuming

def run_worker(data_dir, checkpoint, output, epochs=3, *extra):
    return subprocess.run(
        [sys.executable, "-u", str(WORKER), "--data-dir", str(data_dir),
         "--checkpoint", str(checkpoint), "--output", str(output), "--epochs", str(epochs),
         *extra], check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_dir):
    """Final state of a 3-epoch run that was never stopped."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    run_worker(data_dir, folder / "checkpoint.pt", folder / "final.pt")
    return torch.load(folder / "final.pt", weights_only=True)


def test_resume_in_a_new_process_is_bit_identical(uninterrupted, data_dir, tmp_path):
    run_worker(data_dir, tmp_path / "checkpoint.pt", tmp_path / "part.pt", 1)
    assert checkpoint_io.load_checkpoint(tmp_path / "checkpoint.pt", fc_model.NETWORK)["epoch"] == 1
    resumed = run_worker(data_dir, tmp_path / "checkpoint.pt", tmp_path / "final.pt", 3)
    assert "Epoch: 1/3" not in resumed.stdout and "Epoch: 2/3" in resumed.stdout
    final = torch.load(tmp_path / "final.pt", weights_only=True)
    assert_same(final, uninterrupted)  # weights, optimizer state and the whole history


def test_training_killed_at_random_moments_resumes_exactly(uninterrupted, data_dir, tmp_path):
    """SIGKILL the run over and over, during steps and during saves; it must always recover."""
    rng = random.Random(1234)
    checkpoint, output = tmp_path / "checkpoint.pt", tmp_path / "final.pt"
    command = [sys.executable, "-u", str(WORKER), "--data-dir", str(data_dir),
               "--checkpoint", str(checkpoint), "--output", str(output),
               "--checkpoint-every", "3", "--slow-save"]
    kills = {"during a save": 0, "between saves": 0}
    for attempt in range(8):
        during_save = attempt % 2 == 0
        steps_to_wait = rng.randint(1, 12)
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        for line in process.stdout:
            if during_save and line.startswith("saving"):
                time.sleep(rng.uniform(0.0, 0.15))  # a save takes about 0.16 s here
                break
            if not during_save and line.startswith("Epoch:"):
                steps_to_wait -= 1
                if steps_to_wait == 0:
                    break
        else:
            pytest.fail(f"the run finished before kill {attempt + 1}")
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stdout.close()
        kills["during a save" if during_save else "between saves"] += 1
        if checkpoint.exists():  # the last good checkpoint must always load
            checkpoint_io.load_checkpoint(checkpoint, fc_model.NETWORK)

    # the kills during a save hit a write in progress: its temporary file is left behind
    assert list(tmp_path.glob(".checkpoint.pt.*.part"))
    subprocess.run(command, check=True, capture_output=True)
    print(f"survived {sum(kills.values())} kills: {kills}")
    assert kills == {"during a save": 4, "between saves": 4}
    assert_same(torch.load(output, weights_only=True), uninterrupted)
