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
for example ``fc_model.Network(**architecture)``; this module stores and
compares it but builds no model itself.
"""

import contextlib
import json
import math
import os
import reprlib
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

import safetensors.torch
import torch

from devices import check_device

CHECKPOINT_FORMAT = "fc_model.checkpoint/1"
SAFETENSORS_FORMAT = "fc_model.safetensors/1"

# What a classic-course checkpoint holds besides its state_dict, and the
# dropout it assumed when it did not say.
CLASSIC_KEYS = ("input_size", "output_size", "hidden_layers")
CLASSIC_DROP_P = 0.5

# The prefixes that wrappers put in front of every key of a model's state_dict.
WRAPPER_PREFIXES = {"module.": "nn.DataParallel and DistributedDataParallel",
                    "_orig_mod.": "torch.compile"}


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used; the message names the file and the problem."""


# Messages quote what a file holds through this, so that no file, however large or
# deeply nested, can make the message itself long or slow to write.
_short = reprlib.Repr()
_short.maxlevel, _short.maxstring, _short.maxother, _short.maxlong = 3, 60, 60, 40
_short.maxlist = _short.maxtuple = _short.maxdict = _short.maxset = 6
_quote = _short.repr


# --------------------------------------------------------------------------- writing

@contextlib.contextmanager
def atomic_write(path):
    """Write a file so that ``path`` holds either its old content or the complete new one.

    Yields a binary file opened on a temporary file in the same folder. When
    the block ends without error, the data is flushed to disk and the
    temporary file replaces ``path`` in a single rename. If the block raises,
    ``path`` is untouched and the temporary file is removed; if the process is
    killed, ``path`` is untouched too (a hidden ``.part`` file may remain).

    The new file keeps the permissions of the file it replaces, so a private
    checkpoint stays private; a file that did not exist gets the usual
    permissions for new files (0666 less the umask).
    """
    path = Path(path)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with open(tmp, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        tmp.chmod(mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _umask():
    """The process's umask (reading it means setting it, so it is set straight back)."""
    current = os.umask(0o022)
    os.umask(current)
    return current


def rng_state():
    """The random-number-generator states that training uses (CPU, and CUDA if present)."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    """Restore states returned by ``rng_state``, wherever ``map_location`` put them."""
    torch.set_rng_state(state["cpu"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save_checkpoint(path, model, optimizer=None, **training_state):
    """Save a general checkpoint of ``model`` (which has an ``architecture``) atomically.

    The file holds the format tag, the architecture, the model's and the
    optimizer's ``state_dict``, the current random-number-generator states,
    and ``training_state`` (for example ``epoch=1, step=938, loss=0.42``):
    plain numbers, strings, lists, dicts and tensors only, so that it loads
    with ``weights_only=True``.
    """
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "architecture": model.architecture,
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": None if optimizer is None else optimizer.state_dict(),
        "rng": rng_state(),
        **training_state,
    }
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
    metadata = {"format": SAFETENSORS_FORMAT, "architecture": json.dumps(model.architecture)}
    tensors = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as file:
        file.write(safetensors.torch.save(tensors, metadata=metadata))


# --------------------------------------------------------------------------- reading

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


def load_torch_file(path, map_location):
    """``torch.load`` with ``weights_only=True``, every failure turned into a CheckpointError
    (one that names the Python objects a refused file asks for)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        refused = _unsafe_globals(path)
        if refused:
            raise CheckpointError(
                f"{path} contains Python objects, not only tensors and numbers, so it is "
                f"refused (found {', '.join(refused[:5])}). Unpickling such a file can run "
                "arbitrary code: load it with weights_only=False only if you made it "
                "yourself.") from None
        details = str(err).split("WeightsUnpickler error:")[-1].strip()
        reason = details.split(". ")[0].splitlines()[0][:200] if details else "empty file"
        raise CheckpointError(
            f"{path} is not a complete PyTorch checkpoint: it is truncated, damaged or was "
            f"not written by torch.save ({reason})") from None


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

def is_count(value, minimum=0):
    """True for an integer (not a bool) of at least ``minimum``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def check_architecture(architecture, path="the checkpoint"):
    """The architecture as plain values (``drop_p`` defaulting to 0.5), or ``CheckpointError``.

    Sizes must be positive integers, ``hidden_layers`` a non-empty list of
    them and ``drop_p`` a probability in [0, 1). Nothing is built: whether the
    sizes agree with the file's tensors is ``check_weights``'s job.
    """
    if not isinstance(architecture, Mapping):
        raise CheckpointError(f"{path}: its architecture should be a dict, got {_quote(architecture)}")
    problems = []
    for key in CLASSIC_KEYS:
        if key not in architecture:
            problems.append(f"{key} is missing")
    sizes = {key: architecture[key] for key in ("input_size", "output_size") if key in architecture}
    problems += [f"{key} should be a positive integer, got {_quote(value)}"
                 for key, value in sizes.items() if not is_count(value, 1)]
    hidden = architecture.get("hidden_layers", [])
    if not isinstance(hidden, (list, tuple)) or not hidden \
            or not all(is_count(size, 1) for size in hidden):
        problems.append(f"hidden_layers should be a non-empty list of positive integers, "
                        f"got {_quote(hidden)}")
    drop_p = architecture.get("drop_p", CLASSIC_DROP_P)
    if isinstance(drop_p, bool) or not isinstance(drop_p, (int, float)) \
            or not (math.isfinite(drop_p) and 0 <= drop_p < 1):
        problems.append(f"drop_p should be a probability in [0, 1), got {_quote(drop_p)}")
    if problems:
        raise CheckpointError(f"{path} has an unusable architecture: {'; '.join(problems)}")
    return {"input_size": architecture["input_size"], "output_size": architecture["output_size"],
            "hidden_layers": list(hidden), "drop_p": float(drop_p)}


def _expected_shapes(architecture):
    """The name and shape of every tensor of a Network with this architecture."""
    sizes = [architecture["input_size"], *architecture["hidden_layers"]]
    shapes = {}
    for index, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        shapes[f"hidden_layers.{index}.weight"] = (n_out, n_in)
        shapes[f"hidden_layers.{index}.bias"] = (n_out,)
    shapes["output.weight"] = (architecture["output_size"], sizes[-1])
    shapes["output.bias"] = (architecture["output_size"],)
    return shapes


def _shape_problems(state_dict, shapes):
    """How ``state_dict`` differs from the expected names and shapes (empty when it fits)."""
    missing = [name for name in shapes if name not in state_dict]
    unexpected = [name for name in state_dict if name not in shapes]
    problems = []
    if missing:
        problems.append(f"missing {_quote(missing)}")
    if unexpected:
        problems.append(f"unexpected {_quote(unexpected)}")
    for name, shape in shapes.items():
        if name in state_dict and tuple(state_dict[name].shape) != tuple(shape):
            problems.append(f"{name} has shape {tuple(state_dict[name].shape)}, "
                            f"expected {tuple(shape)}")
    return problems


def check_weights(state_dict, architecture, path="the checkpoint"):
    """Raise ``CheckpointError`` unless ``state_dict`` holds exactly the floating-point
    tensors, of exactly the shapes, that a Network of ``architecture`` has."""
    if not isinstance(state_dict, Mapping) \
            or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state_dict.items()):
        raise CheckpointError(
            f"{path}: its weights should be a dict from names to tensors, got {_quote(state_dict)}")
    not_float = [name for name, tensor in state_dict.items() if not tensor.is_floating_point()]
    if not_float:
        raise CheckpointError(f"{path}: the tensors {_quote(not_float)} are not floating point")
    if len(state_dict) != 2 * (len(architecture["hidden_layers"]) + 1):
        raise CheckpointError(
            f"{path} holds {len(state_dict)} tensors, but its architecture {_quote(architecture)} "
            f"has {2 * (len(architecture['hidden_layers']) + 1)}")
    problems = _shape_problems(state_dict, _expected_shapes(architecture))
    if problems:
        raise CheckpointError(
            f"{path}: its tensors do not match its architecture {_quote(architecture)}: "
            + "; ".join(problems[:6]))


def _check_optimizer_state(optimizer_state, path):
    """Raise ``CheckpointError`` unless ``optimizer_state`` has the shape of an optimizer's state_dict."""
    if optimizer_state is None:
        return
    groups = optimizer_state.get("param_groups") if isinstance(optimizer_state, Mapping) else None
    if not isinstance(optimizer_state, Mapping) or not isinstance(optimizer_state.get("state"), Mapping) \
            or not isinstance(groups, list) \
            or not all(isinstance(g, Mapping) and isinstance(g.get("params"), list) for g in groups) \
            or not all(isinstance(state, Mapping) for state in optimizer_state["state"].values()):
        raise CheckpointError(
            f"{path}: its optimizer state should be an optimizer's state_dict (a dict with "
            f"'state' and 'param_groups'), got {_quote(optimizer_state)}")


def check_rng_state(state, path="the checkpoint"):
    """Raise ``CheckpointError`` unless ``state`` is what ``rng_state`` returns."""
    size = torch.get_rng_state().numel()

    def is_generator_state(tensor):
        return torch.is_tensor(tensor) and tensor.dtype == torch.uint8 and tensor.dim() == 1

    if not isinstance(state, Mapping) or not is_generator_state(state.get("cpu")) \
            or state["cpu"].numel() != size \
            or not all(is_generator_state(t) for t in state.get("cuda", [])) \
            or not isinstance(state.get("cuda", []), (list, tuple)):
        raise CheckpointError(
            f"{path}: its random-number-generator state is not one saved by "
            f"checkpoint_io.rng_state, got {_quote(state)}")


# --------------------------------------------------------------------------- loading

def _architecture_from_state_dict(state_dict, path):
    """Infer ``fc_model.Network`` sizes from the weight shapes of a bare ``state_dict``."""
    weights = []
    while f"hidden_layers.{len(weights)}.weight" in state_dict:
        weights.append(state_dict[f"hidden_layers.{len(weights)}.weight"])
    if not weights or any(w.dim() != 2 for w in weights) or state_dict["output.weight"].dim() != 2:
        raise CheckpointError(f"{path}: its weight tensors are not the matrices of a Network")
    return {"input_size": weights[0].shape[1], "output_size": state_dict["output.weight"].shape[0],
            "hidden_layers": [w.shape[0] for w in weights], "drop_p": CLASSIC_DROP_P}


def _prefix_advice(obj):
    """How to fix a state_dict whose keys all carry a wrapper's prefix ("" when they do not)."""
    if not isinstance(obj, Mapping) or not obj:
        return ""
    for prefix, wrappers in WRAPPER_PREFIXES.items():
        if all(isinstance(key, str) and key.startswith(prefix) for key in obj):
            return (f". Its keys start with {prefix!r}, the prefix that {wrappers} add: remove it "
                    f"with torch.nn.modules.utils.consume_prefix_in_state_dict_if_present("
                    f"state_dict, {prefix!r}), or save the inner model's state_dict")
    return ""


def _is_network_state_dict(obj):
    return (isinstance(obj, Mapping) and "hidden_layers.0.weight" in obj
            and "output.weight" in obj and all(torch.is_tensor(v) for v in obj.values()))


def _weights_only(architecture, state_dict, path):
    """A general checkpoint that holds checked weights and their architecture, and nothing to
    resume from."""
    architecture = check_architecture(architecture, path)
    check_weights(state_dict, architecture, path)
    return {"format": CHECKPOINT_FORMAT, "architecture": architecture,
            "model_state_dict": dict(state_dict), "optimizer_state_dict": None}


def _from_safetensors(path, map_location):
    tensors, metadata = _safetensors_load(path, map_location)
    if metadata.get("format") == SAFETENSORS_FORMAT and "architecture" in metadata:
        try:
            architecture = json.loads(metadata["architecture"])
        except Exception as err:  # ValueError, or RecursionError for absurd nesting
            raise CheckpointError(
                f"{path} has unreadable architecture metadata {_quote(metadata['architecture'])} "
                f"({type(err).__name__})") from None
        return _weights_only(architecture, tensors, path)
    if _is_network_state_dict(tensors):
        return _weights_only(_architecture_from_state_dict(tensors, path), tensors, path)
    raise CheckpointError(
        f"{path} has no fc_model architecture in its metadata (found {_quote(sorted(metadata))}) "
        "and its tensors are not those of a Network: it was not written by "
        f"checkpoint_io.save_safetensors{_prefix_advice(tensors)}")


def _from_torch_file(path, map_location):
    obj = load_torch_file(path, map_location)
    form = obj.get("format") if isinstance(obj, Mapping) else None
    if isinstance(form, str) and form == CHECKPOINT_FORMAT:
        missing = [key for key in ("architecture", "model_state_dict", "optimizer_state_dict", "rng")
                   if key not in obj]
        if missing:
            raise CheckpointError(f"{path} is an incomplete checkpoint: {missing} missing")
        checkpoint = dict(obj, **_weights_only(obj["architecture"], obj["model_state_dict"], path))
        checkpoint["optimizer_state_dict"] = obj["optimizer_state_dict"]
        _check_optimizer_state(obj["optimizer_state_dict"], path)
        check_rng_state(obj["rng"], path)
        return checkpoint
    if isinstance(obj, Mapping) and "format" in obj:
        raise CheckpointError(
            f"{path} has format {_quote(form)}; this module reads {CHECKPOINT_FORMAT!r}")
    if isinstance(obj, Mapping) and {*CLASSIC_KEYS, "state_dict"} <= set(obj):
        return _weights_only(obj, obj["state_dict"], path)
    if _is_network_state_dict(obj):
        return _weights_only(_architecture_from_state_dict(obj, path), obj, path)
    described = (f"a dict with keys {_quote(sorted(map(str, obj))[:8])}"
                 if isinstance(obj, Mapping) else f"a {type(obj).__name__}")
    raise CheckpointError(
        f"{path} holds {described}, not a checkpoint of fc_model.Network: expected a file "
        "written by checkpoint_io.save_checkpoint, a classic checkpoint or a Network state_dict"
        f"{_prefix_advice(obj)}")


def load_checkpoint(path, map_location="cpu"):
    """Read a checkpoint file safely and return it as a general checkpoint.

    Accepted: a general checkpoint written by ``save_checkpoint``; a
    safetensors file written by ``save_safetensors``; a classic-course
    checkpoint (``input_size``, ``output_size``, ``hidden_layers``,
    ``state_dict``); and a bare ``fc_model.Network`` ``state_dict`` (as a
    ``torch.save`` or safetensors file), whose sizes are read off its weights
    (dropout 0.5 assumed). All but the first come back with
    ``optimizer_state_dict`` set to None.

    Everything is checked before it is returned: the architecture's values,
    and that the file holds exactly the tensors, of exactly the shapes, that
    this architecture has; so no model is ever built from sizes the file's
    own tensors do not back.

    ``map_location`` says where the loaded tensors go (a device such as
    ``"cpu"`` or ``"cuda"``, or anything ``torch.load`` accepts); it moves no
    model. A device this machine lacks raises ``ValueError``.

    Raises ``CheckpointError``, naming the file, for a missing, truncated,
    random, foreign or inconsistent file, and for one that holds Python objects.
    """
    path = Path(path)
    if isinstance(map_location, (str, torch.device)):
        map_location = check_device(map_location)
    if file_kind(path) == "safetensors":
        if not isinstance(map_location, torch.device):
            raise ValueError(f"map_location must be a device for a safetensors file, got {map_location!r}")
        return _from_safetensors(path, map_location)
    return _from_torch_file(path, map_location)


def _optimizer_problems(optimizer_state, optimizer):
    """How a saved optimizer state differs from what ``optimizer`` can take (empty when it fits)."""
    saved_groups, groups = optimizer_state["param_groups"], optimizer.param_groups
    if len(saved_groups) != len(groups):
        return [f"{len(saved_groups)} parameter groups saved, the optimizer has {len(groups)}"]
    if [len(g["params"]) for g in saved_groups] != [len(g["params"]) for g in groups]:
        return ["the parameter groups hold other numbers of parameters"]
    parameters = dict(zip((i for g in saved_groups for i in g["params"]),
                          (p for g in groups for p in g["params"])))
    problems = []
    for index, state in optimizer_state["state"].items():
        if index not in parameters:
            problems.append(f"state for a parameter {_quote(index)} that no group holds")
            continue
        for name, value in state.items():
            if torch.is_tensor(value) and value.dim() > 0 \
                    and tuple(value.shape) != tuple(parameters[index].shape):
                problems.append(f"{name} of parameter {index} has shape {tuple(value.shape)}, "
                                f"the parameter {tuple(parameters[index].shape)}")
            elif not torch.is_tensor(value) and not isinstance(value, (int, float, bool, type(None))):
                problems.append(f"{name} of parameter {index} is {_quote(value)}")
    return problems


def restore(checkpoint, model, optimizer=None, path="the checkpoint"):
    """Load a checkpoint (from ``load_checkpoint``) into an existing model and optimizer.

    Everything is checked first and copied only then: if the model has
    another architecture, or the optimizer state does not fit the optimizer,
    ``CheckpointError`` says why and neither is changed. The values are
    copied into the model's parameters wherever they live, and the
    optimizer's state goes beside its parameters.
    """
    saved, built = checkpoint["architecture"], model.architecture
    if any(saved.get(key) != built[key] for key in ("input_size", "output_size", "hidden_layers")):
        raise CheckpointError(
            f"{path} was saved from a model with {_quote(saved)}, but this model has {built}: "
            "build the model from checkpoint['architecture'], or use fc_model.load_network(path)")
    problems = _shape_problems(checkpoint["model_state_dict"],
                               {name: t.shape for name, t in model.state_dict().items()})
    if problems:
        raise CheckpointError(f"{path} does not fit the model: {'; '.join(problems[:6])}")
    if optimizer is not None:
        if checkpoint["optimizer_state_dict"] is None:
            raise CheckpointError(f"{path} holds no optimizer state, so training cannot resume exactly")
        problems = _optimizer_problems(checkpoint["optimizer_state_dict"], optimizer)
        if problems:
            raise CheckpointError(
                f"{path}: the optimizer state does not fit the optimizer ({'; '.join(problems[:4])})")
    model.load_state_dict(checkpoint["model_state_dict"])
    if optimizer is not None:
        optimizer.load_state_dict(checkpoint["optimizer_state_dict"])
