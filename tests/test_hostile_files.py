"""Malformed and hostile files: each class of bad input becomes a CheckpointError that names
the file, quickly, and nothing is half-loaded, widened or run.

The examples here are the classes a review found; ``test_fuzz.py`` looks for more.
"""

import os
import time

import pytest
import safetensors.torch
import torch
from torch import nn, optim

import checkpoint_io
import fc_model
from checkpoint_io import CheckpointError

LOADERS = [checkpoint_io.load_checkpoint, fc_model.load_network]


@pytest.fixture
def saved(tmp_path):
    """A small network and its Adam optimizer after one step, and a general checkpoint of them."""
    torch.manual_seed(0)
    model = fc_model.Network(784, 10, [32, 16])
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    nn.NLLLoss()(model(torch.randn(8, 784)), torch.randint(0, 10, (8,))).backward()
    optimizer.step()
    path = tmp_path / "checkpoint.pt"
    checkpoint_io.save_checkpoint(path, model, optimizer)
    return model, optimizer, path


def general(model, optimizer, **changes):
    """The dict ``save_checkpoint`` writes, with some entries changed."""
    checkpoint = {"format": checkpoint_io.CHECKPOINT_FORMAT, "architecture": model.architecture,
                  "model_state_dict": model.state_dict(),
                  "optimizer_state_dict": optimizer.state_dict(), "rng": checkpoint_io.rng_state()}
    checkpoint.update(changes)
    return checkpoint


def refused(path, loader, match, seconds=5):
    """Assert that ``loader(path)`` raises a CheckpointError matching ``match`` and naming
    the file, within ``seconds``; return the message."""
    start = time.monotonic()
    with pytest.raises(CheckpointError, match=match) as info:
        loader(path)
    assert time.monotonic() - start < seconds
    assert str(path) in str(info.value)
    return str(info.value)


# --------------------------------------------------------------------------- not checkpoints

@pytest.mark.parametrize("content", [b"just some text\n", b"epoch,loss\n1,0.5\n2,0.4\n",
                                     b"PK\x03\x04" + bytes(200), b"\x80", bytes(3)])
@pytest.mark.parametrize("loader", LOADERS)
def test_files_that_are_not_checkpoints(tmp_path, content, loader):
    path = tmp_path / "not-a-checkpoint.pt"
    path.write_bytes(content)
    refused(path, loader, "is not a complete PyTorch checkpoint")


@pytest.mark.parametrize("loader", LOADERS)
def test_a_folder_is_not_a_checkpoint(tmp_path, loader):
    refused(tmp_path, loader, "is not a regular file")


# --------------------------------------------------------------------------- wrong structure

def test_a_vector_where_a_weight_matrix_belongs(tmp_path, saved):
    model, _, _ = saved
    weights = dict(model.state_dict(), **{"hidden_layers.0.weight": torch.zeros(32)})
    path = tmp_path / "bare.pt"
    torch.save(weights, path)
    for loader in LOADERS:
        refused(path, loader, "are not the matrices of a Network")


@pytest.mark.parametrize("changes, match", [
    ({"model_state_dict": [1, 2]}, "its weights should be a dict from names to tensors"),
    ({"model_state_dict": None}, "its weights should be a dict from names to tensors"),
    ({"architecture": {}}, "input_size is missing; output_size is missing; hidden_layers is missing"),
    ({"architecture": {"input_size": 784, "output_size": 10, "hidden_layers": 32}},
     "hidden_layers should be a non-empty list of positive integers, got 32"),
    ({"architecture": {"input_size": 784, "output_size": float("inf"), "hidden_layers": [32, 16]}},
     "output_size should be a positive integer, got inf"),
    ({"architecture": {"input_size": 784, "output_size": 10, "hidden_layers": [32, 16],
                       "drop_p": float("nan")}}, "drop_p should be a probability"),
    ({"optimizer_state_dict": "adam"}, "its optimizer state should be an optimizer's state_dict"),
    ({"rng": {"cpu": torch.zeros(3)}}, "random-number-generator state is not one saved"),
])
@pytest.mark.parametrize("loader", LOADERS)
def test_right_container_wrong_structure(tmp_path, saved, changes, match, loader):
    model, optimizer, _ = saved
    path = tmp_path / "odd.pt"
    torch.save(general(model, optimizer, **changes), path)
    refused(path, loader, match)


@pytest.mark.parametrize("hidden", [[10**9], [20000, 20000, 20000], [32, 16, 8]])
@pytest.mark.parametrize("loader", LOADERS)
def test_absurd_sizes_are_checked_against_the_tensors_before_anything_is_built(
        tmp_path, saved, hidden, loader):
    model, optimizer, _ = saved
    architecture = dict(model.architecture, hidden_layers=hidden)
    path = tmp_path / "absurd.pt"
    torch.save(general(model, optimizer, architecture=architecture), path)
    refused(path, loader, "tensors|does not match its architecture", seconds=2)


def test_safetensors_metadata_nested_without_end(tmp_path, saved):
    model, _, _ = saved
    path = tmp_path / "deep.safetensors"
    safetensors.torch.save_file(model.state_dict(), str(path), metadata={
        "format": checkpoint_io.SAFETENSORS_FORMAT, "architecture": "[" * 100_000 + "]" * 100_000})
    for loader in LOADERS:
        refused(path, loader, "unreadable architecture metadata .* \\(RecursionError\\)")


def test_a_self_referencing_value_is_quoted_briefly(tmp_path, saved):
    model, optimizer, _ = saved
    value = []
    for _ in range(40):  # each level holds the one below twice: 2**40 paths to print in full
        value = [value, value]
    path = tmp_path / "nested.pt"
    torch.save({"format": value, "state_dict": model.state_dict()}, path)
    for loader in LOADERS:
        message = refused(path, loader, "has format", seconds=2)
        assert len(message) < 600


def test_a_training_state_of_the_wrong_type(tmp_path, saved):
    model, optimizer, _ = saved
    path = tmp_path / "state.pt"
    state = fc_model.TrainingState(epoch=1, step=20).to_checkpoint()
    checkpoint_io.save_checkpoint(path, model, optimizer, **dict(state, epoch="1", history=None))
    with pytest.raises(CheckpointError, match="unusable training state: epoch, history"):
        fc_model.TrainingState.from_checkpoint(checkpoint_io.load_checkpoint(path), path)


# --------------------------------------------------------------------------- nothing half-done

def snapshot(model, optimizer):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            {i: {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
             for i, s in optimizer.state_dict()["state"].items()})


def assert_unchanged(model, optimizer, before):
    weights, state = snapshot(model, optimizer)
    assert all(torch.equal(weights[k], before[0][k]) for k in weights)
    assert state.keys() == before[1].keys()
    for index in state:
        for key, value in state[index].items():
            assert torch.equal(value, before[1][index][key]) if torch.is_tensor(value) \
                else value == before[1][index][key]


def test_restore_checks_the_optimizer_before_touching_the_model(tmp_path, saved):
    model, optimizer, _ = saved
    other = fc_model.Network(784, 10, [32, 16])
    other_optimizer = optim.Adam(other.parameters(), lr=0.01)
    state = optimizer.state_dict()
    state["state"][0]["exp_avg"] = torch.zeros(5, 5)  # the wrong shape for parameter 0
    path = tmp_path / "bad-optimizer.pt"
    torch.save(general(model, optimizer, optimizer_state_dict=state), path)
    before = snapshot(other, other_optimizer)

    with pytest.raises(CheckpointError, match="exp_avg of parameter 0 has shape"):
        checkpoint_io.restore(checkpoint_io.load_checkpoint(path), other, other_optimizer, path)
    assert_unchanged(other, other_optimizer, before)


def test_resume_from_an_unusable_file_leaves_model_and_optimizer_as_they_were(tmp_path, saved):
    model, optimizer, _ = saved
    path = tmp_path / "resume.pt"
    state = fc_model.TrainingState(epoch=0, batch=5, step=5,
                                   epoch_start_rng=checkpoint_io.rng_state()).to_checkpoint()
    checkpoint_io.save_checkpoint(path, model, optimizer, **state)
    fresh = fc_model.Network(784, 10, [32, 16])
    fresh_optimizer = optim.Adam(fresh.parameters(), lr=0.01)
    before = snapshot(fresh, fresh_optimizer)
    batches = [(torch.zeros(2, 784), torch.zeros(2, dtype=torch.long))] * 3  # fewer than 5

    with pytest.raises(CheckpointError, match="stopped after batch 5 of an epoch, but the training "
                                              "data has 3 batches"):
        fc_model.train(fresh, batches, batches, nn.NLLLoss(), fresh_optimizer,
                       checkpoint_path=path, resume=True)
    assert_unchanged(fresh, fresh_optimizer, before)


# --------------------------------------------------------------------------- misleading diagnoses

class SystemCall:
    """Unpickling this would run a shell command that creates a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("loader", LOADERS)
def test_a_payload_calling_os_system_is_named_as_such_and_never_runs(tmp_path, saved, loader):
    model, _, _ = saved
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": model.state_dict(), "extra": SystemCall(marker)}, path)
    refused(path, loader, r"refused \(found (posix|nt)\.system\)")
    assert not marker.exists()


# --------------------------------------------------------------------------- permissions

def test_replacing_a_private_checkpoint_keeps_it_private(tmp_path, saved):
    model, optimizer, path = saved
    path.chmod(0o600)
    checkpoint_io.save_checkpoint(path, model, optimizer)
    checkpoint_io.save_safetensors(path.with_suffix(".safetensors"), model)
    assert oct(path.stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("umask, mode", [(0o077, "0o600"), (0o022, "0o644"), (0o002, "0o664")])
def test_a_new_file_honours_the_umask(tmp_path, saved, umask, mode):
    model, optimizer, _ = saved
    previous = os.umask(umask)
    try:
        checkpoint_io.save_checkpoint(tmp_path / "new.pt", model, optimizer)
    finally:
        os.umask(previous)
    assert oct((tmp_path / "new.pt").stat().st_mode & 0o777) == mode
