"""Malformed and hostile files: each class of bad input becomes a CheckpointError that names
the file, quickly, before anything is allocated to the size of a lie, and nothing is
half-loaded, widened or run.

The examples here are the classes a review found; ``test_fuzz.py`` looks for more, with the
crafting helpers defined here.
"""

import copy
import errno
import io
import json
import os
import pickle
import re
import stat
import struct
import subprocess
import sys
import tempfile
import time
import zipfile

import pytest
import safetensors.torch
import torch
from torch import nn, optim

import fc_model
from conftest import REPO, assert_identical, load_checkpoint
from saveload_lessons import checkpoint_io
from saveload_lessons.checkpoint_io import CheckpointError
from saveload_lessons.files import atomic_write

LOADERS = [load_checkpoint, fc_model.load_network]


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
    checkpoint = {"format": fc_model.NETWORK.checkpoint_format, "architecture": model.architecture,
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


# --------------------------------------------------------------------------- crafting files

PLACEHOLDER = "<crafted opcodes go here>"

# Tensors that pose as more than their file holds, made from a real tensor (same shape and
# dtype), with what the refusal says
HOSTILE_TENSORS = {
    "stride 0": (lambda t: torch.zeros(1, dtype=t.dtype).expand(t.shape),
                 "poses as .* but its storage holds"),
    "meta": (lambda t: torch.zeros(t.shape, dtype=t.dtype, device="meta"), "is on the meta device"),
    "sparse": (lambda t: torch.zeros(t.shape, dtype=t.dtype).to_sparse(), "is a sparse_coo tensor"),
}


def rewrite(path, change=lambda name, data: data, deflated=()):
    """Write the zip archive ``path`` again, each entry's bytes through ``change(name, data)``,
    the entries named in ``deflated`` compressed, the others stored."""
    with zipfile.ZipFile(path) as archive:
        entries = [(info.filename, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries:
            archive.writestr(name, change(name, data), compress_type=zipfile.ZIP_DEFLATED
                             if name in deflated else zipfile.ZIP_STORED)


def splice(path, opcodes):
    """Put pickle ``opcodes`` in the torch.save archive ``path`` where it pickled the string
    PLACEHOLDER: what they build takes its place, and nothing else changes."""
    encoded = PLACEHOLDER.encode()
    pickled = b"X" + struct.pack("<I", len(encoded)) + encoded  # BINUNICODE, as torch.save writes

    def change(name, data):
        if not name.endswith("/data.pkl"):
            return data
        assert data.count(pickled) == 1
        return data.replace(pickled, opcodes)

    rewrite(path, change)


def nested(depth, container):
    """Pickle opcodes that build ``depth`` containers ("tuple", "list" or "dict"), each inside
    the one before, without the recursion that pickling them would take."""
    if container == "tuple":
        return b")" + b"\x85" * depth  # EMPTY_TUPLE, then TUPLE1 around what is on top
    if container == "list":
        return b"]" * (depth + 1) + b"a" * depth  # EMPTY_LISTs, then APPEND each to the one below
    return b"}" + b"X\x01\x00\x00\x00k}" * depth + b"s" * depth  # dicts, each under the key "k"


def a_global(module, name):
    """Pickle opcodes that name the global ``module.name`` (GLOBAL)."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


LOAD_IN_A_CHILD = """
import json, resource, sys, time
import fc_model
from saveload_lessons import checkpoint_io

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

loader, map_location, *paths = sys.argv[1:]
before, results = peak_mb(), []
for path in paths:
    start = time.monotonic()
    try:
        if loader == "load_network":
            fc_model.load_network(path, map_location)
        else:
            checkpoint_io.load_checkpoint(path, fc_model.NETWORK, map_location)
        error = None
    except checkpoint_io.CheckpointError as err:
        error = str(err)
    results.append({"seconds": time.monotonic() - start, "error": error})
print(json.dumps({"results": results, "peak_growth_mb": peak_mb() - before}))
"""


def load_in_a_child(*paths, loader="load_checkpoint", map_location="cpu", timeout=60):
    """``loader(path, map_location)`` on each path in a child process, so that a crash or a
    hang fails the test instead of ending the test run: each load's seconds and error message
    (None if it loaded), and how much the child's peak memory grew (in MB) in all."""
    child = subprocess.run([sys.executable, "-c", LOAD_IN_A_CHILD, loader, map_location,
                            *map(str, paths)], cwd=REPO, capture_output=True, text=True,
                           timeout=timeout)
    assert child.returncode == 0, f"the child ended with {child.returncode}: {child.stderr[-3000:]}"
    return json.loads(child.stdout)


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


# --------------------------------------------------------------------------- small files, large costs

# The weights of a Network(20000, 10, [20000]): 1.6 GB
HUGE = {"hidden_layers.0.weight": (20000, 20000), "hidden_layers.0.bias": (20000,),
        "output.weight": (10, 20000), "output.bias": (10,)}


@pytest.mark.parametrize("kind", ["stride 0", "meta"])
@pytest.mark.parametrize("loader", LOADERS)
def test_a_few_kilobytes_of_weights_posing_as_1_6_gb_are_refused_before_a_model_is_built(
        tmp_path, monkeypatch, kind, loader):
    make, match = HOSTILE_TENSORS[kind]
    path = tmp_path / "huge.pth"
    torch.save({name: make(torch.empty(shape, device="meta")) for name, shape in HUGE.items()}, path)
    assert path.stat().st_size < 4096

    def no_building(**architecture):
        raise AssertionError(f"a Network was built for {architecture}")

    monkeypatch.setattr(fc_model, "Network", no_building)
    refused(path, loader, match)


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss counts kilobytes on Linux")
def test_meta_tensors_cost_nothing_when_the_meta_device_is_asked_for(tmp_path):
    """Loading onto the meta device, to look at a file's structure, accepts tensors without
    values, and builds the model there too: 1.6 GB of shapes cost nothing."""
    path = tmp_path / "huge-meta.pth"
    torch.save({name: torch.empty(shape, device="meta") for name, shape in HUGE.items()}, path)
    report = load_in_a_child(path, loader="load_network", map_location="meta")
    assert report["results"][0]["error"] is None
    assert report["peak_growth_mb"] < 100


@pytest.mark.filterwarnings("ignore:Validating sparse tensor invariants")
@pytest.mark.parametrize("kind", sorted(HOSTILE_TENSORS))
@pytest.mark.parametrize("where", [("model_state_dict", "output.bias"),
                                   ("optimizer_state_dict", "state", 0, "exp_avg"),
                                   ("rng", "cpu"), ("epoch_start_rng", "cpu"),
                                   ("notes", "table")])
@pytest.mark.parametrize("loader", LOADERS)
def test_a_tensor_posing_as_more_than_the_file_holds_is_refused_wherever_it_lies(
        tmp_path, saved, kind, where, loader):
    model, optimizer, _ = saved
    checkpoint = copy.deepcopy(general(model, optimizer, epoch_start_rng=checkpoint_io.rng_state(),
                                       notes={"table": torch.zeros(3, 4)}))
    *keys, last = where
    container = checkpoint
    for key in keys:
        container = container[key]
    make, match = HOSTILE_TENSORS[kind]
    container[last] = make(container[last])
    path = tmp_path / "hostile.pt"
    torch.save(checkpoint, path)
    message = refused(path, loader, match)
    assert "checkpoint" + "".join(f"[{key!r}]" for key in where) in message


def test_weights_that_share_one_storage_are_refused(tmp_path):
    shared = torch.zeros(256, 256)  # 256 KB, shown as the weights of 40 layers: 10 MB
    weights = {f"hidden_layers.{i}.weight": shared.view(256, 256) for i in range(40)}
    weights |= {f"hidden_layers.{i}.bias": torch.zeros(256) for i in range(40)}
    weights |= {"output.weight": torch.zeros(10, 256), "output.bias": torch.zeros(10)}
    path = tmp_path / "shared.pth"
    torch.save(weights, path)
    for loader in LOADERS:
        refused(path, loader, "its tensors share elements: they pose as 10,")


def test_a_small_deflated_archive_that_inflates_to_200_mb_is_refused_at_once(tmp_path, saved):
    _, _, path = saved
    hostile = tmp_path / "inflating.pt"
    with zipfile.ZipFile(path) as archive, zipfile.ZipFile(hostile, "w", zipfile.ZIP_DEFLATED) as out:
        for info in archive.infolist():
            with out.open(info.filename, "w", force_zip64=True) as entry:
                if info.filename.endswith("/data/0"):
                    for _ in range(200):
                        entry.write(bytes(2**20))
                else:
                    entry.write(archive.read(info))
    assert hostile.stat().st_size < 500_000
    for loader in LOADERS:
        refused(hostile, loader, "claims 209,715,200 bytes", seconds=2)


@pytest.mark.parametrize("opcodes, where, match", [
    # hashing the key recurses 100,000 deep in C, which can overflow the process's stack
    (nested(100_000, "tuple"), "key", "nests containers 100,00. levels deep"),
    # torch took minutes to word its refusal of such a name
    (a_global("torch", "x" * 100_000), "value", "names a global of 100,005 characters"),
], ids=["nested 100,000 deep in a key", "a global of 100 KB"])
def test_pickles_that_crash_or_stall_the_unpickler_are_refused_first(
        tmp_path, saved, opcodes, where, match):
    model, optimizer, _ = saved
    placed = {PLACEHOLDER: None} if where == "key" else {"notes": PLACEHOLDER}
    path = tmp_path / "crafted.pt"
    torch.save(general(model, optimizer, **placed), path)
    splice(path, opcodes)
    (result,) = load_in_a_child(path)["results"]
    assert result["error"] is not None and str(path) in result["error"]
    assert re.search(match, result["error"]) and len(result["error"]) < 2000
    assert result["seconds"] < 5


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss counts kilobytes on Linux")
def test_a_safetensors_header_cannot_make_the_loader_allocate_more_than_the_file_holds(tmp_path):
    """safetensors checks that every tensor's offsets lie in the file and match its shape;
    this makes sure it stays so: a 1.6 GB claim costs nothing."""
    claim = {"dtype": "F32", "shape": [20000, 20000]}
    headers = {"shape beyond its bytes": ({"w": {**claim, "data_offsets": [0, 16]}}, None),
               "offsets beyond the file": ({"w": {**claim, "data_offsets": [0, 1_600_000_000]}}, None),
               "header longer than the file": ({"w": {**claim, "data_offsets": [0, 16]}}, 2**40)}
    paths = []
    for name, (header, stated_length) in headers.items():
        encoded = json.dumps(header).encode()
        paths.append(tmp_path / f"{name}.safetensors")
        paths[-1].write_bytes(struct.pack("<Q", stated_length or len(encoded)) + encoded + bytes(16))
    report = load_in_a_child(*paths)
    for path, result in zip(paths, report["results"]):
        assert result["error"] is not None and str(path) in result["error"], result
        assert result["seconds"] < 2
    assert report["peak_growth_mb"] < 100


def test_safetensors_metadata_nested_without_end(tmp_path, saved):
    model, _, _ = saved
    path = tmp_path / "deep.safetensors"
    safetensors.torch.save_file(model.state_dict(), str(path), metadata={
        "format": fc_model.NETWORK.safetensors_format, "architecture": "[" * 100_000 + "]" * 100_000})
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
        fc_model.TrainingState.from_checkpoint(checkpoint_io.load_checkpoint(path, fc_model.NETWORK), path)


# --------------------------------------------------------------------------- nothing half-done

def snapshot(model, optimizer):
    """Copies of everything a restore or a resume could change: the model's weights, the
    optimizer's state and hyperparameters, and the generator state."""
    return (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()),
            torch.get_rng_state())


def assert_unchanged(model, optimizer, before):
    assert_identical(snapshot(model, optimizer), before, "model, optimizer and generator")


@pytest.fixture
def target():
    """Another network and Adam optimizer, stepped once, for a checkpoint to be restored into."""
    torch.manual_seed(1)
    model = fc_model.Network(784, 10, [32, 16])
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    nn.NLLLoss()(model(torch.randn(8, 784)), torch.randint(0, 10, (8,))).backward()
    optimizer.step()
    return model, optimizer


def test_restore_checks_the_optimizer_before_touching_the_model(tmp_path, saved, target):
    model, optimizer, _ = saved
    state = optimizer.state_dict()
    state["state"][0]["exp_avg"] = torch.zeros(5, 5)  # the wrong shape for parameter 0
    path = tmp_path / "bad-optimizer.pt"
    torch.save(general(model, optimizer, optimizer_state_dict=state), path)
    before = snapshot(*target)

    with pytest.raises(CheckpointError, match=r"'exp_avg' of parameter 0 has shape \(5, 5\), "
                                              r"expected a tensor of shape \(32, 784\)"):
        checkpoint_io.restore(checkpoint_io.load_checkpoint(path, fc_model.NETWORK), *target, path)
    assert_unchanged(*target, before)


@pytest.mark.parametrize("where", ["a sparse bias", "a meta exp_avg"])
def test_restore_checks_every_tensor_before_copying_any(saved, target, where):
    """A checkpoint built in memory, not read by load_checkpoint: restore checks it all the same."""
    model, optimizer, _ = saved
    checkpoint = copy.deepcopy(general(model, optimizer))
    if where == "a sparse bias":  # the fourth tensor: three were copied before it failed
        weights = checkpoint["model_state_dict"]
        weights["hidden_layers.1.bias"] = weights["hidden_layers.1.bias"].to_sparse()
    else:
        state = checkpoint["optimizer_state_dict"]["state"][0]
        state["exp_avg"] = state["exp_avg"].to("meta")
    before = snapshot(*target)

    with pytest.raises(CheckpointError, match="is a sparse_coo tensor|is on the meta device"):
        checkpoint_io.restore(checkpoint, *target)
    assert_unchanged(*target, before)


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


# How each case changes a resumable checkpoint (its dict, changed in place), and what the
# refusal says. Each of these made train() restore the model and the optimizer, then fail.
RESUME_CASES = {
    "a parameter group without lr": (
        lambda c: c["optimizer_state_dict"]["param_groups"][0].pop("lr"),
        "parameter group 0 has no 'lr'"),
    "a learning rate that is text": (
        lambda c: c["optimizer_state_dict"]["param_groups"][0].update(lr="0.01"),
        "parameter group 0 has 'lr' = '0.01', where the optimizer has 0.01"),
    "Adam state without exp_avg": (
        lambda c: c["optimizer_state_dict"]["state"][2].pop("exp_avg"),
        "parameter 2 has no 'exp_avg'"),
    "amsgrad without its state": (
        lambda c: c["optimizer_state_dict"]["param_groups"][0].update(amsgrad=True),
        "parameter 0 has no 'max_exp_avg_sq'"),
    "an exp_avg of stride 0": (
        lambda c: c["optimizer_state_dict"]["state"][0].update(
            exp_avg=torch.zeros(1).expand(32, 784)),
        r"\['exp_avg'\] poses as 25,088 elements of 4 bytes"),
    "a zeroed generator state": (
        lambda c: c.update(rng={"cpu": torch.zeros(5056, dtype=torch.uint8)}),
        "random-number-generator state is refused by torch"),
    "a zeroed epoch_start_rng": (
        lambda c: c.update(epoch_start_rng={"cpu": torch.zeros(5056, dtype=torch.uint8)}),
        "unusable training state: epoch_start_rng"),
    "a nested history": (
        lambda c: c.update(history=[{"step": 4, "losses": [0.5, 0.4]}]),
        "unusable training state: history"),
    "a running loss no float can hold": (
        lambda c: c.update(running_loss=10**400),
        "unusable training state: running_loss"),
}


@pytest.mark.parametrize("case", [*RESUME_CASES, "a history nested 100,000 deep"])
def test_resume_checks_everything_before_changing_anything(tmp_path, saved, target, case):
    model, optimizer, _ = saved
    state = fc_model.TrainingState(epoch=0, batch=1, step=1, history=[{"step": 1, "train_loss": 0.5}],
                                   epoch_start_rng=checkpoint_io.rng_state())
    checkpoint = copy.deepcopy(general(model, optimizer, **state.to_checkpoint()))
    path = tmp_path / "resume.pt"
    if case in RESUME_CASES:
        change, match = RESUME_CASES[case]
        change(checkpoint)
        torch.save(checkpoint, path)
    else:  # a value nested too deep for pickle to write: crafted
        match = "nests containers 100,00. levels deep"
        torch.save(dict(checkpoint, history=[{"step": PLACEHOLDER}]), path)
        splice(path, nested(100_000, "list"))
    batches = [(torch.zeros(2, 784), torch.zeros(2, dtype=torch.long))] * 3
    resumed_model, resumed_optimizer = target
    before = snapshot(resumed_model, resumed_optimizer)

    with pytest.raises(CheckpointError, match=match) as info:
        fc_model.train(resumed_model, batches, batches, nn.NLLLoss(), resumed_optimizer, epochs=2,
                       checkpoint_path=path, resume=True)
    assert str(path) in str(info.value)
    assert_unchanged(resumed_model, resumed_optimizer, before)


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


def test_a_5_mb_key_is_quoted_briefly(tmp_path, saved, target):
    model, optimizer, _ = saved
    state = copy.deepcopy(optimizer.state_dict())
    state["state"][0]["k" * 5_000_000] = "a value no optimizer keeps"
    path = tmp_path / "long-key.pt"
    torch.save(general(model, optimizer, optimizer_state_dict=state), path)
    with pytest.raises(CheckpointError, match="'kkkk.*' of parameter 0 is .*neither a tensor") as info:
        checkpoint_io.restore(checkpoint_io.load_checkpoint(path, fc_model.NETWORK), *target, path)
    assert str(path) in str(info.value) and len(str(info.value)) < 2000


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


@pytest.mark.parametrize("mode, expected", [(0o777, "0o666"), (0o600, "0o600")])
def test_saving_through_a_symlink_replaces_its_target_with_the_targets_permissions(
        tmp_path, saved, mode, expected):
    """The link stays a link; the file it points to gets the new content, in its own folder,
    with its read and write bits (a checkpoint is data: execute bits are dropped)."""
    model, optimizer, _ = saved
    (tmp_path / "store").mkdir()
    target_file = tmp_path / "store" / "real.pt"
    target_file.write_bytes(b"old")
    target_file.chmod(mode)
    link = tmp_path / "latest.pt"
    link.symlink_to(target_file)
    previous = os.umask(0o022)
    try:
        checkpoint_io.save_checkpoint(link, model, optimizer)
    finally:
        os.umask(previous)
    assert link.is_symlink() and link.resolve() == target_file.resolve()
    assert oct(target_file.stat().st_mode & 0o777) == expected
    assert checkpoint_io.load_checkpoint(link, fc_model.NETWORK)["architecture"] == model.architecture
    assert [p.name for p in (tmp_path / "store").iterdir()] == ["real.pt"]  # no .part left
    assert not list(tmp_path.glob(".*.part"))


def test_a_folder_this_user_may_not_write_to_is_named_with_what_to_do(tmp_path, saved, monkeypatch):
    """Tests run as root, who may write anywhere: the refusal is simulated."""
    model, optimizer, _ = saved

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    folder = tmp_path / "shared"
    with pytest.raises(PermissionError, match="may not create files in the folder") as info:
        checkpoint_io.save_checkpoint(folder / "checkpoint.pt", model, optimizer)
    assert os.path.realpath(folder) in str(info.value) and "Save it somewhere else" in str(info.value)


def test_a_refusal_is_recognised_by_its_type_not_its_wording(saved, monkeypatch):
    """torch.load(weights_only=True) refuses with pickle.UnpicklingError; however PyTorch words
    the message, the loader reports a refusal, with the unpickler's own reason."""
    _, _, path = saved

    def refuse(*args, **kwargs):
        try:
            raise pickle.UnpicklingError("Unsupported operand 149, as worded by some torch")
        except pickle.UnpicklingError:
            raise pickle.UnpicklingError("Weights only load failed, reworded at length") from None

    monkeypatch.setattr(torch, "load", refuse)
    message = refused(path, load_checkpoint, "was refused by torch.load")
    assert "Unsupported operand 149" in message


# --------------------------------------------------------------------------- found by a red team

def _zip_parts(entries):
    """The local entries, the central directory and the end record of a stored zip archive."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in entries:
            archive.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data)
    raw = buffer.getvalue()
    end = raw.rfind(b"PK\x05\x06")
    directory = struct.unpack("<I", raw[end + 16:end + 20])[0]
    return raw[:directory], raw[directory:end], raw[end:]


def _two_faced_archive(shown, hidden):
    """One file, two archives: Python's zipfile reads the one whose pickle is ``shown`` (it
    corrects the directory offset for "prepended" bytes), PyTorch's reader the ``hidden`` one."""
    length = max(len(shown), len(hidden))
    shown, hidden = shown.ljust(length, b"\0"), hidden.ljust(length, b"\0")  # after STOP: ignored
    base = io.BytesIO()
    torch.save({"x": 1}, base)
    source = zipfile.ZipFile(base)

    def entries(pickled):
        return [(info.filename, pickled if info.filename.endswith("/data.pkl") else source.read(info))
                for info in source.infolist()]

    hidden_entries, hidden_directory, _ = _zip_parts(entries(hidden))
    shown_entries, shown_directory, end = _zip_parts(entries(shown))
    end = bytearray(end)
    struct.pack_into("<I", end, 16, len(hidden_entries))  # PyTorch's reader goes there
    return hidden_entries + hidden_directory + shown_entries + shown_directory + bytes(end)


def test_an_archive_with_two_faces_is_refused(tmp_path):
    """Python's zipfile and torch.load must read the same archive: here the hidden pickle,
    a dict key nested 400,000 deep, crashed the interpreter."""
    path = tmp_path / "two-faced.pt"
    hidden = b"\x80\x02}" + b")" + b"\x85" * 400_000 + b"Ns."
    path.write_bytes(_two_faced_archive(pickle.dumps({"shown": 1}, protocol=2), hidden))
    result = subprocess.run(
        [sys.executable, "-c", "import sys\nfrom saveload_lessons import checkpoint_io\ntry:\n    checkpoint_io.load_torch_file("
         f"{str(path)!r}, 'cpu')\nexcept checkpoint_io.CheckpointError as error:\n    print(error)"],
        cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"exit status {result.returncode}: {result.stderr[-1000:]}"
    assert "is not where the archive's layout puts it" in result.stdout


def test_many_integers_with_one_hash_are_refused_at_once(tmp_path, saved):
    """Python hashes an int modulo 2**61 - 1: 32,000 keys k * (2**61 - 1) all collide, and
    building their dict took 19 s from a 416 KB file."""
    model, optimizer, _ = saved
    path = tmp_path / "collisions.pt"
    torch.save(general(model, optimizer, notes={k * (2**61 - 1): None for k in range(1, 32_001)}), path)
    message = refused(path, load_checkpoint, "integers of 2\\*\\*61 or more", seconds=5)
    assert "32,000 integers" in message


def test_a_quantized_optimizer_state_is_refused_before_anything_is_restored(saved):
    model, optimizer, path = saved
    checkpoint = checkpoint_io.load_checkpoint(path, fc_model.NETWORK)
    state = checkpoint["optimizer_state_dict"]["state"][0]
    state["exp_avg"] = torch.quantize_per_tensor(torch.zeros_like(state["exp_avg"]), 0.1, 0, torch.qint8)
    fresh = fc_model.Network(784, 10, [32, 16])
    fresh_optimizer = optim.Adam(fresh.parameters(), lr=0.01)
    before = {name: tensor.clone() for name, tensor in fresh.state_dict().items()}
    with pytest.raises(CheckpointError, match="qint8"):
        checkpoint_io.restore(checkpoint, fresh, fresh_optimizer)
    assert all(torch.equal(before[name], tensor) for name, tensor in fresh.state_dict().items())
    assert not fresh_optimizer.state


def test_a_replaced_file_keeps_its_group_or_loses_the_groups_permissions(tmp_path, monkeypatch):
    path = tmp_path / "shared.pt"
    path.write_bytes(b"old")
    path.chmod(0o640)
    os.chown(path, -1, 65534)  # another group (the tests run as root, who may do this)
    with atomic_write(path) as file:
        file.write(b"new")
    assert path.stat().st_gid == 65534 and stat.S_IMODE(path.stat().st_mode) == 0o640

    def refuse(*args):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "chown", refuse)  # a user who is not in that group
    with atomic_write(path) as file:
        file.write(b"newer")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --------------------------------------------------------------------------- assigned, not copied

def _general_checkpoint(path, state_dict, architecture):
    torch.save({"format": fc_model.NETWORK.checkpoint_format, "architecture": architecture,
                "model_state_dict": state_dict, "optimizer_state_dict": None,
                "rng": checkpoint_io.rng_state()}, path)


def test_load_network_never_gives_two_parameters_one_storage(tmp_path):
    """load_network makes the file's tensors the parameters (assign=True): a tensor saved under
    two names, views of one buffer, or a weight whose elements overlap become separate copies."""
    architecture = {"input_size": 3, "output_size": 3, "hidden_layers": [3], "drop_p": 0.5}
    state = dict(fc_model.Network(**architecture).state_dict())
    buffer = torch.arange(6.0)
    variants = {
        "one tensor, two names": {"output.bias": state["hidden_layers.0.bias"]},
        "views of one buffer": {"hidden_layers.0.bias": buffer[0:3], "output.bias": buffer[0:6:2]},
        "overlapping elements": {"hidden_layers.0.weight": torch.randn(9).as_strided((3, 3), (1, 1))},
    }
    for name, changes in variants.items():
        path = tmp_path / f"{name}.pt"
        _general_checkpoint(path, dict(state, **changes), architecture)
        model = fc_model.load_network(path)
        storages = [p.untyped_storage().data_ptr() for p in model.parameters()]
        assert len(set(storages)) == len(storages), name
        assert all(p.is_contiguous() for p in model.parameters()), name


@pytest.mark.parametrize("dtypes, shown", [
    ({"output.bias": torch.float64}, "['torch.float32', 'torch.float64']"),
    ({}, "['torch.float8_e4m3fn']"),
])
def test_load_network_refuses_weights_no_layer_computes_with(tmp_path, dtypes, shown):
    architecture = {"input_size": 3, "output_size": 3, "hidden_layers": [3], "drop_p": 0.5}
    state = dict(fc_model.Network(**architecture).state_dict())
    state = ({name: tensor.to(dtypes.get(name, tensor.dtype)) for name, tensor in state.items()} if dtypes
             else {name: tensor.to(torch.float8_e4m3fn) for name, tensor in state.items()})
    _general_checkpoint(tmp_path / "odd.pt", state, architecture)
    with pytest.raises(CheckpointError, match=re.escape(f"its weights have the dtypes {shown}")):
        fc_model.load_network(tmp_path / "odd.pt")
