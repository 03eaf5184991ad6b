"""Checkpoint files: writing them so that a crash never leaves half a file, and reading them safely.

Two formats are written:

- ``save_checkpoint``: a general checkpoint, a ``torch.save`` dictionary with
  a format tag, the model's architecture, the model's and the optimizer's
  ``state_dict``, the random-number-generator states and any training state
  (plain numbers, strings, lists, dicts and tensors only);
- ``save_safetensors``: the weights alone as safetensors, with the
  architecture as JSON in the file's metadata.

``load_checkpoint`` reads both, as well as the classic course's checkpoints
and bare ``state_dict`` files, and returns them all as one kind of
dictionary. It never unpickles arbitrary Python objects (``torch.load`` runs
with ``weights_only=True``), and turns every file it cannot use into a
``CheckpointError`` that names the file. ``restore`` copies a checkpoint into
an existing model and optimizer.

A model's ``architecture`` is the dictionary of arguments that rebuilds it,
for example ``fc_model.Network(**architecture)``. This module knows no model:
what it needs to know about one kind (its format tags, which architectures
are valid, the tensors each one has) comes in a ``ModelSpec`` that the
model's own module defines, such as ``fc_model.NETWORK``. It stores and
checks architectures but builds no model itself.
"""

import contextlib
import io
import json
import os
import pickle
import pickletools
import stat
import struct
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
import torch

from saveload_lessons.devices import check_device
from saveload_lessons.files import atomic_write
from saveload_lessons.messages import say
from saveload_lessons.values import is_count, quote

# The prefixes that wrappers put in front of every key of a model's state_dict.
WRAPPER_PREFIXES = {"module.": ("nn.DataParallel and DistributedDataParallel",
                                "nn.DataParallel 和 DistributedDataParallel"),
                    "_orig_mod.": ("torch.compile", "torch.compile")}


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class ModelSpec:
    """What this module needs to know about one kind of model to save and read its files.

    The model's module defines it (``fc_model.NETWORK``), and a model carries it
    as its ``spec`` attribute, next to its ``architecture``.

    Attributes:
        name: how messages name the model, such as ``"fc_model.Network"``.
        checkpoint_format: the format tag of its general checkpoints.
        safetensors_format: the format tag in the metadata of its safetensors files.
        check_architecture: takes an architecture (a dict) and returns it as plain
            values, defaults filled in; raises ``ValueError``, saying what is wrong,
            for one that builds no model.
        tensor_shapes: takes a checked architecture and returns ``{name: shape}`` for
            every tensor of the model's ``state_dict``.
        architecture_from_weights: takes a ``state_dict`` of tensors and returns the
            architecture its shapes imply, or None when they are not this model's
            (for files that hold weights alone); raises ``ValueError`` for tensors
            named like the model's that cannot be.
        legacy_keys: the keys of an older kind of checkpoint that holds the
            architecture's values at its top level beside a ``"state_dict"`` (the
            classic course's), or ``()`` when there is none.
    """
    name: str
    checkpoint_format: str
    safetensors_format: str
    check_architecture: Callable
    tensor_shapes: Callable
    architecture_from_weights: Callable
    legacy_keys: tuple = ()


def rng_state():
    """The random-number-generator states that training uses (CPU, and CUDA if present)."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    """Restore states returned by ``rng_state``, wherever ``map_location`` put them
    (``check_rng_state`` makes sure they will be accepted). The states of GPUs this
    machine lacks are left out."""
    torch.set_rng_state(state["cpu"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"][:torch.cuda.device_count()]])


def general_checkpoint(model, optimizer=None, **training_state):
    """A general checkpoint of ``model`` (which has an ``architecture`` and a ``spec``, as
    ``fc_model.Network`` has), as a dict.

    It holds the format tag, the architecture, the model's and the optimizer's
    ``state_dict``, the current random-number-generator states, and
    ``training_state`` (for example ``epoch=1, step=938, loss=0.42``): plain
    numbers, strings, lists, dicts and tensors only, so that it loads with
    ``weights_only=True``.
    """
    return {
        "format": model.spec.checkpoint_format,
        "architecture": model.architecture,
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": None if optimizer is None else optimizer.state_dict(),
        "rng": rng_state(),
        **training_state,
    }


def save_checkpoint(path, model, optimizer=None, **training_state):
    """Save ``general_checkpoint(model, optimizer, **training_state)`` at ``path``, atomically."""
    checkpoint = general_checkpoint(model, optimizer, **training_state)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as file:
        torch.save(checkpoint, file)


def save_safetensors(path, model):
    """Save the weights of ``model`` as safetensors, atomically.

    The architecture goes into the file's string metadata (as JSON), so
    ``load_checkpoint`` can tell how to rebuild the model from the file
    alone. A safetensors file holds tensors and strings only: no optimizer
    state, no Python objects, nothing that runs code when loaded.
    """
    metadata = {"format": model.spec.safetensors_format, "architecture": json.dumps(model.architecture)}
    tensors = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as file:
        file.write(safetensors.torch.save(tensors, metadata=metadata))


# --------------------------------------------------------------------------- inspecting before unpickling

# What a pickle may ask of the unpickler. A checkpoint nests containers a few levels deep
# and names globals such as "torch._utils._rebuild_tensor_v2"; a hostile file can nest a
# million levels (Python crashes hashing or printing it) or name a 100 KB global (torch's
# error message then takes minutes to write). Both are refused before unpickling.
MAX_PICKLE_NESTING = 100
MAX_GLOBAL_NAME = 200
# Integers: Python hashes an integer modulo 2**61 - 1, so a file can hold thousands of large
# integers with one hash, as keys that make building a dict take quadratic time; and an
# integer of more than 4300 digits cannot even be printed. A checkpoint holds few large ones.
MAX_LARGE_INTEGERS, LARGE_INTEGER = 1000, 2**61 - 1
MAX_INTEGER_BITS = 10_000
# A torch.save archive stores its entries uncompressed. A compressed entry may expand to at
# most this many times its size on disk, so that a small file cannot cost gigabytes.
MAX_INFLATION = 4

_MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"}
_MEMO_GETS = {"GET", "BINGET", "LONG_BINGET"}
_IN_PLACE = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"}  # fill a container
_EMPTY_CONTAINERS = {"EMPTY_DICT", "EMPTY_LIST", "EMPTY_SET"}
_STRINGS = {"UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8",
            "STRING", "BINSTRING", "SHORT_BINSTRING"}
_NEW_INSTANCES = {"NEWOBJ", "NEWOBJ_EX", "OBJ", "INST"}  # cls.__new__(cls, ...): a fresh object


class _Global(tuple):
    """A (module, name) that a pickle pushes on its stack: a class or a function, never new."""


class _PickleGraph:
    """What a pickle would build, read off its opcodes (``pickletools``) without building it:
    which container holds which, and the globals it names. Nothing is unpickled."""

    def __init__(self):
        self.children = []   # children[node]: the nodes a container holds
        self.globals = []    # (module, name) pairs, as written in the file
        self.instances = set()       # the nodes NEWOBJ, OBJ or INST create: new objects
        self.large_integers, self.integer_bits = 0, 0
        self.state_set_on = []       # what BUILD gives state to, when it is not such an object
        self.stack, self.marks, self.memo = [], [], {}

    def node(self, items=()):
        self.children.append([item for item in items if type(item) is int])
        return len(self.children) - 1

    def pop(self, before):
        """Take the items an opcode consumes (``before``, pickletools' notation) off the stack."""
        if pickletools.markobject in before:
            mark = self.marks.pop()                     # IndexError: no MARK to go back to
            prefix = before.index(pickletools.markobject)
            items = self.stack[mark - prefix:]
            if mark < prefix:
                raise IndexError("stack underflow")
        else:
            if len(before) > len(self.stack):
                raise IndexError("stack underflow")
            items = self.stack[len(self.stack) - len(before):]
        del self.stack[len(self.stack) - len(items):]
        return items

    def read(self, data):
        for count, (op, arg, _) in enumerate(pickletools.genops(data)):
            name = op.name
            if isinstance(arg, int) and not isinstance(arg, bool):
                self.large_integers += abs(arg) >= LARGE_INTEGER
                self.integer_bits = max(self.integer_bits, arg.bit_length())
            if name == "MARK":
                self.marks.append(len(self.stack))
            elif name in _MEMO_PUTS:
                index = len(self.memo) if arg is None else arg
                if index > count:  # the unpickler would allocate a memo table this long
                    raise ValueError(f"memo index {index:,} at opcode {count:,}")
                self.memo[index] = self.stack[-1]
            elif name in _MEMO_GETS:
                self.stack.append(self.memo[arg])      # KeyError: a memo entry never stored
            elif name == "GLOBAL":
                self.globals.append(tuple(arg.split(" ", 1)))
                self.stack.append(_Global(self.globals[-1]))
            elif name == "STACK_GLOBAL":
                module, qualname = self.pop(op.stack_before)
                self.globals.append((module, qualname))
                self.stack.append(_Global((module, qualname)))
            elif name == "DUP":
                self.stack.append(self.stack[-1])
            else:
                if name == "INST":
                    self.globals.append(tuple(arg.split(" ", 1)))
                items = self.pop(op.stack_before)
                if not op.stack_after:
                    continue
                if name in _IN_PLACE:
                    if name == "BUILD" and items[0] not in self.instances:
                        self.state_set_on.append(items[0])
                    container = items[0] if type(items[0]) is int else self.node()
                    self.children[container] += [item for item in items[1:] if type(item) is int]
                    self.stack.append(container)
                elif name in _STRINGS:
                    self.stack.append(arg)
                elif items or name in _EMPTY_CONTAINERS or name == "INST":
                    self.stack.append(self.node(items))
                    if name in _NEW_INSTANCES:
                        self.instances.add(self.stack[-1])
                else:
                    self.stack.append(None)
        return self

    def nesting(self):
        """The deepest chain of containers inside containers (a cycle counts once)."""
        depth, state = [0] * len(self.children), [0] * len(self.children)  # 1 open, 2 done
        for root in range(len(self.children)):
            if state[root]:
                continue
            state[root], walk = 1, [(root, iter(self.children[root]))]
            while walk:
                node, remaining = walk[-1]
                child = next(remaining, None)
                if child is None:
                    depth[node] = 1 + max((depth[c] for c in self.children[node] if state[c] == 2),
                                          default=0)
                    state[node] = 2
                    walk.pop()
                elif not state[child]:
                    state[child] = 1
                    walk.append((child, iter(self.children[child])))
        return max(depth, default=0)


def check_pickle(data, source, state_only_for_new_objects=False):
    """Raise ``CheckpointError`` unless unpickling ``data`` (bytes) is safe to attempt.

    The opcodes are read with ``pickletools``, without unpickling anything:
    a damaged stream, a global name longer than ``MAX_GLOBAL_NAME``
    characters, or containers nested deeper than ``MAX_PICKLE_NESTING`` are
    refused. Which globals are *allowed* is the unpickler's business (for
    ``torch.load``, ``weights_only=True``); this check makes sure that no
    file can crash or stall the unpickler, or the code that prints its errors.
    Memo indices must not run ahead of the stream (a huge one makes the
    unpickler allocate gigabytes), and large integers must be few
    (``MAX_LARGE_INTEGERS``: thousands of them can share one hash and make
    building a dict take quadratic time) and printable.

    With ``state_only_for_new_objects``, BUILD (which sets an object's
    attributes) may only act on objects that the pickle itself creates with
    ``NEWOBJ``, ``OBJ`` or ``INST``: never on an allowed class or function,
    whose attributes would then change for the whole process. Plain
    ``pickle`` needs this; ``torch.load(weights_only=True)`` guards BUILD itself.

    Returns the ``(module, name)`` pairs the pickle names.
    """
    try:
        graph = _PickleGraph().read(data)
    except (ValueError, IndexError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{source} is damaged or not a pickle: its opcodes cannot be read "
                              f"({type(err).__name__}: {quote(str(err))})") from None
    for module, name in graph.globals:
        if not (isinstance(module, str) and isinstance(name, str)):
            raise CheckpointError(f"{source} names a global through {quote(module)} and "
                                  f"{quote(name)}, which are not strings: it is not a checkpoint")
        if len(module) + len(name) > MAX_GLOBAL_NAME:
            raise CheckpointError(f"{source} names a global of {len(module) + len(name):,} "
                                  f"characters ({quote(module)}.{quote(name)}); real ones have "
                                  f"fewer than {MAX_GLOBAL_NAME}: the file is damaged or hostile")
    if graph.integer_bits > MAX_INTEGER_BITS or graph.large_integers > MAX_LARGE_INTEGERS:
        raise CheckpointError(f"{source} holds {graph.large_integers:,} integers of 2**61 or more "
                              f"(the largest has {graph.integer_bits:,} bits): a checkpoint holds "
                              "few such numbers. The file is damaged or hostile")
    if state_only_for_new_objects and graph.state_set_on:
        target = graph.state_set_on[0]
        what = (f"{quote(target[0])}.{quote(target[1])}" if isinstance(target, _Global)
                else "an object it did not create")
        raise CheckpointError(f"{source} sets the attributes of {what}: only objects the file "
                              "creates itself may be given state. The file is damaged or hostile")
    nesting = graph.nesting()
    if nesting > MAX_PICKLE_NESTING:
        raise CheckpointError(f"{source} nests containers {nesting:,} levels deep (at most "
                              f"{MAX_PICKLE_NESTING} are accepted): the file is damaged or hostile")
    return graph.globals


_END_OF_DIRECTORY = struct.Struct("<4s4H2LH")  # the last 22 bytes of a zip archive without comment
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")     # what stands before each entry's data
_DESCRIPTOR_SIZES = (12, 16, 20, 24)           # what may follow it (with or without signature)


def _check_layout(archive, file, size, source):
    """Raise ``CheckpointError`` unless the archive's entries follow one another from the
    file's first byte to its central directory, which ends the file.

    PyTorch's zip reader finds the entries through the offset in the last
    bytes of the file; Python's ``zipfile`` corrects that offset when bytes
    were prepended to an archive. A forged file can use the difference to
    show this check one archive and ``torch.load`` another; an archive laid
    out without gaps reads the same to both.
    """
    file.seek(size - _END_OF_DIRECTORY.size)
    signature, _, _, _, count, _, directory_offset, comment = \
        _END_OF_DIRECTORY.unpack(file.read(_END_OF_DIRECTORY.size))
    position, descriptor = 0, False  # where the next entry must start, give or take a descriptor
    for entry in sorted(archive.infolist(), key=lambda entry: entry.header_offset):
        file.seek(entry.header_offset)
        header = _LOCAL_HEADER.unpack(file.read(_LOCAL_HEADER.size))
        if header[0] != b"PK\x03\x04" or entry.header_offset not in _starts(position, descriptor):
            raise CheckpointError(f"{source} is damaged or hostile: its entry {quote(entry.filename)} "
                                  f"is not where the archive's layout puts it")
        position = entry.header_offset + _LOCAL_HEADER.size + header[-2] + header[-1] + entry.compress_size
        descriptor = bool(entry.flag_bits & 0x08)
    if signature != b"PK\x05\x06" or comment or archive.start_dir not in _starts(position, descriptor) \
            or directory_offset not in (archive.start_dir, 0xFFFFFFFF) \
            or count not in (len(archive.infolist()), 0xFFFF):
        raise CheckpointError(f"{source} is damaged or hostile: its zip directory is not where the "
                              "archive says, or data lies outside its entries")


def _starts(position, descriptor):
    """Where what follows an entry ending at ``position`` may start: right there, or after
    the entry's data descriptor when it has one."""
    return [position + gap for gap in ((0, *_DESCRIPTOR_SIZES) if descriptor else (0,))]


def check_torch_archive(file, source):
    """Raise ``CheckpointError`` unless ``file`` (a path or a binary file) is a ``torch.save``
    zip archive whose entries cost no more than their size on disk, and whose pickle
    passes ``check_pickle``. Returns the pickle's ``(module, name)`` pairs.

    Checked before ``torch.load`` allocates anything: the archive is laid out
    as ``torch.save`` writes it, with nothing hidden between its entries
    (``_check_layout``: otherwise PyTorch's zip reader and Python's could read
    two different archives from one file), every entry lies inside the file,
    a stored entry is as long as it says, and a compressed one expands to at
    most ``MAX_INFLATION`` times its size. Files from torch
    before 1.6 (not zip archives) are refused: load them once with that
    torch version and save them again.
    """
    zip_like = False
    try:
        with contextlib.ExitStack() as stack:
            if not hasattr(file, "read"):
                file = stack.enter_context(open(file, "rb"))
            zip_like = file.read(2) == b"PK"
            file.seek(0)
            archive = stack.enter_context(zipfile.ZipFile(file))
            size = file.seek(0, io.SEEK_END)
            _check_layout(archive, file, size, source)
            for entry in archive.infolist():
                stored = entry.compress_type == zipfile.ZIP_STORED
                if entry.header_offset + entry.compress_size > size \
                        or (stored and entry.file_size != entry.compress_size) \
                        or entry.file_size > MAX_INFLATION * entry.compress_size + 1024:
                    raise CheckpointError(
                        f"{source} is damaged or hostile: its entry {quote(entry.filename)} claims "
                        f"{entry.file_size:,} bytes, but {entry.compress_size:,} of the file's "
                        f"{size:,} bytes hold it")
            pickles = [entry for entry in archive.infolist()
                       if entry.filename.endswith("/data.pkl") and entry.filename.count("/") == 1]
            if len(pickles) != 1:
                raise CheckpointError(f"{source} is a zip archive but not a PyTorch checkpoint: it "
                                      "has no data.pkl, or several")
            data = archive.read(pickles[0])
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError,
            NotImplementedError, RuntimeError) as err:
        legacy = "" if zip_like else say(
            ". A file from torch before 1.6 (not a zip archive) must be loaded once with that "
            "version and saved again",
            "。torch 1.6 之前的文件（不是 zip 归档）必须先用那个版本加载一次，再重新保存")
        raise CheckpointError(_incomplete(source, quote(str(err) or type(err).__name__)) + legacy) from None
    return check_pickle(data, source)


# --------------------------------------------------------------------------- reading

def read_small_file(path, limit):
    """At most ``limit`` + 1 bytes of the regular file ``path``; ``CheckpointError`` for
    anything else (a FIFO, a device, a folder, a link), without ever blocking on it."""
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
                             | getattr(os, "O_NOFOLLOW", 0))
    except OSError as err:
        raise CheckpointError(f"cannot read {path} ({err.strerror or err})") from None
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise CheckpointError(f"{path} is not a regular file (a pipe, a device or a folder)")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(descriptor, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    except OSError as err:
        raise CheckpointError(f"cannot read {path} ({err.strerror or err})") from None
    finally:
        os.close(descriptor)


def file_kind(path):
    """What the first bytes of an existing file say it is: "torch" (a torch.save zip
    archive), "safetensors" (an 8-byte header size, then a JSON header) or None."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path} is not a regular file, so it cannot be a checkpoint")
    try:
        with open(path, "rb") as file:
            head = file.read(9)
    except OSError as err:
        raise CheckpointError(f"{path} cannot be read ({err.strerror or err})") from None
    if head.startswith(b"PK"):
        return "torch"
    if len(head) == 9 and head[8:9] == b"{":
        return "safetensors"
    return None


def _unsafe_globals(path):
    """The Python classes and functions a torch.save file asks for, read without unpickling it."""
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # a damaged file: it names nothing
        return []


def load_torch_file(path, map_location, mmap=False):
    """``torch.load`` with ``weights_only=True``, every failure turned into a CheckpointError
    (one that names the Python objects a refused file asks for). With ``mmap=True`` the
    tensors' storages map the file instead of being read into memory: a page is read when a
    tensor touches it (``torch.load(..., mmap=True)``; the file must be a zip archive, as every
    file ``torch.save`` writes since torch 1.6 is).

    The file must be a regular file, and it is inspected first
    (``check_torch_archive``), so that no file can cost far more memory or
    time than its size before ``torch.load`` refuses it. Every tensor it
    holds must pass ``check_tensor`` (meta tensors are accepted when
    ``map_location`` is the meta device), so that nothing built from the
    file can cost more either.
    """
    file_kind(path)  # a missing file, a folder, a FIFO or a device: CheckpointError
    check_torch_archive(path, path)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:  # what torch.load raises when weights_only refuses
        refused = _unsafe_globals(path)
        if refused:
            found = ", ".join(refused[:5])
            raise CheckpointError(say(
                f"{path} contains Python objects, not only tensors and numbers, so it is "
                f"refused (found {found}). Unpickling such a file can run arbitrary code: load "
                "it with weights_only=False only if you made it yourself.",
                f"{path} 中除了张量和数字之外还有 Python 对象，所以被拒绝加载（发现了 {found}）。"
                "反序列化这样的文件可能执行任意代码：只有文件是你自己生成的，才可以用 "
                "weights_only=False 加载。")) from None
        raise CheckpointError(f"{path} was refused by torch.load(weights_only=True) "
                              f"({_reason(err)})") from None
    except Exception as err:
        raise CheckpointError(_incomplete(path, _reason(err))) from None
    _check_tensors_in(obj, "checkpoint", path, allow_meta=_asks_for_meta(map_location))
    return obj


def _incomplete(path, reason):
    """The message for a file that ``torch.load`` cannot read, with the ``reason`` it gave."""
    return say(f"{path} is not a complete PyTorch checkpoint: it is truncated, damaged or was not "
               f"written by torch.save ({reason})",
               f"{path} 不是完整的 PyTorch 检查点：它被截断了、已经损坏，或者不是用 torch.save 写出的"
               f"（{reason}）")


def _reason(err):
    """The first line of what went wrong, bounded. ``torch.load`` raises its own explanation
    *from* the unpickler's error, which stays its ``__context__``: that one is the reason."""
    cause = err.__context__ or err
    lines = str(cause).strip().splitlines()
    return lines[0][:200] if lines else type(cause).__name__


def _asks_for_meta(map_location):
    """Whether ``map_location`` puts every tensor on the meta device (shapes without values,
    to look at a file's structure), where a tensor that holds no values is no lie."""
    return isinstance(map_location, (str, torch.device)) and torch.device(map_location).type == "meta"


def _safetensors_load(path, map_location):
    """The tensors and the metadata of a safetensors file, the tensors on ``map_location``."""
    try:
        with safetensors.safe_open(path, framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name).to(map_location) for name in f.keys()}
    except Exception as err:
        raise CheckpointError(
            f"{path} is not a complete safetensors file: it is truncated, damaged or of "
            f"another format ({str(err)[:200]})") from None
    return tensors, metadata


# --------------------------------------------------------------------------- checking

def check_architecture(spec, architecture, path="the checkpoint"):
    """``architecture`` as plain values, checked by ``spec``, or ``CheckpointError`` saying why
    it builds no model. Nothing is built: whether the sizes agree with the file's tensors is
    ``check_weights``'s job."""
    if not isinstance(architecture, Mapping):
        raise CheckpointError(f"{path}: its architecture should be a dict, got {quote(architecture)}")
    try:
        return spec.check_architecture(architecture)
    except ValueError as err:
        raise CheckpointError(f"{path} has an unusable architecture: {err}") from None


def _shape_problems(state_dict, shapes):
    """How ``state_dict`` differs from the expected names and shapes (empty when it fits)."""
    missing = [name for name in shapes if name not in state_dict]
    unexpected = [name for name in state_dict if name not in shapes]
    problems = []
    if missing:
        problems.append(f"missing {quote(missing)}")
    if unexpected:
        problems.append(f"unexpected {quote(unexpected)}")
    for name, shape in shapes.items():
        if name in state_dict and tuple(state_dict[name].shape) != tuple(shape):
            problems.append(f"{name} has shape {quote(tuple(state_dict[name].shape))}, "
                            f"expected {quote(tuple(shape))}")
    return problems


# The dtypes a checkpoint's tensors may have: numbers stored one per element, byte for byte
# (not quantized, not packed several to a byte), which every operation accepts.
PLAIN_DTYPES = frozenset(
    dtype for dtype in vars(torch).values() if isinstance(dtype, torch.dtype)
    and (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool
         or dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
                      torch.uint16, torch.uint32, torch.uint64)))


def check_tensor(tensor, name, path="the checkpoint", allow_meta=False):
    """Raise ``CheckpointError`` unless ``tensor`` costs no more memory than the bytes the file
    gave it; ``name`` says where it lies, for the message. Nothing is copied or allocated.

    The tensor must be an ordinary (strided) one, not sparse or nested, of a
    plain dtype (``PLAIN_DTYPES``: not quantized), and hold values: a tensor on the ``meta`` device has a shape and nothing else
    (it is accepted only with ``allow_meta``, where values are not needed).
    Every element it shows must lie in its storage, each one once: with
    stride 0, a single stored number can pose as 400 million, and a model
    built to the size of such a tensor costs 1.6 GB.
    """
    if tensor.layout != torch.strided or tensor.is_nested:
        kind = "nested" if tensor.is_nested else str(tensor.layout).removeprefix("torch.")
        raise CheckpointError(
            f"{path}: {name} is a {kind} tensor; a checkpoint holds ordinary (strided) tensors only")
    if tensor.dtype not in PLAIN_DTYPES:
        raise CheckpointError(f"{path}: {name} has the dtype {tensor.dtype}; a checkpoint holds "
                              "tensors of plain numbers only (not quantized or packed ones)")
    if tensor.is_meta and not allow_meta:
        raise CheckpointError(f"{path}: {name} is on the meta device: it has a shape, "
                              f"{quote(tuple(tensor.shape))}, but no values")
    if tensor.numel() == 0:
        return
    element, held = tensor.element_size(), tensor.untyped_storage().nbytes()
    lowest, highest = _addressed(tensor)
    if lowest < 0 or (highest + 1) * element > held or tensor.numel() * element > held:
        raise CheckpointError(
            f"{path}: {name} poses as {tensor.numel():,} elements of {element} bytes (shape "
            f"{quote(tuple(tensor.shape))}, strides {quote(tensor.stride())}, offset "
            f"{tensor.storage_offset():,}), but its storage holds {held:,} bytes: the file does "
            "not hold the values it claims")


def _addressed(tensor):
    """The lowest and the highest element of its storage that a non-empty ``tensor`` shows."""
    lowest = highest = tensor.storage_offset()
    for size, stride in zip(tensor.shape, tensor.stride()):
        if stride < 0:
            lowest += (size - 1) * stride
        else:
            highest += (size - 1) * stride
    return lowest, highest


def _tensors_in(obj, where):
    """Each distinct tensor inside ``obj`` (nested dicts, lists and tuples), with where it lies:
    ``where`` followed by the keys that lead to it, such as ``where['state'][0]['exp_avg']``."""
    seen, pending = set(), [(obj, ())]
    while pending:
        value, keys = pending.pop()
        if id(value) in seen:  # a value held twice, or a container that holds itself
            continue
        seen.add(id(value))
        if torch.is_tensor(value):
            yield value, where + _subscripts(keys)
        elif isinstance(value, Mapping):  # reversed: the first item is taken first
            pending += reversed([(item, (*keys, key)) for key, item in value.items()])
        elif isinstance(value, (list, tuple)):
            pending += reversed([(item, (*keys, index)) for index, item in enumerate(value)])


def _subscripts(keys):
    """``keys`` written as subscripts, ``['state'][0]['exp_avg']``, the middle ones left out
    when there are more than six."""
    subscripts = [f"[{quote(key)}]" for key in keys]
    if len(subscripts) > 6:
        subscripts[2:-3] = ["[...]"]
    return "".join(subscripts)


def _check_tensors_in(obj, where, path, allow_meta=False):
    """``check_tensor`` for every tensor inside ``obj`` (``where`` names it in messages), and
    no two tensors sharing elements: together they may not show more bytes than their
    storages hold, so that the file's cost stays within its size however many tensors it has.
    Tied weights (one tensor under two names) are refused too: every copy of the model or of
    the file made from them would hold each name's values separately."""
    storages, shown = {}, 0
    for tensor, name in _tensors_in(obj, where):
        check_tensor(tensor, name, path, allow_meta)
        if tensor.numel() and not tensor.is_meta:  # a meta tensor holds nothing to share
            storage = tensor.untyped_storage()
            storages[tensor.device, storage.data_ptr()] = storage.nbytes()
            shown += tensor.numel() * tensor.element_size()
    if shown > sum(storages.values()):
        raise CheckpointError(
            f"{path}: its tensors share elements: they pose as {shown:,} bytes, but their storages "
            f"hold {sum(storages.values()):,}: the file does not hold the values it claims")


def _check_weight_tensors(state_dict, path):
    """Raise ``CheckpointError`` unless ``state_dict`` maps names to floating-point tensors."""
    if not isinstance(state_dict, Mapping) \
            or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state_dict.items()):
        raise CheckpointError(
            f"{path}: its weights should be a dict from names to tensors, got {quote(state_dict)}")
    not_float = [name for name, tensor in state_dict.items() if not tensor.is_floating_point()]
    if not_float:
        raise CheckpointError(f"{path}: the tensors {quote(not_float)} are not floating point")


def check_weights(spec, state_dict, architecture, path="the checkpoint"):
    """Raise ``CheckpointError`` unless ``state_dict`` holds exactly the floating-point
    tensors, of exactly the shapes, that the model of ``spec`` with ``architecture`` has."""
    _check_weight_tensors(state_dict, path)
    shapes = spec.tensor_shapes(architecture)
    if len(state_dict) != len(shapes):
        raise CheckpointError(
            f"{path} holds {len(state_dict)} tensors, but its architecture {quote(architecture)} "
            f"has {len(shapes)}")
    problems = _shape_problems(state_dict, shapes)
    if problems:
        raise CheckpointError(
            f"{path}: its tensors do not match its architecture {quote(architecture)}: "
            + "; ".join(problems[:6]))


def _check_optimizer_state(optimizer_state, path):
    """Raise ``CheckpointError`` unless ``optimizer_state`` has the shape of an optimizer's
    state_dict: a dict of per-parameter states, and parameter groups that number their
    parameters with distinct integers."""
    if optimizer_state is None:
        return
    groups = optimizer_state.get("param_groups") if isinstance(optimizer_state, Mapping) else None
    if not isinstance(optimizer_state, Mapping) or not isinstance(optimizer_state.get("state"), Mapping) \
            or not isinstance(groups, list) \
            or not all(isinstance(g, Mapping) and isinstance(g.get("params"), list) for g in groups) \
            or not all(isinstance(state, Mapping) for state in optimizer_state["state"].values()):
        raise CheckpointError(
            f"{path}: its optimizer state should be an optimizer's state_dict (a dict with "
            f"'state' and 'param_groups'), got {quote(optimizer_state)}")
    numbers = [number for group in groups for number in group["params"]]
    if not all(is_count(number) for number in numbers) or len(set(numbers)) != len(numbers):
        raise CheckpointError(f"{path}: its optimizer state should number its parameters with "
                              f"distinct integers, got {quote(numbers)}")


def check_rng_state(state, path="the checkpoint"):
    """Raise ``CheckpointError`` unless ``state`` is what ``rng_state`` returns, holding states
    that pass ``check_tensor`` and that the generators accept. Each is tried on a throw-away
    ``torch.Generator``, so that no generator of this process changes (the CUDA states
    where CUDA is present, as ``set_rng_state`` would); states loaded onto the meta device,
    which hold no values, are not tried."""
    size = torch.get_rng_state().numel()

    def is_generator_state(tensor):
        return torch.is_tensor(tensor) and tensor.dtype == torch.uint8 and tensor.dim() == 1

    if not isinstance(state, Mapping) or not is_generator_state(state.get("cpu")) \
            or state["cpu"].numel() != size \
            or not isinstance(state.get("cuda", []), (list, tuple)) \
            or not all(is_generator_state(t) for t in state.get("cuda", [])):
        raise CheckpointError(
            f"{path}: its random-number-generator state is not one saved by "
            f"checkpoint_io.rng_state, got {quote(state)}")
    _check_tensors_in(state, "the generator state", path, allow_meta=True)
    if state["cpu"].is_meta:
        return
    try:
        torch.Generator().set_state(state["cpu"].cpu())
        for cuda_state in state.get("cuda", [])[:torch.cuda.device_count()]:
            torch.Generator(device="cuda").set_state(cuda_state.cpu())
    except RuntimeError as err:
        raise CheckpointError(f"{path}: its random-number-generator state is refused by torch "
                              f"({quote(str(err))})") from None


# --------------------------------------------------------------------------- loading

def _architecture_from_weights(spec, state_dict, path):
    """The architecture that the shapes of a bare ``state_dict`` imply, or None when its
    tensors are not those of the model of ``spec``."""
    if not isinstance(state_dict, Mapping) or not state_dict \
            or not all(isinstance(key, str) and torch.is_tensor(value) for key, value in state_dict.items()):
        return None
    try:
        return spec.architecture_from_weights(state_dict)
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None


def _prefix_advice(obj):
    """How to fix a state_dict whose keys all carry a wrapper's prefix ("" when they do not)."""
    if not isinstance(obj, Mapping) or not obj:
        return ""
    for prefix, (wrappers, wrappers_zh) in WRAPPER_PREFIXES.items():
        if all(isinstance(key, str) and key.startswith(prefix) for key in obj):
            remove = f"torch.nn.modules.utils.consume_prefix_in_state_dict_if_present(state_dict, {prefix!r})"
            return say(f". Its keys start with {prefix!r}, the prefix that {wrappers} add: remove "
                       f"it with {remove}, or save the inner model's state_dict",
                       f"。它的键都以 {prefix!r} 开头，这是 {wrappers_zh} 添加的前缀：请用 {remove} "
                       "去掉它，或者保存内部模型的 state_dict")
    return ""


def _weights_only(spec, architecture, state_dict, path):
    """A general checkpoint that holds checked weights and their architecture, and nothing to
    resume from."""
    architecture = check_architecture(spec, architecture, path)
    check_weights(spec, state_dict, architecture, path)
    return {"format": spec.checkpoint_format, "architecture": architecture,
            "model_state_dict": dict(state_dict), "optimizer_state_dict": None}


def _from_safetensors(path, spec, map_location):
    tensors, metadata = _safetensors_load(path, map_location)
    if metadata.get("format") == spec.safetensors_format and "architecture" in metadata:
        try:
            architecture = json.loads(metadata["architecture"])
        except Exception as err:  # ValueError, or RecursionError for absurd nesting
            raise CheckpointError(
                f"{path} has unreadable architecture metadata {quote(metadata['architecture'])} "
                f"({type(err).__name__})") from None
        return _weights_only(spec, architecture, tensors, path)
    inferred = _architecture_from_weights(spec, tensors, path)
    if inferred is not None:
        return _weights_only(spec, inferred, tensors, path)
    raise CheckpointError(
        f"{path} has no {spec.name} architecture in its metadata (found {quote(sorted(metadata))}) "
        f"and its tensors are not those of a {spec.name}: it was not written by "
        f"checkpoint_io.save_safetensors{_prefix_advice(tensors)}")


def _from_torch_file(path, spec, map_location, mmap=False):
    obj = load_torch_file(path, map_location, mmap)
    form = obj.get("format") if isinstance(obj, Mapping) else None
    if isinstance(form, str) and form == spec.checkpoint_format:
        missing = [key for key in ("architecture", "model_state_dict", "optimizer_state_dict", "rng")
                   if key not in obj]
        if missing:
            raise CheckpointError(f"{path} is an incomplete checkpoint: {missing} missing")
        checkpoint = dict(obj, **_weights_only(spec, obj["architecture"], obj["model_state_dict"], path))
        checkpoint["optimizer_state_dict"] = obj["optimizer_state_dict"]
        _check_optimizer_state(obj["optimizer_state_dict"], path)
        check_rng_state(obj["rng"], path)
        return checkpoint
    if isinstance(obj, Mapping) and "format" in obj:
        raise CheckpointError(
            f"{path} has format {quote(form)}; a checkpoint of {spec.name} has "
            f"{spec.checkpoint_format!r}")
    if spec.legacy_keys and isinstance(obj, Mapping) and {*spec.legacy_keys, "state_dict"} <= set(obj):
        return _weights_only(spec, obj, obj["state_dict"], path)
    inferred = _architecture_from_weights(spec, obj, path)
    if inferred is not None:
        return _weights_only(spec, inferred, obj, path)
    if isinstance(obj, Mapping):
        keys = quote(sorted(map(str, obj))[:8])
        described = say(f"a dict with keys {keys}", f"一个字典（键为 {keys}）")
    else:
        described = say(f"a {type(obj).__name__}", f"一个 {type(obj).__name__}")
    legacy = say(", a checkpoint of its older kind", f"、{spec.name} 的旧式检查点") if spec.legacy_keys else ""
    raise CheckpointError(say(
        f"{path} holds {described}, not a checkpoint of {spec.name}: expected a file "
        f"written by checkpoint_io.save_checkpoint{legacy} or a {spec.name} state_dict",
        f"{path} 中是{described}，而不是 {spec.name} 的检查点：这里需要用 "
        f"checkpoint_io.save_checkpoint 写出的文件{legacy}或 {spec.name} 的 state_dict")
        + _prefix_advice(obj))


def load_checkpoint(path, spec, map_location="cpu", mmap=False):
    """Read a checkpoint of the model that ``spec`` describes, safely, and return it as a
    general checkpoint: ``load_checkpoint(path, fc_model.NETWORK)``.

    Accepted: a general checkpoint written by ``save_checkpoint``; a
    safetensors file written by ``save_safetensors``; a checkpoint of the
    older kind the spec names (for ``fc_model.NETWORK``, the classic course's
    checkpoints); and a
    bare ``state_dict`` of the model (as a ``torch.save`` or safetensors
    file), whose architecture is read off its weights' shapes. All but the
    first come back with ``optimizer_state_dict`` set to None.

    Everything is checked before it is returned: the architecture's values,
    and that the file holds exactly the tensors, of exactly the shapes, that
    this architecture has; so no model is ever built from sizes the file's
    own tensors do not back.

    ``map_location`` says where the loaded tensors go (a device such as
    ``"cpu"`` or ``"cuda"``, or anything ``torch.load`` accepts); it moves no
    model. A device this machine lacks raises ``ValueError``. ``mmap=True``
    maps a ``torch.save`` file instead of reading it (``load_torch_file``);
    a safetensors file is mapped by ``safetensors`` either way.

    Raises ``CheckpointError``, naming the file, for a missing, truncated,
    random, foreign or inconsistent file, and for one that holds Python objects.
    """
    path = Path(path)
    if isinstance(map_location, (str, torch.device)):
        map_location = check_device(map_location)
    if file_kind(path) == "safetensors":
        if not isinstance(map_location, torch.device):
            raise ValueError(f"map_location must be a device for a safetensors file, got {map_location!r}")
        return _from_safetensors(path, spec, map_location)
    return _from_torch_file(path, spec, map_location, mmap)


# The shape of the probe parameter that ``_state_template`` steps; a tensor of this shape in
# the probe's state stands for one of the parameter's own shape.
PROBE_SHAPE = (2, 3)
# What a parameter group holds besides its hyperparameters
GROUP_MEMBERS = ("params", "param_names")


def _kind(value):
    """What a hyperparameter is, to compare a saved one with the optimizer's own: "number" (an
    int, a float or a one-element tensor), "flag" (a bool or None), the kinds of the items of
    a list or tuple, or else the name of its type."""
    if value is None or isinstance(value, bool):
        return "flag"
    if isinstance(value, (int, float)) or (torch.is_tensor(value) and value.numel() == 1):
        return "number"
    if isinstance(value, (list, tuple)):
        return tuple(_kind(item) for item in value)
    return type(value).__name__


def _hyperparameter_problems(number, saved, group):
    """How the saved parameter group ``number`` falls short of the optimizer's ``group``: it
    must hold every hyperparameter the optimizer's has, each of the same kind."""
    problems = []
    for key, value in group.items():
        if key in GROUP_MEMBERS:
            continue
        if key not in saved:
            problems.append(f"parameter group {number} has no {quote(key)}")
        elif _kind(saved[key]) != _kind(value):
            problems.append(f"parameter group {number} has {quote(key)} = {quote(saved[key])}, "
                            f"where the optimizer has {quote(value)}")
    return problems


def _state_template(optimizer, saved_group, parameter):
    """What state the optimizer's class keeps for a parameter like ``parameter`` under the
    hyperparameters of ``saved_group``: {key: the shape of the tensor it holds, or None}.

    Found by one step of a throw-away optimizer of the same class on a probe
    parameter of shape ``PROBE_SHAPE`` (with ``parameter``'s dtype and device,
    the CPU for the meta device, where a step cannot compute) and a zero
    gradient; the real optimizer and its parameters are not touched. Raises
    what the class raises for hyperparameters it cannot use.
    """
    device = "cpu" if parameter.is_meta else parameter.device
    probe = torch.zeros(PROBE_SHAPE, dtype=parameter.dtype, device=device, requires_grad=True)
    probe.grad = torch.zeros_like(probe)
    hyperparameters = {key: value for key, value in saved_group.items() if key not in GROUP_MEMBERS}
    throwaway = type(optimizer)([{**hyperparameters, "params": [probe]}])
    throwaway.step(lambda: torch.zeros((), device=probe.device))
    return {key: value.shape if torch.is_tensor(value) else None
            for key, value in throwaway.state[probe].items()}


def _state_problems(name, state, template, parameter):
    """How the saved state of ``parameter`` (``name`` in messages) differs from what the
    optimizer keeps (``template``, from ``_state_template``). Every key of the template must
    be there, with a tensor of the same shape, the probe's shape meaning the parameter's;
    any other key must hold a tensor or a plain number."""
    problems = []
    for key, probe_shape in template.items():
        value = state.get(key)
        shape = parameter.shape if probe_shape == PROBE_SHAPE else probe_shape
        if key not in state:
            problems.append(f"{name} has no {quote(key)}")
        elif shape is not None and not (torch.is_tensor(value) and value.shape == shape):
            found = f"shape {quote(tuple(value.shape))}" if torch.is_tensor(value) else quote(value)
            problems.append(f"{quote(key)} of {name} has {found}, expected a tensor of shape "
                            f"{tuple(shape)}")
    for key, value in state.items():
        if template.get(key) is None and not torch.is_tensor(value) \
                and not isinstance(value, (int, float, bool, type(None))):
            problems.append(f"{quote(key)} of {name} is {quote(value)}, neither a tensor nor a number")
    return problems


def _optimizer_problems(optimizer_state, optimizer):
    """How a saved optimizer state differs from what ``optimizer`` can take (empty when it fits):
    its groups, their hyperparameters, and the state of every parameter."""
    saved_groups, groups = optimizer_state["param_groups"], optimizer.param_groups
    if len(saved_groups) != len(groups):
        return [f"{len(saved_groups)} parameter groups saved, the optimizer has {len(groups)}"]
    if [len(g["params"]) for g in saved_groups] != [len(g["params"]) for g in groups]:
        return ["the parameter groups hold other numbers of parameters"]
    problems = [problem for number, (saved, group) in enumerate(zip(saved_groups, groups))
                for problem in _hyperparameter_problems(number, saved, group)]
    if problems:
        return problems
    templates = {}
    for number, (saved, group) in enumerate(zip(saved_groups, groups)):
        if not group["params"]:
            continue
        try:
            template = _state_template(optimizer, saved, group["params"][0])
        except Exception as err:  # whatever the optimizer's own code raises
            return [f"the hyperparameters of parameter group {number} do not work with "
                    f"{type(optimizer).__name__} ({type(err).__name__}: {quote(str(err))})"]
        templates.update(dict.fromkeys(saved["params"], template))
    parameters = dict(zip((i for g in saved_groups for i in g["params"]),
                          (p for g in groups for p in g["params"])))
    for index, state in optimizer_state["state"].items():
        if index not in parameters:
            problems.append(f"state for a parameter {quote(index)} that no group holds")
        else:
            problems += _state_problems(f"parameter {quote(index)}", state, templates[index],
                                        parameters[index])
    return problems


def _is_on_meta(model):
    """Whether ``model`` lives on the meta device, where copying a tensor copies no values."""
    return all(parameter.is_meta for parameter in model.parameters())


def _check_fits_model(checkpoint, model, path):
    """Raise ``CheckpointError`` unless the checkpoint's weights can be copied into ``model``
    (tensors without values only into a model on the meta device)."""
    saved = check_architecture(model.spec, checkpoint["architecture"], path)
    built = model.architecture
    if model.spec.tensor_shapes(saved) != model.spec.tensor_shapes(built):
        raise CheckpointError(
            f"{path} was saved from a model with {quote(saved)}, but this model has {built}: "
            "build the model from checkpoint['architecture'] (fc_model.load_network(path) does)")
    _check_weight_tensors(checkpoint["model_state_dict"], path)
    _check_tensors_in(checkpoint["model_state_dict"], "model_state_dict", path,
                      allow_meta=_is_on_meta(model))
    problems = _shape_problems(checkpoint["model_state_dict"],
                               {name: t.shape for name, t in model.state_dict().items()})
    if problems:
        raise CheckpointError(f"{path} does not fit the model: {'; '.join(problems[:6])}")


def _check_fits_optimizer(checkpoint, optimizer, model, path):
    """Raise ``CheckpointError`` unless the checkpoint's optimizer state can be loaded into
    ``optimizer`` (which trains ``model``) and stepped from."""
    optimizer_state = checkpoint["optimizer_state_dict"]
    if optimizer_state is None:
        raise CheckpointError(f"{path} holds no optimizer state, so training cannot resume exactly")
    _check_optimizer_state(optimizer_state, path)
    _check_tensors_in(optimizer_state, "optimizer_state_dict", path, allow_meta=_is_on_meta(model))
    problems = _optimizer_problems(optimizer_state, optimizer)
    if problems:
        raise CheckpointError(
            f"{path}: the optimizer state does not fit the optimizer ({'; '.join(problems[:4])})")


# The dtypes a layer computes in: what a file's weights may have to become parameters as they are
COMPUTE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _owns_its_storage(tensor, seen):
    """Whether ``tensor`` alone holds its storage, whole and in order (``seen``: the storages of
    the tensors before it), so that as a parameter it shares and overlaps nothing."""
    if tensor.is_meta or tensor.numel() == 0:
        return True
    storage = tensor.untyped_storage()
    key = (tensor.device, storage.data_ptr())
    alone = key not in seen and tensor.is_contiguous() and tensor.storage_offset() == 0 \
        and storage.nbytes() == tensor.numel() * tensor.element_size()
    seen.add(key)
    return alone


def _as_parameters(state_dict, path):
    """The tensors of ``state_dict`` ready to *become* a model's parameters (``assign=True``).

    Copying into a model (``assign=False``) converts dtypes and separates whatever the file
    shares. Assigning keeps the file's tensors, so: one dtype that layers compute in
    (``COMPUTE_DTYPES``; otherwise ``CheckpointError``), and a copy of any tensor that does not
    hold its storage alone (one tensor under two names, views of one buffer, a tensor whose
    elements overlap), so that no two parameters share a value. A file that ``torch.save``
    wrote from a model needs no copy at all."""
    dtypes = {tensor.dtype for tensor in state_dict.values()}
    if len(dtypes) != 1 or not dtypes <= set(COMPUTE_DTYPES):
        raise CheckpointError(
            f"{path}: its weights have the dtypes {sorted(map(str, dtypes))}; to become a model's "
            f"parameters as they are they need one dtype a layer computes in "
            f"({', '.join(map(str, COMPUTE_DTYPES))}). Load it without assign=True, which copies "
            "them into the model's own dtype")
    seen = set()
    return {name: tensor if _owns_its_storage(tensor, seen) else tensor.clone(memory_format=torch.contiguous_format)
            for name, tensor in state_dict.items()}


def restore(checkpoint, model, optimizer=None, path="the checkpoint", assign=False):
    """Load a checkpoint (from ``load_checkpoint``) into an existing model and optimizer.

    Everything is checked first and copied only then: if the model has
    another architecture, a tensor is not an honest one (``check_tensor``),
    or the optimizer state does not fit the optimizer (a hyperparameter
    missing or of another kind, a parameter's state lacking what the
    optimizer keeps, or of other shapes), ``CheckpointError`` says why and
    neither is changed. The values are copied into the model's parameters
    wherever they live, and the optimizer's state goes beside its parameters.

    With ``assign=True`` nothing is copied: the checkpoint's tensors *become*
    the model's parameters (``load_state_dict(..., assign=True)``), with their
    device and dtype. That is how a model built on the ``meta`` device, which
    holds no values, gets its weights without a second copy in memory. The
    weights must then share one dtype that layers compute in, and a tensor that
    shares its storage is copied first (``_as_parameters``). An optimizer made
    before would hold the old parameters, so none is accepted: create it after
    the load.
    """
    if assign and optimizer is not None:
        raise ValueError("with assign=True the checkpoint's tensors replace the model's "
                         "parameters: create the optimizer after restore, on model.parameters()")
    _check_fits_model(checkpoint, model, path)
    if optimizer is not None:
        _check_fits_optimizer(checkpoint, optimizer, model, path)
    state_dict = checkpoint["model_state_dict"]
    model.load_state_dict(_as_parameters(state_dict, path) if assign else state_dict, assign=assign)
    if optimizer is not None:
        optimizer.load_state_dict(checkpoint["optimizer_state_dict"])
