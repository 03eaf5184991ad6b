"""Fuzzing the loaders with hypothesis: whatever the file, a correct result or a CheckpointError
that names it, within a few seconds, and never a planted payload run.

The inputs: real files of every kind the project writes or reads, with bytes flipped, cut
off or spliced in; pickles of random nested structures (payloads among them); safetensors
files with random headers and metadata; and real checkpoints made hostile in the ways a
review found: a tensor posing as more than the file holds (stride 0, meta, sparse), entries
compressed or padded out, containers nested deep. The normal test run tries a few dozen of
each (the "default" profile in tests/conftest.py); a longer campaign:

    python -m pytest tests/test_fuzz.py --hypothesis-profile=fuzz --hypothesis-show-statistics
"""

import functools
import io
import json
import struct
import tempfile
import time
import zipfile
from pathlib import Path

import pytest
import safetensors.torch
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from test_hostile_files import HOSTILE_TENSORS, PLACEHOLDER, nested, rewrite, splice
from torch import nn, optim

import fc_model
from conftest import damage, load_checkpoint
from saveload_lessons import checkpoint_io
from saveload_lessons.checkpoint_io import MAX_PICKLE_NESTING, CheckpointError

SECONDS = 5  # the most a loader may take on any of these small files
FOLDER = Path(tempfile.mkdtemp(prefix="fuzz-"))
MARKER = FOLDER / "payload-ran"


class Payload:
    """Unpickling this would create MARKER: the stand-in for malicious code."""

    def __reduce__(self):
        return (io.open, (str(MARKER), "w"))


@functools.cache
def seed_files():
    """Real files of every kind the loaders accept, as bytes."""
    torch.manual_seed(0)
    model = fc_model.Network(20, 3, [8, 4])
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    nn.NLLLoss()(model(torch.randn(5, 20)), torch.randint(0, 3, (5,))).backward()
    optimizer.step()
    paths = {name: FOLDER / name for name in
             ("general.pt", "classic.pth", "bare.pth", "model.safetensors", "bare.safetensors")}
    state = fc_model.TrainingState(epoch=1, batch=2, step=9, loss=0.5, running_loss=1.0,
                                   history=[{"step": 4}], epoch_start_rng=checkpoint_io.rng_state())
    checkpoint_io.save_checkpoint(paths["general.pt"], model, optimizer, **state.to_checkpoint())
    torch.save({**model.architecture, "state_dict": model.state_dict()}, paths["classic.pth"])
    torch.save(model.state_dict(), paths["bare.pth"])
    checkpoint_io.save_safetensors(paths["model.safetensors"], model)
    safetensors.torch.save_file(model.state_dict(), str(paths["bare.safetensors"]))
    return {name: path.read_bytes() for name, path in paths.items()}


def write(data, name="case"):
    path = FOLDER / name
    path.write_bytes(data)
    return path


def check_result(result):
    """What a loader returned must be usable: a checkpoint that rebuilds a Network, or one."""
    if isinstance(result, nn.Module):
        network = result
    else:
        network = fc_model.Network(**result["architecture"])
        checkpoint_io.restore(result, network)
        if result["optimizer_state_dict"] is not None:
            optimizer = optim.Adam(network.parameters())
            try:
                checkpoint_io.restore(result, network, optimizer)
            except CheckpointError:
                pass  # an optimizer state for another optimizer: refused, which is correct
    with torch.no_grad():
        output = network.eval()(torch.zeros(2, network.architecture["input_size"]))
    assert output.shape == (2, network.architecture["output_size"])


def check_loaders(path, refused=False):
    """Every loader gives a correct result or a CheckpointError naming the file, quickly
    (only the error if ``refused``)."""
    for loader in (load_checkpoint, fc_model.load_network):
        start = time.monotonic()
        try:
            result = loader(path)
        except CheckpointError as err:
            assert str(path) in str(err)
            assert len(str(err)) < 2000, "messages must quote file content briefly"
        else:
            assert not refused, f"{loader.__name__} accepted a hostile file"
            check_result(result)
            if loader is load_checkpoint and "epoch" in result:
                try:
                    fc_model.TrainingState.from_checkpoint(result, path)
                except CheckpointError as err:
                    assert str(path) in str(err)
        assert time.monotonic() - start < SECONDS, f"{loader.__name__} took too long"
    assert not MARKER.exists(), "a planted payload ran"


# --------------------------------------------------------------------------- damaged real files

@st.composite
def damaged(draw):
    files = seed_files()
    name = draw(st.sampled_from(sorted(files)))
    return name, damage(draw, files[name], files)


@given(damaged())
def test_damaged_files(case):
    name, data = case
    check_loaders(write(data, name))


# --------------------------------------------------------------------------- random pickles

tensors = st.builds(
    lambda shape, dtype: torch.zeros(shape, dtype=dtype),
    st.lists(st.integers(0, 6), max_size=3),
    st.sampled_from([torch.float32, torch.float64, torch.int64, torch.uint8, torch.bool]))
leaves = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
          | tensors | st.just(Payload()))
structures = st.recursive(
    leaves,
    lambda children: (st.lists(children, max_size=4) | st.tuples(children, children)
                      | st.dictionaries(st.text(max_size=24) | st.integers(), children, max_size=4)),
    max_leaves=12)
FIELDS = ["format", "architecture", "model_state_dict", "optimizer_state_dict", "rng",
          "epoch", "batch", "step", "loss", "running_loss", "best_accuracy", "history",
          "epoch_start_rng", "input_size", "hidden_layers", "state_dict", "hidden_layers.0.weight"]


@st.composite
def pickled(draw):
    """A random structure alone, or a real checkpoint with some of its entries replaced by one."""
    if draw(st.booleans()):
        return draw(structures)
    base = draw(st.sampled_from(["general.pt", "classic.pth", "bare.pth"]))
    checkpoint = dict(torch.load(io.BytesIO(seed_files()[base]), weights_only=True))
    for key in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3)):
        if draw(st.booleans()) or key not in checkpoint:
            checkpoint[key] = draw(structures)
        else:
            del checkpoint[key]
    return checkpoint


@given(pickled())
def test_pickles_of_random_structures(obj):
    path = FOLDER / "pickled.pt"
    torch.save(obj, path)
    check_loaders(path)


# --------------------------------------------------------------------------- random safetensors

architectures = st.fixed_dictionaries(
    {"input_size": st.integers(-2, 10**12) | st.floats() | st.text(max_size=4),
     "output_size": st.integers(-2, 40), "hidden_layers": st.lists(st.integers(-1, 10**9), max_size=4)},
    optional={"drop_p": st.floats() | st.none()})
metadata = st.dictionaries(st.text(max_size=12), st.text(max_size=30), max_size=3) | st.builds(
    lambda architecture: {"format": fc_model.NETWORK.safetensors_format,
                          "architecture": json.dumps(architecture)}, architectures)
entries = st.fixed_dictionaries({
    "dtype": st.sampled_from(["F32", "F64", "F16", "I64", "U8", "BOOL", "X9"]),
    "shape": st.lists(st.integers(0, 10**12) | st.integers(0, 40), max_size=3),
    "data_offsets": st.lists(st.integers(0, 10**6) | st.integers(0, 600), min_size=2, max_size=2)})
NAMES = ["hidden_layers.0.weight", "hidden_layers.0.bias", "output.weight", "output.bias", "x"]


@given(st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=8), entries, max_size=5),
       st.none() | metadata, st.binary(max_size=600), st.none() | st.integers(0, 2**64 - 1))
def test_safetensors_with_random_headers(header, meta, body, stated_length):
    if meta is not None:
        header = {"__metadata__": meta, **header}
    encoded = json.dumps(header).encode()
    length = len(encoded) if stated_length is None else stated_length
    check_loaders(write(struct.pack("<Q", length) + encoded + body, "random.safetensors"))


# --------------------------------------------------------------------------- hostile real checkpoints

TORCH_SEEDS = ["general.pt", "classic.pth", "bare.pth"]


def seed_object(name):
    """A fresh copy of what a torch.save seed file holds, to change."""
    return torch.load(io.BytesIO(seed_files()[name]), weights_only=True)


def tensor_places(obj):
    """(container, key) for every tensor inside ``obj``'s dicts and lists."""
    places, pending = [], [obj]
    while pending:
        container = pending.pop()
        for key, value in (container.items() if isinstance(container, dict) else enumerate(container)):
            if torch.is_tensor(value):
                places.append((container, key))
            elif isinstance(value, (dict, list)):
                pending.append(value)
    return places


@pytest.mark.filterwarnings("ignore:Validating sparse tensor invariants")
@given(st.sampled_from(TORCH_SEEDS), st.sampled_from(sorted(HOSTILE_TENSORS)), st.data())
def test_a_tensor_posing_as_more_than_the_file_holds(base, kind, data):
    checkpoint = seed_object(base)
    places = tensor_places(checkpoint)
    container, key = places[data.draw(st.integers(0, len(places) - 1), label="tensor")]
    assume(kind != "stride 0" or container[key].numel() > 1)  # one element at stride 0 is honest
    container[key] = HOSTILE_TENSORS[kind][0](container[key])
    path = FOLDER / "hostile-tensor.pt"
    torch.save(checkpoint, path)
    check_loaders(path, refused=True)


@given(st.sampled_from(TORCH_SEEDS), st.data())
def test_compressed_and_padded_entries(base, data):
    """Entries compressed, or padded out with zeros: a compressed entry padded with 4 MB
    inflates far beyond MAX_INFLATION times its size, and must be refused."""
    path = write(seed_files()[base], "compressed.pt")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    deflated = data.draw(st.just(set(names)) | st.sets(st.sampled_from(names)), label="deflated")
    padded = data.draw(st.sampled_from(names), label="padded")
    padding = bytes(data.draw(st.sampled_from([0, 1, 4096, 4 * 2**20]), label="zeros"))
    rewrite(path, lambda name, content: content + padding if name == padded else content, deflated)
    check_loaders(path, refused=padded in deflated and len(padding) > 2**20)


@given(st.sampled_from(TORCH_SEEDS), st.sampled_from(["key", "value", "history"]),
       st.sampled_from(["list", "tuple", "dict"]),
       st.integers(0, 2 * MAX_PICKLE_NESTING) | st.integers(0, 3000))
def test_containers_nested_deep(base, where, container, depth):
    """Deeper than MAX_PICKLE_NESTING must be refused (at most 3,000 deep, which Python
    survives even unchecked, so that a failure fails the test and does not crash the run)."""
    checkpoint = seed_object(base)
    if where == "key":
        checkpoint[PLACEHOLDER], container = 1, "tuple"  # only a tuple can be a key
    elif where == "value":
        checkpoint["notes"] = PLACEHOLDER
    else:
        checkpoint["history"] = [{"step": PLACEHOLDER}]
    path = FOLDER / "nested.pt"
    torch.save(checkpoint, path)
    splice(path, nested(depth, container))
    check_loaders(path, refused=depth > MAX_PICKLE_NESTING)
