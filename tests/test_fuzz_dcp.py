"""Fuzzing distributed checkpoint folders with hypothesis: whatever the folder, a correct result
or a CheckpointError, within a few seconds, never a planted payload run, and a failed load
leaves the state dict as it was.

Kinds of input, each tried on real DCP folders (one shard file, and two "ranks" that each hold
half of every tensor): ``.metadata`` with bytes flipped, cut off or spliced in; the unpickled
``Metadata`` changed field by field and pickled again (paths, offsets, sizes, chunks, dtypes,
nesting paths, objects of other types, objects missing their fields); hostile pickles
(explicit examples, run in a separate process, one fork per example, so that neither a crash,
a hang nor a change to the interpreter's state can reach the test process); damaged, swapped,
replaced and linked shard files; the ``latest`` pointer; and ``prune`` on random step folders.
Each reader runs with its address space limited to 2 GB more than the process uses, so that
a file that asks for far more fails the test instead of exhausting the machine.

The normal test run tries a few dozen of each (the "default" profile in tests/conftest.py),
and the ``@example`` cases that earlier campaigns found; a longer campaign:

    python -m pytest tests/test_fuzz_dcp.py --hypothesis-profile=fuzz --hypothesis-show-statistics

The statistics list, for every test, how many examples each reader accepted and refused. A
campaign stops looking soon after its first failure; with ``FUZZ_DCP_LOG=failures.jsonl`` set,
failing examples are written to that file and counted instead, and the campaign goes on.
"""

import contextlib
import copy
import copyreg
import dataclasses
import functools
import io
import json
import os
import pickle
import re
import resource
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import typing
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from hypothesis import assume, event, example, given
from hypothesis import strategies as st
from torch.distributed.checkpoint import filesystem
from torch.distributed.checkpoint import metadata as dcp_metadata

from conftest import REPO, assert_identical, damage
from saveload_lessons import distributed_checkpoints
from saveload_lessons.checkpoint_io import CheckpointError

# The most a reader may take on any of these small folders: far above the second or two they
# take, since machines differ 2.5x and CI shares its cores, yet far below a hang or a quadratic cost
SECONDS = 15
FOLDER = Path(tempfile.mkdtemp(prefix="fuzz-dcp-"))
MARKER = FOLDER / "payload-ran"
OUTSIDE = FOLDER / "outside"  # files outside every checkpoint folder, for links and paths to point at
MetadataIndex = dcp_metadata.MetadataIndex


class Payload:
    """Unpickling this would create MARKER: the stand-in for malicious code."""

    def __reduce__(self):
        return (io.open, (str(MARKER), "w"))


class BareRecord(typing.NamedTuple):
    """How a strategy asks for a ``Bare`` record (hypothesis prints this, not the record)."""
    cls: type
    state: object = None


class Bare:
    """Pickles as an instance of ``cls`` made without calling ``__init__`` (NEWOBJ), with
    ``state`` as its attributes, or none at all: a record that lacks some of its fields."""

    def __init__(self, cls, state=None):
        self.cls, self.state = cls, state

    @property
    def __class__(self):  # pickle checks that NEWOBJ's class is the object's class
        return self.cls

    def __reduce__(self):
        return (copyreg.__newobj__, (self.cls,), self.state)


# A long campaign stops at its first failing example, soon after. With FUZZ_DCP_LOG=path, each
# failing example is instead appended to that file (one JSON object a line) and counted in the
# statistics as a "FAILURE: ..." event, and the campaign goes on looking for others.
LOG = os.environ.get("FUZZ_DCP_LOG")


def keep_going(test):
    @functools.wraps(test)
    def run(*args, **kwargs):
        try:
            test(*args, **kwargs)
        except AssertionError as err:
            if not LOG:
                raise
            summary = re.sub(r"\d+", "N", str(err).replace(str(FOLDER), "<tmp>").splitlines()[0])[:150]
            event(f"FAILURE: {summary}")
            with open(LOG, "a") as file:
                file.write(json.dumps({"test": test.__name__, "summary": summary, "message": str(err)[:3000],
                                       "example": repr((args, kwargs))[:3000]}) + "\n")
    return run


# --------------------------------------------------------------------------- seed folders

def dcp_save(state_dict, folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(state_dict, checkpoint_id=folder, no_dist=True)


def model_state():
    """A small model's state dict (dtypes and shapes of every kind, a 0-d and an empty tensor)
    and plain training progress."""
    generator = torch.Generator().manual_seed(0)
    return {"model": {"w": torch.randn(3, 4, generator=generator),
                      "b": torch.arange(5, dtype=torch.int64),
                      "s": torch.tensor(2.5, dtype=torch.float64),
                      "e": torch.empty(0, 3),
                      "h": torch.randn(2, 2, generator=generator).half(),
                      "m": torch.tensor([True, False, True])},
            "progress": {"epoch": 2, "lr": 0.1, "name": "run"}}


def two_rank_state():
    generator = torch.Generator().manual_seed(1)
    return {"w": torch.randn(4, 3, generator=generator), "v": torch.arange(6, dtype=torch.int32),
            "step": 7}


def save_two_ranks(folder):
    """What two ranks write for ``two_rank_state`` sharded on dim 0: each tensor in two chunks,
    rank 0's in ``__0_0.distcp`` and rank 1's in ``__1_0.distcp``, one ``.metadata``."""
    state = two_rank_state()
    halves = [{"w": state["w"][:2].clone(), "v": state["v"][:4].clone(), "step": state["step"]},
              {"w": state["w"][2:].clone(), "v": state["v"][4:].clone()}]
    parts = []
    for rank, half in enumerate(halves):
        dcp_save(half, FOLDER / f"rank{rank}")
        parts.append(pickle.loads((FOLDER / f"rank{rank}" / ".metadata").read_bytes()))
    folder.mkdir()
    shutil.copy(FOLDER / "rank0" / "__0_0.distcp", folder / "__0_0.distcp")
    shutil.copy(FOLDER / "rank1" / "__0_0.distcp", folder / "__1_0.distcp")
    metadata = parts[0]
    storage = {}
    for rank, part in enumerate(parts):
        for index, info in part.storage_data.items():
            if index.offset is None:  # a value: rank 0 writes it
                storage[index] = info
                continue
            first = parts[0].state_dict_metadata[index.fqn].size  # rank 1's rows follow rank 0's
            offsets = torch.Size([first[0] * rank] + [0] * (len(first) - 1))
            info.relative_path = f"__{rank}_0.distcp"
            storage[MetadataIndex(index.fqn, offsets, rank)] = info
    for fqn, entry in metadata.state_dict_metadata.items():
        if isinstance(entry, dcp_metadata.TensorStorageMetadata):
            other = parts[1].state_dict_metadata[fqn]
            entry.chunks = [dcp_metadata.ChunkStorageMetadata(torch.Size([0] * len(entry.size)),
                                                              entry.size),
                            dcp_metadata.ChunkStorageMetadata(
                                torch.Size([entry.size[0]] + [0] * (len(entry.size) - 1)), other.size)]
            entry.size = torch.Size([entry.size[0] + other.size[0], *entry.size[1:]])
    metadata.storage_data = storage
    (folder / ".metadata").write_bytes(pickle.dumps(metadata))


def fill(value):
    """A state dict shaped like ``value`` whose contents all differ from it."""
    if torch.is_tensor(value):
        return torch.full_like(value, not value.any().item() if value.dtype == torch.bool else 7)
    if isinstance(value, dict):
        return {key: fill(item) for key, item in value.items()}
    return {int: -1, float: -1.0, str: "?"}[type(value)]


def clone(value):
    if torch.is_tensor(value):
        return value.clone()
    if isinstance(value, dict):
        return {key: clone(item) for key, item in value.items()}
    return copy.deepcopy(value)


@functools.cache
def seeds():
    """``{name: (folder, state)}``: real DCP folders and the state dicts saved in them."""
    OUTSIDE.mkdir()
    result = {"model": (FOLDER / "seed-model", model_state()),
              "two-rank": (FOLDER / "seed-two-rank", two_rank_state())}
    dcp_save(model_state(), result["model"][0])
    save_two_ranks(result["two-rank"][0])
    shutil.copy(result["model"][0] / "__0_0.distcp", OUTSIDE / "shard.distcp")
    torch.save(torch.full((5,), 42, dtype=torch.int64), OUTSIDE / "secret.pt")
    return result


@functools.cache
def seed_metadata(name):
    return pickle.loads((seeds()[name][0] / ".metadata").read_bytes())


def fresh_case(name):
    """A copy of the seed folder ``name``, to damage."""
    folder = FOLDER / "case"
    if os.path.lexists(folder):
        shutil.rmtree(folder)
    shutil.copytree(seeds()[name][0], folder, symlinks=True)
    return folder


def folder_bytes(folder):
    return sum(os.lstat(path).st_size for path in Path(folder).iterdir())


# --------------------------------------------------------------------------- the property

MEMORY = 2 * 2**30  # the most a reader may allocate on these small folders


@contextlib.contextmanager
def memory_limit(extra=MEMORY):
    """Limit this process's address space to what it uses now plus ``extra`` bytes (Linux), so
    that a reader asking for far more gets a MemoryError instead of exhausting the machine."""
    try:
        with open("/proc/self/status") as file:
            used = int(file.read().split("VmSize:")[1].split()[0]) * 1024
    except (OSError, IndexError, ValueError):
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (used + extra if hard == resource.RLIM_INFINITY
                                            else min(used + extra, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def attempt(what, call, folder):
    """Run ``call``: ``(True, its result)``, or ``(False, None)`` after a CheckpointError naming
    ``folder``; anything else (DCP's CheckpointException is a BaseException) fails the test, and
    so does needing more than MEMORY bytes (a MemoryError, even one made a CheckpointError)."""
    start = time.monotonic()
    try:
        with memory_limit():
            result = (True, call())
    except CheckpointError as err:
        event(f"{what}: CheckpointError")
        assert "MemoryError" not in str(err), f"{what} needed more than {MEMORY:,} bytes: {err}"
        assert str(folder) in str(err), f"{what}'s message does not name {folder}: {err}"
        assert len(str(err)) < 2000, "messages must quote file content briefly"
        result = (False, None)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as err:
        raise AssertionError(f"{what} raised {type(err).__name__} instead of CheckpointError: "
                             f"{str(err)[:500]}") from err
    else:
        event(f"{what}: accepted")
    assert time.monotonic() - start < SECONDS, f"{what} took too long"
    assert not MARKER.exists(), "a planted payload ran"
    return result


def same_meaning(metadata, seed, planner_data_too):
    """Whether checked metadata says what the seed's says (how it was pickled aside)."""
    same = (metadata.state_dict_metadata == seed.state_dict_metadata
            and metadata.storage_data == seed.storage_data)
    return same and (not planner_data_too or metadata.planner_data == seed.planner_data)


def assert_shaped_like(actual, expected, where="the state dict"):
    """The same keys, and tensors of the same dtypes and shapes (values may differ)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), (
            f"a successful load changed the structure of the state dict: {where} is now {actual!r:.80}")
        for key in expected:
            assert_shaped_like(actual[key], expected[key], f"{where}[{key!r}]")
    elif torch.is_tensor(expected):
        assert torch.is_tensor(actual) and actual.dtype == expected.dtype \
            and actual.shape == expected.shape, f"{where} changed dtype or shape"


def planner_path(metadata, fqn):
    return tuple((metadata.planner_data or {}).get(fqn) or (fqn,))


def follow(value, path):
    for part in path:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and isinstance(part, int) and part < len(value):
            value = value[part]
        else:
            raise AssertionError(f"to_single_file's result has nothing at {path}")
    return value


def check_single_file_result(result, path, metadata, folder):
    """A state dict holding each key of the checked metadata at its own place, as the metadata
    describes it, written to ``path`` so that ``torch.load(weights_only=True)`` reads it back."""
    assert isinstance(result, dict)
    assert path.stat().st_size <= 4 * folder_bytes(folder) + 2**20, "the file is far larger than the folder"
    assert_identical(torch.load(path, weights_only=True), result, "the file written")
    paths = {fqn: planner_path(metadata, fqn) for fqn in metadata.state_dict_metadata}
    for fqn, where in paths.items():
        for other, elsewhere in paths.items():
            assert other == fqn or elsewhere[:len(where)] != where, (
                f"{fqn!r} (at {where}) and {other!r} (at {elsewhere}) land in the same place, yet "
                "to_single_file succeeded: one of them was silently overwritten or merged")
        value = follow(result, where)
        entry = metadata.state_dict_metadata[fqn]
        if isinstance(entry, dcp_metadata.TensorStorageMetadata):
            assert torch.is_tensor(value) and value.shape == entry.size \
                and value.dtype == entry.properties.dtype, f"{fqn!r} is {value!r}, not as described"
        else:
            assert value is not None, f"the value {fqn!r} was never read"


def check_folder(folder, seed, shards_intact=True):
    """check_metadata, load and to_single_file on ``folder``, a damaged copy of seed ``seed``:
    each gives a correct result or a CheckpointError. When the checked metadata means what the
    seed's means and the shards are intact, the results are the seed's state, bit for bit."""
    _, state = seeds()[seed]
    accepted, metadata = attempt("check_metadata",
                                 lambda: distributed_checkpoints.check_metadata(folder), folder)
    if accepted:
        assert type(metadata) is dcp_metadata.Metadata
    same = accepted and shards_intact and same_meaning(metadata, seed_metadata(seed), False)

    target = fill(state)
    before = clone(target)
    loaded, _ = attempt("load", lambda: distributed_checkpoints.load(target, folder), folder)
    if not loaded:
        assert_identical(target, before, "the state dict after a refused load")
    else:
        assert accepted, "load accepted a folder that check_metadata refuses"
        assert_shaped_like(target, before)
        if same:
            assert_identical(target, state, "a folder that means what the seed means, loaded")

    path = FOLDER / "single.pt"
    path.unlink(missing_ok=True)
    gathered, single = attempt("to_single_file",
                               lambda: distributed_checkpoints.to_single_file(folder, path), folder)
    if not gathered:
        assert not path.exists(), "a refused to_single_file left its file"
    else:
        assert accepted, "to_single_file accepted a folder that check_metadata refuses"
        check_single_file_result(single, path, metadata, folder)
        if same and metadata.planner_data == seed_metadata(seed).planner_data:
            assert_identical(single, state, "a folder that means what the seed means, gathered")
    assert not list(FOLDER.glob(".single.pt.*")), "to_single_file left a temporary file"


def test_the_seed_folders_load_exactly():
    """The harness's own check: the undamaged folders pass, and give back what was saved."""
    for name, (folder, state) in seeds().items():
        assert distributed_checkpoints.check_metadata(folder) == seed_metadata(name)
        target = fill(state)
        distributed_checkpoints.load(target, folder)
        assert_identical(target, state, f"{name}, loaded")
        assert_identical(distributed_checkpoints.to_single_file(folder, FOLDER / "single.pt"), state,
                         f"{name}, gathered")


# --------------------------------------------------------------------------- damaged .metadata bytes

def seed_bytes():
    """Every file of every seed folder, as bytes: what a splice takes its pieces from."""
    return {f"{name}/{path.name}": path.read_bytes()
            for name, (folder, _) in seeds().items() for path in sorted(folder.iterdir())}


@st.composite
def damaged_metadata(draw):
    seed = draw(st.sampled_from(["model", "two-rank"]))
    data = (seeds()[seed][0] / ".metadata").read_bytes()
    if draw(st.booleans()):  # the same metadata pickled otherwise: other opcodes to damage
        data = pickle.dumps(seed_metadata(seed), protocol=draw(st.sampled_from([0, 2, 5])))
    return seed, damage(draw, data, seed_bytes())


@given(damaged_metadata())
@keep_going
def test_damaged_metadata_bytes(case):
    seed, data = case
    folder = fresh_case(seed)
    (folder / ".metadata").write_bytes(data)
    check_folder(folder, seed)


# --------------------------------------------------------------------------- forged metadata

SELF = object()  # stands for the Metadata object itself (a cycle) among replacements
NAMES = ["model", "progress", "model.w", "model.w.0", "model.w.x", "progress.epoch.x", "model.0",
         "w", "v", "v.1", "step", "", "a.b", "0", "x" * 300]
PATHS = ["../x", "../outside/shard.distcp", "/etc/passwd", str(OUTSIDE / "shard.distcp"), "sub/x",
         "sub", "", ".", "..", "link-outside", "link-zero", "link-shard", "missing.distcp",
         "__0_0.distcp", "__1_0.distcp", ".metadata", "a\0b", "..\\x", "C:x", "c:\\x", "x/", 42, None,
         b"__0_0.distcp", ["__0_0.distcp"]]
NUMBERS = (st.integers(-2, 3000) | st.integers(-2**70, 2**70)
           | st.sampled_from([0, 2**31, 2**63 - 1, 2**63, 2**64, None, 1.5, "3", True, float("nan")]))
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32,
          torch.int8, torch.uint8, torch.bool, torch.complex64, torch.complex32, torch.float8_e4m3fn,
          torch.qint8, torch.quint4x2, torch.uint1, torch.bits8]
SIZES = st.lists(st.integers(-1, 6) | st.sampled_from([2**31, 2**40, 2**62, 2**63 - 1]), max_size=4)
PARTS = (st.sampled_from(["model", "w", "b", "s", "progress", "epoch", "v", "0", ""])
         | st.integers(-1, 12) | st.sampled_from([10**6, None, 1.5, True]))
RECORDS = [dcp_metadata.Metadata, dcp_metadata.TensorStorageMetadata, dcp_metadata.TensorProperties,
           dcp_metadata.ChunkStorageMetadata, dcp_metadata.MetadataIndex, dcp_metadata.StorageMeta,
           dcp_metadata.BytesStorageMetadata, filesystem._StorageInfo]
REPLACEMENTS = st.sampled_from([None, 0, -1, "x", b"x", [], {}, (), SELF, 1.5, torch.Size([1]),
                                torch.float32, Path("x")]) | st.builds(
    BareRecord, st.sampled_from(RECORDS), st.none() | st.sampled_from([{}, {"fqn": "model.w"},
                                                                 {"relative_path": "__0_0.distcp"},
                                                                 {"state_dict_metadata": {}}]))


def choose(items, index):
    items = list(items)
    return items[index % len(items)] if items else None


def new_size(value):
    return torch.Size(value) if isinstance(value, list) else value


def rename(metadata, old, new, path):
    metadata.state_dict_metadata[new] = metadata.state_dict_metadata.pop(old)
    for index in [index for index in metadata.storage_data if index.fqn == old]:
        moved = MetadataIndex(new, index.offset, index.index)
        metadata.storage_data[moved] = metadata.storage_data.pop(index)
    if isinstance(metadata.planner_data, dict):
        metadata.planner_data.pop(old, None)
        if path is not None:
            metadata.planner_data[new] = path


def natural_path(name):
    return tuple(int(part) if part.isdigit() else part for part in name.split("."))


def mutate(metadata, spec):
    """Apply one change, described by the plain tuple ``spec``, to ``metadata``."""
    kind, *args = spec
    args = [metadata if arg is SELF else Bare(*arg) if isinstance(arg, BareRecord) else arg for arg in args]
    entries, storage = metadata.state_dict_metadata, metadata.storage_data
    tensors = [fqn for fqn, entry in entries.items()
               if isinstance(entry, dcp_metadata.TensorStorageMetadata)]
    if kind == "path":
        choose(storage.values(), args[0]).relative_path = args[1]
    elif kind == "numbers":
        info = choose(storage.values(), args[0])
        info.offset, info.length = (info.offset if args[1] == "keep" else args[1],
                                    info.length if args[2] == "keep" else args[2])
    elif kind == "transform":
        choose(storage.values(), args[0]).transform_descriptors = args[1]
    elif kind == "drop storage":
        del storage[choose(storage, args[0])]
    elif kind == "copy storage":  # the same bytes under another key
        index = choose(storage, args[0])
        storage[MetadataIndex(args[1], index.offset)] = copy.copy(storage[index])
    elif kind == "rekey storage":
        index = choose(storage, args[0])
        key = args[1] if args[1] != "shifted" else MetadataIndex(
            index.fqn, None if index.offset is None else [o + 1 for o in index.offset])
        storage[key] = storage.pop(index)
    elif kind == "replace storage":
        storage[choose(storage, args[0])] = args[1]
    elif kind == "size":
        entries[choose(tensors, args[0])].size = new_size(args[1])
    elif kind == "chunks":
        entry = entries[choose(tensors, args[0])]
        how, position, dim, delta = args[1:]
        chunk = choose(entry.chunks, position)
        if how == "remove":
            entry.chunks.remove(chunk)
        elif how == "duplicate":
            entry.chunks.append(copy.deepcopy(chunk))
        elif how in ("shift", "move"):  # move: the storage entry moves along
            old = chunk.offsets
            offsets = list(old)
            offsets[dim % len(offsets)] += delta
            chunk.offsets = torch.Size(offsets)
            if how == "move":
                index = MetadataIndex(choose(tensors, args[0]), old)
                storage[MetadataIndex(index.fqn, chunk.offsets)] = storage.pop(index)
        elif how == "resize":
            sizes = list(chunk.sizes)
            sizes[dim % len(sizes)] += delta
            chunk.sizes = torch.Size(sizes)
        elif how == "beyond":  # every offset past the end (or, for a negative delta, back inside)
            chunk.offsets = torch.Size([size + delta for size in entry.size])
        elif how == "reverse":
            entry.chunks.reverse()
        else:
            entry.chunks = {"none": None, "tuple": tuple(entry.chunks), "empty": [],
                            "strings": ["x"], "bare": [Bare(dcp_metadata.ChunkStorageMetadata)]}[how]
    elif kind == "dtype":
        entries[choose(tensors, args[0])].properties.dtype = args[1]
    elif kind == "layout":
        entries[choose(tensors, args[0])].properties.layout = args[1]
    elif kind == "properties":
        entries[choose(tensors, args[0])].properties = args[1]
    elif kind == "entry type":
        fqn = choose(entries, args[0])
        if isinstance(entries[fqn], dcp_metadata.TensorStorageMetadata):
            entries[fqn] = dcp_metadata.BytesStorageMetadata()
        else:  # a 0-d tensor stored where the value is
            entries[fqn] = dcp_metadata.TensorStorageMetadata(
                dcp_metadata.TensorProperties(dtype=args[1]), torch.Size([]),
                [dcp_metadata.ChunkStorageMetadata(torch.Size([]), torch.Size([]))])
            storage[MetadataIndex(fqn, torch.Size([]))] = storage.pop(MetadataIndex(fqn))
    elif kind == "rename":
        old, new = choose(entries, args[0]), args[1]
        path = {"natural": natural_path(new), "flat": (new,), "none": None}[args[2]]
        rename(metadata, old, new, path)
    elif kind == "planner":
        metadata.planner_data[choose(entries, args[0])] = args[1]
    elif kind == "planner data":
        metadata.planner_data = args[0]
    elif kind == "drop entry":
        del entries[choose(entries, args[0])]
    elif kind == "add entry":
        source = choose(entries, args[0])
        entries[args[1]] = copy.deepcopy(entries[source])
        if args[2]:
            for index in [index for index in storage if index.fqn == source]:
                storage[MetadataIndex(args[1], index.offset)] = copy.copy(storage[index])
    elif kind == "field":
        setattr(metadata, args[0], args[1])
    elif kind == "whole":
        return args[0]
    return metadata


INDEX = st.integers(0, 99)
MUTATIONS = st.one_of(
    st.tuples(st.just("path"), INDEX, st.sampled_from(PATHS)),
    st.tuples(st.just("numbers"), INDEX, NUMBERS | st.just("keep"), NUMBERS | st.just("keep")),
    st.tuples(st.just("transform"), INDEX, st.sampled_from([["zstd"], [], None, "zstd", [1]])),
    st.tuples(st.just("drop storage"), INDEX),
    st.tuples(st.just("copy storage"), INDEX, st.sampled_from(NAMES)),
    st.tuples(st.just("rekey storage"), INDEX,
              st.sampled_from(["shifted", "model.w", (1, 2)]) | st.builds(MetadataIndex, st.sampled_from(NAMES))),
    st.tuples(st.just("replace storage"), INDEX, REPLACEMENTS),
    st.tuples(st.just("size"), INDEX, SIZES | st.sampled_from([None, (3, 4), [3, 4], 12])),
    st.tuples(st.just("chunks"), INDEX,
              st.sampled_from(["remove", "duplicate", "shift", "move", "resize", "beyond", "reverse",
                               "none", "tuple", "empty", "strings", "bare"]),
              INDEX, INDEX, st.integers(-3, 3) | st.sampled_from([2**40, 2**62])),
    st.tuples(st.just("dtype"), INDEX, st.sampled_from(DTYPES)),
    st.tuples(st.just("layout"), INDEX, st.sampled_from([torch.sparse_coo, torch.sparse_csr, None, "strided"])),
    st.tuples(st.just("properties"), INDEX, REPLACEMENTS),
    st.tuples(st.just("entry type"), INDEX, st.sampled_from(DTYPES[:9])),
    st.tuples(st.just("rename"), INDEX, st.sampled_from(NAMES), st.sampled_from(["natural", "flat", "none"])),
    st.tuples(st.just("planner"), INDEX,
              st.lists(PARTS, max_size=4).map(tuple) | st.lists(PARTS, max_size=4) | REPLACEMENTS),
    st.tuples(st.just("planner data"), REPLACEMENTS | st.just({"model.w": "model.w"})),
    st.tuples(st.just("drop entry"), INDEX),
    st.tuples(st.just("add entry"), INDEX, st.sampled_from(NAMES), st.booleans()),
    st.tuples(st.just("field"), st.sampled_from(["state_dict_metadata", "storage_data", "planner_data",
                                                 "storage_meta", "version"]), REPLACEMENTS),
    st.tuples(st.just("whole"), REPLACEMENTS),
)


def decoys(folder):
    """Files and links for forged paths to name: a shard copy in a subfolder, links to a shard
    outside, to /dev/zero and to the folder's own shard."""
    (folder / "sub").mkdir()
    shutil.copy(folder / "__0_0.distcp", folder / "sub" / "x")
    (folder / "link-outside").symlink_to(OUTSIDE / "shard.distcp")
    (folder / "link-zero").symlink_to("/dev/zero")
    (folder / "link-shard").symlink_to("__0_0.distcp")


@given(st.sampled_from(["model", "two-rank"]), st.lists(MUTATIONS, min_size=1, max_size=4),
       st.sampled_from([2, 4, 5]))
# what earlier campaigns found (tensor 3 of the model seed is "model.e", of shape (0, 3))
@example("model", [("whole", BareRecord(dcp_metadata.Metadata))], 2)
@example("model", [("path", 0, None)], 2)  # _StorageInfo pickles without its None fields
@example("model", [("rename", 7, "model", "none")], 2)
@example("model", [("rename", 2, "model.w.0", "natural")], 2)
@example("model", [("rename", 3, "model.w.0", "natural")], 2)
@example("model", [("rename", 7, "progress", "natural")], 2)
@example("model", [("size", 3, [0, 2**62, 2**62]), ("chunks", 3, "empty", 0, 0, 0)], 2)
@example("model", [("dtype", 3, torch.qint8)], 2)
@example("model", [("dtype", 3, torch.uint1)], 2)
@keep_going
def test_forged_metadata(seed, changes, protocol):
    metadata = copy.deepcopy(seed_metadata(seed))
    for spec in changes:
        try:
            metadata = mutate(metadata, spec)
        except Exception:  # the change does not apply to what earlier ones left: skip it
            event("a change did not apply")
    try:
        data = pickle.dumps(metadata, protocol=protocol)
    except Exception:
        assume(False)  # something pickle itself cannot write
    folder = fresh_case(seed)
    decoys(folder)
    (folder / ".metadata").write_bytes(data)
    check_folder(folder, seed)


# --------------------------------------------------------------------------- damaged shards

@st.composite
def damaged_shards(draw):
    """``(seed, shard file, how, what)``: one shard file of a seed folder changed."""
    seed = draw(st.sampled_from(["model", "two-rank"]))
    folder = seeds()[seed][0]
    shard = draw(st.sampled_from(sorted(path.name for path in folder.glob("*.distcp"))))
    how = draw(st.sampled_from(["bytes", "swap", "torch.save", "region", "link", "folder", "missing"]))
    what = None
    if how == "bytes":
        what = damage(draw, (folder / shard).read_bytes(), seed_bytes())
    elif how == "swap":  # the other rank's file, or one of the other seed
        what = draw(st.sampled_from(sorted(set(seed_bytes()) - {f"{seed}/{shard}"})))
    elif how == "torch.save":  # a real archive, but not what the metadata describes
        shape = draw(st.lists(st.integers(0, 4), max_size=3))
        what = draw(st.sampled_from([torch.zeros(shape), torch.ones(shape, dtype=torch.int64), Payload(),
                                     seeds()[seed][1], {"w": torch.zeros(3, 4)}, [1, 2], 7]))
    elif how == "region":  # the bytes of one stored piece over those of another of the same length
        storage = list(seed_metadata(seed).storage_data.values())
        target = draw(st.sampled_from(storage))
        what = (draw(st.sampled_from([info for info in storage if info.length == target.length])), target)
    elif how == "link":
        what = draw(st.sampled_from(["/dev/zero", str(OUTSIDE / "shard.distcp"), "missing", ".metadata", "."]))
    event(f"shard: {how}")
    return seed, shard, how, what


@given(damaged_shards())
@keep_going
def test_damaged_shards(case):
    seed, shard, how, what = case
    folder = fresh_case(seed)
    path = folder / shard
    intact = False
    if how == "bytes":
        path.write_bytes(what)
    elif how == "swap":
        path.write_bytes(seed_bytes()[what])
    elif how == "torch.save":
        torch.save(what, path)
    elif how == "region":
        source, target = what
        files = {name: bytearray((folder / name).read_bytes()) for name in ("__0_0.distcp", "__1_0.distcp")
                 if (folder / name).exists()}
        data = files[target.relative_path]
        data[target.offset:target.offset + target.length] = \
            files[source.relative_path][source.offset:source.offset + source.length]
        (folder / target.relative_path).write_bytes(bytes(data))
        intact = source == target
    elif how == "link":
        path.unlink()
        path.symlink_to(what)
    elif how == "folder":
        path.unlink()
        path.mkdir()
    else:
        path.unlink()
    check_folder(folder, seed, shards_intact=intact)


# --------------------------------------------------------------------------- the latest pointer

def complete(folder, sentinel=True):
    """A folder that counts as a complete checkpoint (it has a .metadata), with a file that
    must survive whatever happens to the links pointing at it."""
    folder.mkdir(parents=True)
    (folder / ".metadata").write_bytes(b"metadata")
    if sentinel:
        (folder / "sentinel").write_text(folder.name)
    return folder


def fresh_root(name):
    root = FOLDER / name
    if os.path.lexists(root):
        shutil.rmtree(root)
    root.mkdir()
    return root


# The step folders of the pointer tests: the canonical names of real complete folders are the
# only ones a pointer may name.
VALID = ["step-000010", "step-000020"]
POINTED = VALID + ["step-000030", "step-000040", "step-000050", "step-000060", "step-0000070",
                   "step-000099", "step-000010/", "./step-000010", "../step-000010", " step-000010\n\n",
                   "step-000010\x00", "step-0000010", "step-10", "STEP-000010", "step-000010 step-000020",
                   "step-１２３４５６", "step-٠٠٠٠١٠", "step-000000000000000010", "outside", "latest", ""]


def pointer_root():
    root = fresh_root("pointer-root")
    for name in VALID:
        complete(root / name)
    (root / "step-000030").mkdir()                                    # incomplete
    (root / "step-000040").symlink_to("step-000010")                   # a link to a real one
    (root / "step-000050").symlink_to(complete(FOLDER / "pointer-outside", sentinel=False)
                                      if not (FOLDER / "pointer-outside").exists()
                                      else FOLDER / "pointer-outside")  # a link outside
    (root / "step-000060").write_bytes(b"not a folder")
    complete(root / "step-0000070")                                    # a non-canonical spelling
    return root


@given(st.sampled_from(["file", "link to /dev/zero", "link to a file outside", "folder", "link to a folder"]),
       st.sampled_from(VALID).map(str.encode) | st.sampled_from(POINTED).map(str.encode) | st.binary(max_size=200)
       | st.text(max_size=80).map(str.encode) | st.integers(65, 10**5).map(lambda n: b"step-000010" * n),
       st.sampled_from([b"", b"\n", b"\r\n", b"  \t"]))
@example("folder", b"step-000010", b"")
@keep_going
def test_the_latest_pointer(kind, content, ending):
    root = pointer_root()
    pointer = root / "latest"
    content += ending
    if kind == "file":
        pointer.write_bytes(content)
    elif kind == "link to /dev/zero":
        pointer.symlink_to("/dev/zero")
    elif kind == "link to a file outside":
        (OUTSIDE / "pointer").write_bytes(content)
        pointer.symlink_to(OUTSIDE / "pointer")
    elif kind == "folder":
        pointer.mkdir()
    else:
        pointer.symlink_to("step-000010")
    readable = kind in ("file", "link to a file outside")  # what may name a folder at all
    accepted, folder = attempt("latest_checkpoint",
                               lambda: distributed_checkpoints.latest_checkpoint(root), pointer)
    if accepted:
        assert readable and folder is not None and folder.parent == root and folder.name in VALID
        assert content.decode("utf-8", "replace").strip() == folder.name
    elif kind == "file" and len(content) <= 64 and content.decode("utf-8", "replace").strip() in VALID:
        raise AssertionError(f"a pointer holding {content!r} names a complete step folder but was refused")
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [*VALID, "step-000030", "step-000040", "step-000050", "step-000060", "step-0000070", "latest"])


# --------------------------------------------------------------------------- prune

KINDS = ["complete", "incomplete", "link to a complete folder inside", "link to a folder outside",
         "broken link", "file", "fifo"]
SPELLINGS = ["step-{:06d}", "step-{:07d}", "step-{}", "Step-{:06d}", "step-{:06d}.old"]


def canonical_step(name):
    """The step of a canonical step-folder name (the model of the rules, not the code)."""
    digits = name[len("step-"):]
    if name.startswith("step-") and digits.isascii() and digits.isdigit() and 6 <= len(digits) <= 12 \
            and name == f"step-{int(digits):06d}":
        return int(digits)
    return None


def snapshot(top):
    """Every path under ``top`` (links not followed), with what it is and, for files, the content."""
    found = {}
    for folder, subfolders, files in os.walk(top):  # os.walk does not follow links
        for name in [*subfolders, *files]:
            path = os.path.join(folder, name)
            mode = os.lstat(path).st_mode
            found[path] = (Path(path).read_bytes() if stat.S_ISREG(mode)
                           else os.readlink(path) if stat.S_ISLNK(mode) else stat.S_IFMT(mode))
    return found


@given(st.dictionaries(st.tuples(st.sampled_from([1, 2, 3, 5, 8, 13, 21]), st.sampled_from(SPELLINGS))
                       .map(lambda pair: pair[1].format(pair[0])), st.sampled_from(KINDS), max_size=7),
       st.none() | st.integers(0, 20) | st.binary(max_size=20), st.integers(1, 4))
@keep_going
def test_prune(entries, latest, keep):
    """prune deletes exactly the old and unfinished step folders, never the one latest names,
    never anything outside the root, never through a link; or it raises CheckpointError."""
    root = fresh_root("prune-root")
    outside = fresh_root("prune-outside")
    (outside / "keep-me").write_text("outside")
    (root / "notes").mkdir()
    (root / "notes" / "keep-me").write_text("not a step folder")
    for name, kind in entries.items():
        path = root / name
        if kind == "complete":
            complete(path)
            (path / "escape").symlink_to(outside)  # rmtree must delete the link, not follow it
        elif kind == "incomplete":
            path.mkdir()
            (path / "__0_0.distcp").write_bytes(b"shards")
        elif kind == "link to a complete folder inside":
            target = sorted(n for n, k in entries.items() if k == "complete") or ["notes"]
            path.symlink_to(target[0])
        elif kind == "link to a folder outside":
            path.symlink_to(outside)
        elif kind == "broken link":
            path.symlink_to("missing")
        elif kind == "file":
            path.write_bytes(b"not a folder")
        else:
            os.mkfifo(path)
    if isinstance(latest, int):  # the name of one of the entries
        latest = choose(entries, latest)
    if latest is not None:
        (root / "latest").write_bytes(latest if isinstance(latest, bytes) else f"{latest}\n".encode())
    before, outside_before = snapshot(root), snapshot(outside)

    # the model: which folders prune should delete
    valid = isinstance(latest, str) and canonical_step(latest) is not None and entries[latest] == "complete"
    folders = sorted((name for name, kind in entries.items() if canonical_step(name) is not None
                      and kind in ("complete", "incomplete", "link to a complete folder inside",
                                   "link to a folder outside")), key=canonical_step)
    accepted, deleted = attempt("prune", lambda: distributed_checkpoints.prune(root, keep), root)
    assert snapshot(outside) == outside_before, "prune changed something outside the root"
    if latest is None or not valid:
        assert accepted == (latest is None) and not deleted, \
            f"prune with a pointer holding {latest!r} ({entries.get(latest)}): {accepted}, {deleted}"
        assert snapshot(root) == before, "prune refused, or had nothing to do, but deleted something"
        return
    assert accepted, f"prune refused a pointer to {latest!r}, a complete step folder"
    newest = canonical_step(latest)
    kept = {latest, *[name for name in folders if canonical_step(name) <= newest][-keep:]}
    expected = {name for name in folders if name not in kept}
    assert {path.name for path in deleted} == expected
    assert all(path.parent == root for path in deleted)
    for name in expected:
        assert not os.path.lexists(root / name)
    after = snapshot(root)
    gone = {path for path in before if any(path == str(root / name) or path.startswith(f"{root / name}/")
                                           for name in expected)}
    assert after == {path: what for path, what in before.items() if path not in gone}, \
        "prune changed something besides the folders it deleted"


# --------------------------------------------------------------------------- hostile pickles, pipes

# Run in one separate interpreter, which forks once per case: a case that crashes the
# interpreter, hangs on a pipe or changes the interpreter's state (a class attribute, a
# function's cache) can reach neither the test process nor the next case. Each child reports,
# for every reader, what it raised, whether the payload ran, whether a refused load changed the
# state dict, which allowed global's attributes changed, and whether a real folder still loads.
WORKER = r'''
import json, os, resource, signal, sys, time, traceback
sys.path[:0] = [os.path.join(REPO, "tests"), REPO]  # tests/conftest.py, not the root one
import torch
torch.set_num_threads(1)
from saveload_lessons import distributed_checkpoints
from saveload_lessons.checkpoint_io import CheckpointError
from conftest import assert_identical
job = json.load(sys.stdin)


pristine = job["pristine"]
expected = torch.load(job["expected"], weights_only=True)
torch.serialization._get_layout("torch.strided")  # fill its cache, as any load does


def fingerprint():
    """The attributes of every global the metadata unpickler allows, and of their classes."""
    objects = set()
    for value in distributed_checkpoints._METADATA_GLOBALS.values():
        objects.add(value)
        objects.update(getattr(value, "__mro__", ()))
    found = {}
    for value in objects:
        attributes = getattr(value, "__dict__", None)
        if attributes is None:
            continue
        for key, item in dict(attributes).items():
            snapshot = dict(item) if type(item) is dict else item
            found[f"{getattr(value, '__qualname__', value)}.{key}"] = (id(item), repr(snapshot)[:200])
    return found


def limit_memory(extra=2 * 2**30):
    """As the test process does: at most 2 GB more address space, then a MemoryError."""
    with open("/proc/self/status") as file:
        used = int(file.read().split("VmSize:")[1].split()[0]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (used + extra, resource.getrlimit(resource.RLIMIT_AS)[1]))


def run(op, folder, out):
    start = time.monotonic()
    record = {"op": op}
    target = torch.load(job["target"], weights_only=True)
    try:
        if op == "check_metadata":
            distributed_checkpoints.check_metadata(folder)
        elif op == "load":
            distributed_checkpoints.load(target, folder)
        elif op == "to_single_file":
            distributed_checkpoints.to_single_file(folder, out)
        elif op == "latest_checkpoint":
            distributed_checkpoints.latest_checkpoint(folder)
        elif op == "prune":
            distributed_checkpoints.prune(folder, 1)
        record["outcome"] = "accepted"
    except CheckpointError as err:
        record["outcome"], record["message"] = "CheckpointError", str(err)[:600]
        if op == "load":
            try:
                assert_identical(target, torch.load(job["target"], weights_only=True))
            except AssertionError as difference:
                record["target_changed"] = str(difference)
    except BaseException as err:
        record["outcome"], record["message"] = type(err).__name__, str(err)[:600]
        record["traceback"] = traceback.format_exc()[-1500:]
    record["seconds"] = time.monotonic() - start
    record["payload_ran"] = os.path.exists(job["marker"])
    return record


before = fingerprint()
results = {}
for case in job["cases"]:
    report = os.path.join(case["folder"] + ".json")
    pid = os.fork()
    if pid == 0:
        try:
            torch.load(job["target"], weights_only=True)  # what every case needs, loaded before the limit
            limit_memory()
            records = [run(op, case["folder"], case["folder"] + ".pt") for op in case["ops"]]
            after = fingerprint()
            changed = sorted(key for key in set(before) | set(after) if before.get(key) != after.get(key))
            try:  # does a real folder still load as it should?
                target = torch.load(job["target"], weights_only=True)
                distributed_checkpoints.check_metadata(pristine)
                distributed_checkpoints.load(target, pristine)
                assert_identical(target, expected)
                still_works = "yes"
            except BaseException as err:
                still_works = f"{type(err).__name__}: {str(err)[:300]}"
            with open(report, "w") as file:
                json.dump({"records": records, "changed_globals": changed, "still_works": still_works}, file)
        finally:
            os._exit(0)
    deadline = time.monotonic() + case["timeout"]
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            status = "timeout"
            break
        time.sleep(0.01)
    if status == "timeout" or not os.path.exists(report):
        results[case["name"]] = {"died": status if status == "timeout" else f"wait status {status}"}
    else:
        with open(report) as file:
            results[case["name"]] = json.load(file)
print(json.dumps(results))
'''


def _text(value):
    data = value.encode() if isinstance(value, str) else value
    return b"X" + len(data).to_bytes(4, "little") + data


def stack_global(module, name, argument, protocol=4):
    """Push module and name, STACK_GLOBAL, call it with one string argument."""
    return bytes([0x80, protocol]) + _text(module) + _text(name) + b"\x93" + _text(argument) + b"\x85R."


def global_op(module, name, argument):
    """GLOBAL ("c module\\n name\\n") under protocol 2, called with one argument."""
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + _text(argument) + b"\x85R."


def inst(module, name, argument):
    """INST: MARK, the argument, then "i module\\n name\\n" calls the global with it (protocol 0)."""
    return b"(V" + argument.encode("raw_unicode_escape") + b"\ni" + f"{module}\n{name}\n".encode() + b"."


def obj(module, name, argument):
    """OBJ: MARK, the global, the argument, OBJ."""
    return b"\x80\x02(c" + f"{module}\n{name}\n".encode() + _text(argument) + b"o."


def metadata_body(metadata, protocol=2):
    """A metadata pickle without its PROTO opcode, to follow other opcodes."""
    data = pickle.dumps(metadata, protocol=protocol)
    assert data[:2] == bytes([0x80, protocol])
    return data[2:]


def build_on(module, name, state=None, slots=None):
    """Push a global, BUILD it with ``state`` (its __dict__) and ``slots`` (set with setattr),
    pop it: opcodes that change an object the unpickler allows instead of making a new one.
    The values of both dicts are strings, or bytes: the opcodes that push the value."""
    def push(items):
        if items is None:
            return b"N"
        return b"}(" + b"".join(_text(key) + (_text(value) if isinstance(value, str) else value)
                                for key, value in items.items()) + b"u"
    arguments = push(state) if slots is None else push(state) + push(slots) + b"\x86"
    return b"c" + f"{module}\n{name}\n".encode() + arguments + b"b0"


DCP = "torch.distributed.checkpoint.metadata"
DEEP = 200_000


def traversal_metadata():
    """The model seed's metadata reduced to one tensor, stored in ``../secret.pt`` (outside)."""
    metadata = copy.deepcopy(seed_metadata("model"))
    index = MetadataIndex("model.b", torch.Size([0]))
    info = metadata.storage_data[index]
    info.relative_path, info.offset, info.length = "../outside/secret.pt", 0, (OUTSIDE / "secret.pt").stat().st_size
    metadata.state_dict_metadata = {"model.b": metadata.state_dict_metadata["model.b"]}
    metadata.storage_data, metadata.planner_data = {index: info}, {"model.b": ("model", "b")}
    return metadata


COMMAND = f"touch {MARKER}"
CODE = f"open({str(MARKER)!r}, 'w').close()"
SELF_READERS = ["check_metadata", "load", "to_single_file"]
POINTER_READERS = ["latest_checkpoint", "prune"]

# The .metadata of each hostile case, made when the case runs (it may need the seed folders).
HOSTILE_PICKLES = {
    "payload, protocol 0": lambda: pickle.dumps(Payload(), protocol=0),
    "payload, protocol 2": lambda: pickle.dumps(Payload(), protocol=2),
    "payload, protocol 5": lambda: pickle.dumps(Payload(), protocol=5),
    "payload inside real metadata": lambda: pickle.dumps(
        dataclasses.replace(seed_metadata("model"), version=Payload()), protocol=4),
    "dotted os.system, STACK_GLOBAL": lambda: stack_global(DCP, "os.system", COMMAND),
    "dotted os.system, GLOBAL": lambda: global_op(DCP, "os.system", COMMAND),
    "dotted os.system, INST": lambda: inst(DCP, "os.system", COMMAND),
    "os.system, INST": lambda: inst("os", "system", COMMAND),
    "dotted os.system, OBJ": lambda: obj(DCP, "os.system", COMMAND),
    "copyreg._reconstructor": lambda: stack_global("copyreg", "_reconstructor", COMMAND),
    "copyreg.__newobj__": lambda: stack_global("copyreg", "__newobj__", COMMAND),
    "torch.load": lambda: stack_global("torch", "load", str(MARKER)),
    "pathlib.os": lambda: stack_global("pathlib", "os", COMMAND),
    "pathlib os.system": lambda: stack_global("pathlib", "os.system", COMMAND),
    "collections._sys": lambda: stack_global("collections", "_sys", COMMAND),
    "collections _sys.modules": lambda: stack_global("collections", "_sys.modules", COMMAND),
    "torch Size.__new__": lambda: stack_global("torch", "Size.__new__", COMMAND),
    "Metadata.__init__.__globals__": lambda: stack_global(DCP, "Metadata.__init__.__globals__", COMMAND),
    "filesystem pickle.loads": lambda: stack_global("torch.distributed.checkpoint.filesystem",
                                                    "pickle.loads", COMMAND),
    "_get_layout.__globals__": lambda: stack_global("torch.serialization", "_get_layout.__globals__", COMMAND),
    "builtins.exec": lambda: stack_global("builtins", "exec", CODE),
    "__builtin__.eval, protocol 2": lambda: global_op("__builtin__", "eval", CODE),
    "posix.system": lambda: global_op("posix", "system", COMMAND),
    "subprocess.getoutput": lambda: stack_global("subprocess", "getoutput", COMMAND),
    "extension code": lambda: b"\x80\x02\x82\x01" + _text(COMMAND) + b"\x85R.",
    "persistent id, BINPERSID": lambda: b"\x80\x02" + _text("x") + b"Q.",
    "persistent id, PERSID": lambda: b"Px\n.",
    # deep enough to crash an interpreter that hashes, compares or prints them recursively
    "lists nested 200,000 deep": lambda: b"(" * DEEP + b"l" * DEEP + b".",
    "tuples nested 200,000 deep": lambda: b"\x80\x02)" + b"\x85" * DEEP + b".",
    "dicts nested 200,000 deep": lambda: b"\x80\x02" + (b"(" + _text("k")) * DEEP + b"}" + b"d" * DEEP + b".",
    "a dict key nested 200,000 deep": lambda: b"\x80\x04})" + b"\x85" * DEEP + b"K\x01s.",
    "global name of 10**6 characters": lambda: b"\x80\x04" + _text("torch") + _text("x" * 10**6) + b"\x93.",
    "module name of 10**5 characters, GLOBAL": lambda: b"\x80\x02c" + b"a" * 10**5 + b"\nb\n.",
    "memo index 2**32 - 1": lambda: b"\x80\x02j\xff\xff\xff\xff.",
    # LONG_BINPUT: the C unpickler grows its memo array to twice the index (16 bytes each)
    "memo entry 10**9 (LONG_BINPUT)": lambda: b"\x80\x02Nr" + (10**9).to_bytes(4, "little") + b".",
    "memo entry 10**9 inside real metadata": lambda: (
        b"\x80\x02Nr" + (10**9).to_bytes(4, "little") + b"0" + metadata_body(seed_metadata("model"))),
    "string longer than the file": lambda: b"\x80\x02X\xff\xff\xff\x7fabc",
    "BUILD on pathlib classes, then a path outside": lambda: (
        b"\x80\x02" + build_on("pathlib", "PurePosixPath", None, {"name": "../outside/secret.pt"})
        + build_on("pathlib", "PureWindowsPath", None, {"name": "../outside/secret.pt"})
        + metadata_body(traversal_metadata())),
    "BUILD on _get_layout's cache": lambda: (
        b"\x80\x02" + build_on("torch.serialization", "_get_layout",
                               {"cache": b"}" + _text("torch.strided") + _text("x") + b"s"})
        + metadata_body(seed_metadata("model"))),
    "BUILD on MetadataIndex's __hash__": lambda: (
        b"\x80\x02" + build_on(DCP, "MetadataIndex", None, {"__hash__": b"N"})
        + metadata_body(seed_metadata("model"))),
    "BUILD on Metadata's defaults": lambda: (
        b"\x80\x02" + build_on(DCP, "Metadata", None, {"planner_data": b"}"})
        + metadata_body(seed_metadata("model"))),
    "BUILD on a dtype": lambda: (b"\x80\x02" + build_on("torch", "float32", None, {"itemsize": b"Kd"})
                                 + metadata_body(seed_metadata("model"))),
    "BUILD on OrderedDict": lambda: (b"\x80\x02" + build_on("collections", "OrderedDict", None, {"x": b"N"})
                                     + metadata_body(seed_metadata("model"))),
    "Metadata without its fields (NEWOBJ, no BUILD)": lambda: pickle.dumps(Bare(dcp_metadata.Metadata),
                                                                           protocol=2),
}


def metadata_is(kind):
    def make(folder):
        path = folder / ".metadata"
        data = path.read_bytes()
        path.unlink()
        if kind == "pipe":
            os.mkfifo(path)
        elif kind == "folder":
            path.mkdir()
        elif kind == "300 MB":
            path.write_bytes(data)
            os.truncate(path, 300 * 2**20)  # sparse: no disk space used
        else:
            path.symlink_to(kind)
    return make


def shard_is(kind):
    def make(folder):
        path = folder / "__0_0.distcp"
        path.unlink()
        os.mkfifo(path) if kind == "pipe" else path.symlink_to(kind)
    return make


def pointer_is(kind):
    def make(folder):
        for path in list(folder.iterdir()):  # a checkpoint root with one complete step folder
            path.unlink()
        complete(folder / "step-000010")
        os.mkfifo(folder / "fifo")
        os.mkfifo(folder / "latest") if kind == "pipe" else (folder / "latest").symlink_to(kind)
    return make


# Every hostile case: how to make the folder from a copy of the model seed, and what to call.
HOSTILE = {
    **{name: (make, SELF_READERS) for name, make in HOSTILE_PICKLES.items()},
    ".metadata is a pipe": (metadata_is("pipe"), SELF_READERS),
    ".metadata is a folder": (metadata_is("folder"), SELF_READERS),
    ".metadata is a link to /dev/zero": (metadata_is("/dev/zero"), SELF_READERS),
    ".metadata is a link to a pipe": (metadata_is(str(OUTSIDE / "fifo")), SELF_READERS),
    ".metadata of 300 MB (sparse)": (metadata_is("300 MB"), SELF_READERS),
    "the shard is a pipe": (shard_is("pipe"), SELF_READERS),
    "the shard is a link to /dev/zero": (shard_is("/dev/zero"), SELF_READERS),
    "the shard is a link to a pipe": (shard_is(str(OUTSIDE / "fifo")), SELF_READERS),
    "latest is a pipe": (pointer_is("pipe"), POINTER_READERS),
    "latest is a link to a pipe": (pointer_is("fifo"), POINTER_READERS),
    "latest is a link to /dev/zero": (pointer_is("/dev/zero"), POINTER_READERS),
}


@pytest.fixture(scope="module")
def isolated():
    """What each hostile case did, run in the worker interpreter: ``{name: report}``."""
    seed_folder, state = seeds()["model"]
    if not os.path.lexists(OUTSIDE / "fifo"):
        os.mkfifo(OUTSIDE / "fifo")
    torch.save(fill(state), FOLDER / "target.pt")
    torch.save(state, FOLDER / "expected.pt")
    jobs = []
    for number, (name, (make, readers)) in enumerate(HOSTILE.items()):
        folder = FOLDER / f"hostile-{number}"
        shutil.copytree(seed_folder, folder)
        if name in HOSTILE_PICKLES:
            (folder / ".metadata").write_bytes(make())
        else:
            make(folder)
        jobs.append({"name": name, "folder": str(folder), "ops": readers, "timeout": 4 * SECONDS})
    job = {"cases": jobs, "pristine": str(seed_folder), "marker": str(MARKER),
           "target": str(FOLDER / "target.pt"), "expected": str(FOLDER / "expected.pt")}
    result = subprocess.run([sys.executable, "-c", f"REPO = {str(REPO)!r}\n" + WORKER], cwd=FOLDER,
                            input=json.dumps(job), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_folders_in_a_separate_process(isolated, name):
    report = isolated[name]
    assert "died" not in report, f"the reader crashed or hung: {report['died']}"
    for record in report["records"]:
        assert record["outcome"] == "CheckpointError", (
            f"{record['op']}: {record['outcome']} {record.get('message', '')}\n{record.get('traceback', '')}")
        assert "MemoryError" not in record["message"], f"{record['op']} needed more than 2 GB: {record['message']}"
        assert not record["payload_ran"], f"{record['op']} ran the planted payload"
        assert "target_changed" not in record, f"a refused load changed the state dict: {record['target_changed']}"
        assert record["seconds"] < SECONDS, f"{record['op']} took {record['seconds']:.1f} s"
    assert not report["changed_globals"], (
        f"reading the folder changed the interpreter's state: {report['changed_globals']}")
    assert report["still_works"] == "yes", f"afterwards, a real folder no longer loads: {report['still_works']}"


def test_refusing_a_metadata_takes_time_in_proportion_to_its_size():
    """check_metadata reads up to MAX_METADATA_BYTES of opcodes before it can tell harmless
    ones from metadata: its time must grow with the size, not faster (a ratio measured in
    one run, so that the machine's speed does not matter)."""
    def seconds(size):
        folder = fresh_case("model")
        (folder / ".metadata").write_bytes(b"\x80\x02" + b"N0" * (size // 2) + b"N.")
        start = time.monotonic()
        with pytest.raises(CheckpointError):
            distributed_checkpoints.check_metadata(folder)
        return time.monotonic() - start

    small, large = min(seconds(2**19) for _ in range(2)), min(seconds(2**21) for _ in range(2))
    assert large < 8 * small, f"4 times the size took {large / small:.1f} times as long"
