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
import os
import pickle
import re
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

import safetensors.torch
import torch
from safetensors import SafetensorError

from devices import check_device

CHECKPOINT_FORMAT = "fc_model.checkpoint/1"
SAFETENSORS_FORMAT = "fc_model.safetensors/1"

# What a classic-course checkpoint holds besides its state_dict, and the
# dropout it assumed when it did not say.
CLASSIC_KEYS = ("input_size", "output_size", "hidden_layers")
CLASSIC_DROP_P = 0.5


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used; the message names the file and the problem."""


# --------------------------------------------------------------------------- writing

@contextlib.contextmanager
def atomic_write(path):
    """Write a file so that ``path`` holds either its old content or the complete new one.

    Yields a binary file opened on a temporary file in the same folder. When
    the block ends without error, the data is flushed to disk and the
    temporary file replaces ``path`` in a single rename. If the block raises,
    ``path`` is untouched and the temporary file is removed; if the process is
    killed, ``path`` is untouched too (a hidden ``.part`` file may remain).
    """
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with open(tmp, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        tmp.chmod(0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


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
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    with open(path, "rb") as file:
        head = file.read(9)
    if head.startswith(b"PK"):
        return "torch"
    if len(head) == 9 and head[8:9] == b"{":
        return "safetensors"
    return None


def _torch_load(path, map_location):
    """``torch.load`` with ``weights_only=True``, every failure turned into a CheckpointError."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile,
            SafetensorError) as err:
        text = str(err)
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if refused:
            raise CheckpointError(
                f"{path} contains Python objects, not only tensors and numbers, so it is "
                f"refused (found {refused.group(1)}). Unpickling such a file can run arbitrary "
                "code: load it with weights_only=False only if you made it yourself.") from None
        details = text.split("WeightsUnpickler error:")[-1].strip()
        reason = details.split(". ")[0].splitlines()[0] if details else "empty file"
        raise CheckpointError(
            f"{path} is not a complete PyTorch checkpoint: it is truncated, damaged or was "
            f"not written by torch.save ({reason})") from None


def _safetensors_load(path, map_location):
    """The tensors and the metadata of a safetensors file, the tensors on ``map_location``."""
    try:
        with safetensors.safe_open(path, framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name).to(map_location) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(
            f"{path} is not a complete safetensors file: it is truncated, damaged or of "
            f"another format ({err})") from None
    return tensors, metadata


def _architecture_from_state_dict(state_dict):
    """Infer ``fc_model.Network`` sizes from the weight shapes of a bare ``state_dict``."""
    hidden = []
    while f"hidden_layers.{len(hidden)}.weight" in state_dict:
        hidden.append(state_dict[f"hidden_layers.{len(hidden)}.weight"].shape[0])
    first = state_dict["hidden_layers.0.weight"]
    return {"input_size": first.shape[1], "output_size": state_dict["output.weight"].shape[0],
            "hidden_layers": hidden, "drop_p": CLASSIC_DROP_P}


def _is_network_state_dict(obj):
    return (isinstance(obj, Mapping) and "hidden_layers.0.weight" in obj
            and "output.weight" in obj and all(torch.is_tensor(v) for v in obj.values()))


def _weights_only(architecture, state_dict):
    """A general checkpoint that holds weights and their architecture, and nothing to resume from."""
    return {"format": CHECKPOINT_FORMAT, "architecture": architecture,
            "model_state_dict": dict(state_dict), "optimizer_state_dict": None}


def _from_safetensors(path, map_location):
    tensors, metadata = _safetensors_load(path, map_location)
    if metadata.get("format") == SAFETENSORS_FORMAT and "architecture" in metadata:
        try:
            architecture = json.loads(metadata["architecture"])
        except ValueError as err:
            raise CheckpointError(
                f"{path} has unreadable architecture metadata {metadata['architecture']!r} "
                f"({err})") from None
        return _weights_only(architecture, tensors)
    if _is_network_state_dict(tensors):
        return _weights_only(_architecture_from_state_dict(tensors), tensors)
    raise CheckpointError(
        f"{path} has no fc_model architecture in its metadata (found {sorted(metadata)}) and "
        "its tensors are not those of a Network: it was not written by "
        "checkpoint_io.save_safetensors")


def _from_torch_file(path, map_location):
    obj = _torch_load(path, map_location)
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
        missing = {"architecture", "model_state_dict", "optimizer_state_dict"} - set(obj)
        if missing:
            raise CheckpointError(f"{path} is an incomplete checkpoint: {sorted(missing)} missing")
        return dict(obj)
    if isinstance(obj, Mapping) and "format" in obj:
        raise CheckpointError(
            f"{path} has format {obj['format']!r}; this module reads {CHECKPOINT_FORMAT!r}")
    if isinstance(obj, Mapping) and {*CLASSIC_KEYS, "state_dict"} <= set(obj):
        architecture = {"input_size": obj["input_size"], "output_size": obj["output_size"],
                        "hidden_layers": list(obj["hidden_layers"]),
                        "drop_p": obj.get("drop_p", CLASSIC_DROP_P)}
        return _weights_only(architecture, obj["state_dict"])
    if _is_network_state_dict(obj):
        return _weights_only(_architecture_from_state_dict(obj), obj)
    described = (f"a dict with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, Mapping)
                 else f"a {type(obj).__name__}")
    raise CheckpointError(
        f"{path} holds {described}, not a checkpoint of fc_model.Network: expected a file "
        "written by checkpoint_io.save_checkpoint, a classic checkpoint or a Network state_dict")


def load_checkpoint(path, map_location="cpu"):
    """Read a checkpoint file safely and return it as a general checkpoint.

    Accepted: a general checkpoint written by ``save_checkpoint``; a
    safetensors file written by ``save_safetensors``; a classic-course
    checkpoint (``input_size``, ``output_size``, ``hidden_layers``,
    ``state_dict``); and a bare ``fc_model.Network`` ``state_dict`` (as a
    ``torch.save`` or safetensors file), whose sizes are read off its weights
    (dropout 0.5 assumed). All but the first come back with
    ``optimizer_state_dict`` set to None.

    ``map_location`` says where the loaded tensors go (a device such as
    ``"cpu"`` or ``"cuda"``, or anything ``torch.load`` accepts); it moves no
    model. A device this machine lacks raises ``ValueError``.

    Raises ``CheckpointError``, naming the file, for a missing, truncated,
    random or foreign file, and for one that holds Python objects.
    """
    path = Path(path)
    if isinstance(map_location, (str, torch.device)):
        map_location = check_device(map_location)
    if file_kind(path) == "safetensors":
        if not isinstance(map_location, torch.device):
            raise ValueError(f"map_location must be a device for a safetensors file, got {map_location!r}")
        return _from_safetensors(path, map_location)
    return _from_torch_file(path, map_location)


def restore(checkpoint, model, optimizer=None, path="the checkpoint"):
    """Load a checkpoint (from ``load_checkpoint``) into an existing model and optimizer.

    The values are copied into the model's parameters wherever they live, and
    the optimizer's state goes beside its parameters. The model must have the
    checkpoint's architecture; otherwise ``CheckpointError`` says both, and
    nothing is changed.
    """
    saved, built = checkpoint["architecture"], model.architecture
    if any(saved.get(key) != built[key] for key in ("input_size", "output_size", "hidden_layers")):
        raise CheckpointError(
            f"{path} was saved from a model with {saved}, but this model has {built}: "
            "build the model from checkpoint['architecture'], or use fc_model.load_network(path)")
    try:
        model.load_state_dict(checkpoint["model_state_dict"])
    except RuntimeError as err:
        raise CheckpointError(f"{path} does not fit the model: {err}") from None
    if optimizer is not None:
        if checkpoint["optimizer_state_dict"] is None:
            raise CheckpointError(f"{path} holds no optimizer state, so training cannot resume exactly")
        try:
            optimizer.load_state_dict(checkpoint["optimizer_state_dict"])
        except (ValueError, KeyError) as err:
            raise CheckpointError(f"{path}: the optimizer state does not fit the optimizer ({err})") from None
