"""A small fully-connected classifier, the loop that trains it, and its checkpoints.

This is the companion module of the "Saving and Loading Models" lessons.
``Network`` keeps the exact ``state_dict`` keys of the classic course code
(``hidden_layers.0.weight`` ... ``output.bias``), so checkpoints made with
that code load into it, and it remembers the sizes it was built with
(``model.architecture``), so a checkpoint can carry them.

Checkpoints are written atomically (``atomic_write``) and read with
``torch.load(..., weights_only=True)`` only (``load_checkpoint``); ``train``
can save one every N steps and resume from it exactly. The weights can also
be stored as safetensors, with the architecture in the file's metadata
(``save_safetensors``, ``load_safetensors``). No function here unpickles
arbitrary Python objects.
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
import torch.nn.functional as F
from safetensors import SafetensorError
from torch import nn

from devices import check_device, model_device, move_to

CHECKPOINT_FORMAT = "fc_model.checkpoint/1"
SAFETENSORS_FORMAT = "fc_model.safetensors/1"


class Network(nn.Module):
    """A fully-connected network with ReLU, dropout and a log-softmax output.

    Args:
        input_size: number of input features (784 for a 28x28 image).
        output_size: number of classes.
        hidden_layers: sizes of the hidden layers, for example [512, 256, 128].
        drop_p: dropout probability applied after every hidden layer.
    """

    def __init__(self, input_size, output_size, hidden_layers, drop_p=0.5):
        super().__init__()
        hidden_layers = [int(size) for size in hidden_layers]
        if not hidden_layers:
            raise ValueError("hidden_layers needs at least one size, for example [512, 256, 128]")
        if min([input_size, output_size, *hidden_layers]) < 1:
            raise ValueError(
                f"layer sizes must be positive, got input_size={input_size}, "
                f"output_size={output_size}, hidden_layers={hidden_layers}"
            )
        if not 0 <= drop_p < 1:
            raise ValueError(f"drop_p is a probability in [0, 1), got {drop_p}")

        sizes = [input_size, *hidden_layers]
        self.hidden_layers = nn.ModuleList(
            nn.Linear(n_in, n_out) for n_in, n_out in zip(sizes[:-1], sizes[1:])
        )
        self.output = nn.Linear(hidden_layers[-1], output_size)
        self.dropout = nn.Dropout(p=drop_p)
        self.architecture = {
            "input_size": int(input_size),
            "output_size": int(output_size),
            "hidden_layers": hidden_layers,
            "drop_p": float(drop_p),
        }

    def forward(self, x):
        """Return log-probabilities of shape (batch, output_size)."""
        x = x.reshape(x.shape[0], -1)
        for linear in self.hidden_layers:
            x = self.dropout(F.relu(linear(x)))
        return F.log_softmax(self.output(x), dim=1)


def check_positive_int(**values):
    """Raise ``ValueError`` unless every value is a positive integer.

    Used as ``check_positive_int(epochs=epochs)`` so the message names the
    parameter, for example ``epochs must be a positive integer, got 0``.
    """
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def validation(model, loader, criterion, device=None):
    """Mean loss and accuracy of ``model`` over every example in ``loader``.

    Each batch counts by its number of examples, so a short last batch does
    not bias the result (the classic version averaged the batch means).
    The model runs in eval mode without gradients; its previous mode is
    restored afterwards.

    Args:
        loader: an iterable of (images, labels) batches, such as a DataLoader.
        criterion: a loss that averages over the batch, such as nn.NLLLoss().
        device: where to compute; by default the model's own device.

    Returns:
        (mean loss, accuracy) as Python floats.
    """
    device = model_device(model) if device is None else torch.device(device)
    was_training = model.training
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    try:
        with torch.no_grad():
            for images, labels in loader:
                images, labels = images.to(device), labels.to(device)
                log_ps = model(images)
                total_loss += criterion(log_ps, labels).item() * len(labels)
                correct += (log_ps.argmax(dim=1) == labels).sum().item()
                count += len(labels)
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("the validation loader yielded no examples")
    return total_loss / count, correct / count


def _cached_batches(loader, device, batch_size=1000):
    """Read ``loader`` once and return its examples as large on-device batches.

    The test set does not change during training, so transforming it once
    instead of at every evaluation is what makes ``train`` fast.
    """
    images, labels = zip(*loader)
    images = torch.cat(images).to(device)
    labels = torch.cat(labels).to(device)
    return list(zip(images.split(batch_size), labels.split(batch_size)))


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used; the message names the file and the problem."""


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
    """Restore states returned by ``rng_state``."""
    torch.set_rng_state(state["cpu"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save_checkpoint(path, model, optimizer=None, **training_state):
    """Save a general checkpoint of a ``Network`` atomically.

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


def _file_kind(path):
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


def _read(path, map_location):
    """``torch.load`` with ``weights_only=True``, every failure turned into a CheckpointError."""
    path = Path(path)
    if isinstance(map_location, (str, torch.device)):
        map_location = check_device(map_location)
    if _file_kind(path) == "safetensors":
        raise CheckpointError(
            f"{path} is a safetensors file, not a torch.save checkpoint: load it with "
            "fc_model.load_safetensors (or fc_model.load_network)")
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


def _architecture_from_state_dict(state_dict):
    """Infer Network sizes from the weight shapes of a bare ``state_dict``."""
    hidden = []
    while f"hidden_layers.{len(hidden)}.weight" in state_dict:
        hidden.append(state_dict[f"hidden_layers.{len(hidden)}.weight"].shape[0])
    first = state_dict["hidden_layers.0.weight"]
    return {"input_size": first.shape[1], "output_size": state_dict["output.weight"].shape[0],
            "hidden_layers": hidden, "drop_p": 0.5}


def _is_network_state_dict(obj):
    return (isinstance(obj, Mapping) and "hidden_layers.0.weight" in obj
            and "output.weight" in obj and all(torch.is_tensor(v) for v in obj.values()))


def load_checkpoint(path, map_location="cpu"):
    """Read a checkpoint of a ``Network`` safely and return it as a general checkpoint.

    Three kinds of file are accepted: a general checkpoint written by
    ``save_checkpoint``; a classic-course checkpoint (``input_size``,
    ``output_size``, ``hidden_layers``, ``state_dict``); and a bare
    ``state_dict``, whose sizes are read off its weights (dropout 0.5 assumed).
    The last two come back with ``optimizer_state_dict`` set to None.

    ``map_location`` says where the loaded tensors go (a device such as
    ``"cpu"`` or ``"cuda"``, or anything ``torch.load`` accepts); it moves
    no model. A device this machine lacks raises ``ValueError``.

    Raises ``CheckpointError``, naming the file, for a missing, truncated,
    random or foreign file, and for one that holds Python objects.
    """
    obj = _read(path, map_location)
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
        missing = {"architecture", "model_state_dict", "optimizer_state_dict"} - set(obj)
        if missing:
            raise CheckpointError(f"{path} is an incomplete checkpoint: {sorted(missing)} missing")
        return dict(obj)
    if isinstance(obj, Mapping) and "format" in obj:
        raise CheckpointError(
            f"{path} has format {obj['format']!r}; this fc_model reads {CHECKPOINT_FORMAT!r}")
    if isinstance(obj, Mapping) and {"input_size", "output_size", "hidden_layers", "state_dict"} <= set(obj):
        architecture = {"input_size": obj["input_size"], "output_size": obj["output_size"],
                        "hidden_layers": list(obj["hidden_layers"]),
                        "drop_p": obj.get("drop_p", 0.5)}
        return {"format": CHECKPOINT_FORMAT, "architecture": architecture,
                "model_state_dict": obj["state_dict"], "optimizer_state_dict": None}
    if _is_network_state_dict(obj):
        return {"format": CHECKPOINT_FORMAT, "architecture": _architecture_from_state_dict(obj),
                "model_state_dict": dict(obj), "optimizer_state_dict": None}
    described = (f"a dict with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, Mapping)
                 else f"a {type(obj).__name__}")
    raise CheckpointError(
        f"{path} holds {described}, not a checkpoint of fc_model.Network: expected a file "
        "written by fc_model.save_checkpoint, a classic checkpoint or a Network state_dict")


def restore(checkpoint, model, optimizer=None, path="the checkpoint"):
    """Load a checkpoint (from ``load_checkpoint``) into an existing model and optimizer.

    The model must have the checkpoint's architecture; otherwise
    ``CheckpointError`` says both, and nothing is changed.
    """
    if model.architecture["hidden_layers"] != checkpoint["architecture"]["hidden_layers"] \
            or any(model.architecture[k] != checkpoint["architecture"][k]
                   for k in ("input_size", "output_size")):
        raise CheckpointError(
            f"{path} was saved from Network with {checkpoint['architecture']}, but the model "
            f"is a Network with {model.architecture}: build the model with "
            "fc_model.Network(**checkpoint['architecture']) or fc_model.load_network(path)")
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


def save_safetensors(path, model):
    """Save the weights of a ``Network`` as safetensors, atomically.

    The architecture goes into the file's string metadata (as JSON), so
    ``load_safetensors`` can rebuild the model from the file alone. A
    safetensors file holds tensors and strings only: no optimizer state,
    no Python objects, nothing that runs code when loaded.
    """
    metadata = {"format": SAFETENSORS_FORMAT, "architecture": json.dumps(model.architecture)}
    tensors = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    with atomic_write(path) as file:
        file.write(safetensors.torch.save(tensors, metadata=metadata))


def load_safetensors(path, map_location="cpu"):
    """Rebuild a ``Network`` from a file written by ``save_safetensors``, on the device
    ``map_location`` (default the CPU), in eval mode.

    Raises ``CheckpointError``, naming the file, when it is missing,
    truncated or random, of another format, or lacks valid architecture
    metadata; ``ValueError`` for a device this machine lacks.
    """
    path = Path(path)
    device = check_device(map_location)
    if _file_kind(path) == "torch":
        raise CheckpointError(
            f"{path} is a torch.save file, not safetensors: load it with "
            "fc_model.load_network or fc_model.load_checkpoint")
    try:
        with safetensors.safe_open(path, framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(
            f"{path} is not a complete safetensors file: it is truncated, damaged or of "
            f"another format ({err})") from None
    if metadata.get("format") != SAFETENSORS_FORMAT or "architecture" not in metadata:
        raise CheckpointError(
            f"{path} has no fc_model architecture in its metadata (found {sorted(metadata)}): "
            "it was not written by fc_model.save_safetensors")
    try:
        architecture = json.loads(metadata["architecture"])
        model = Network(**architecture)
    except (ValueError, TypeError) as err:
        raise CheckpointError(
            f"{path} has unusable architecture metadata {metadata['architecture']!r} ({err})") from None
    checkpoint = {"architecture": architecture, "model_state_dict": tensors,
                  "optimizer_state_dict": None}
    restore(checkpoint, model, path=path)  # on the CPU, where the tensors were read
    return model.to(device).eval()


def load_network(path, map_location="cpu"):
    """Rebuild the ``Network`` saved in ``path`` on the device ``map_location``
    (default the CPU), in eval mode.

    Accepts every kind ``load_checkpoint`` accepts, and safetensors files
    written by ``save_safetensors``. The tensors are loaded straight onto the
    device and copied into a model that is already there, so the model, its
    parameters and the file's tensors all end up on ``map_location``.
    """
    device = check_device(map_location)
    if _file_kind(path) == "safetensors":
        return load_safetensors(path, device)
    checkpoint = load_checkpoint(path, device)
    try:
        model = Network(**checkpoint["architecture"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path} has an unusable architecture: {err}") from None
    model.to(device)
    restore(checkpoint, model, path=path)
    return model.eval()


def train(model, trainloader, testloader, criterion, optimizer, epochs=5,
          print_every=40, device=None, checkpoint_path=None, checkpoint_every=None,
          resume=False, best_path=None):
    """Train ``model`` and report test metrics every ``print_every`` steps.

    Prints the classic progress line, for example
    ``Epoch: 1/2..  Training Loss: 0.616..  Test Loss: 0.474..  Test Accuracy: 0.829``,
    where the test metrics cover the whole test set. The test set is read
    once and kept in memory (on ``device``) for all evaluations.

    Args:
        model: the network; it is moved to ``device``, with the optimizer's state.
        trainloader, testloader: iterables of (images, labels) batches.
        criterion: the loss, for example nn.NLLLoss().
        optimizer: built on ``model.parameters()``.
        epochs: the total number of passes over ``trainloader``, counting
            those done before a resume (a positive integer).
        print_every: steps between progress lines (a positive integer).
        device: "cpu", "cuda", "mps" or a torch.device; by default the
            model's own device. The model, the optimizer's state and every
            batch are put there.
        checkpoint_path: if given, a general checkpoint is saved there at the
            end of every epoch and every ``checkpoint_every`` steps. Besides
            what ``save_checkpoint`` stores, it records ``epoch`` (epochs
            completed), ``batch`` (batches done in the next epoch), ``step``,
            ``loss``, ``history`` and the generator state at the start of the
            epoch, so that a resumed run sees the same data order.
        resume: continue from ``checkpoint_path`` if that file exists. On the
            CPU the result is bit-identical to a run that was never stopped,
            provided the data, model and optimizer are built the same way.
        best_path: if given, the model is also saved there whenever the test
            accuracy at a report is the best so far.

    Returns:
        The history: a list of dicts with keys ``epoch``, ``step``,
        ``train_loss``, ``test_loss`` and ``test_accuracy``, one per line printed
        (including those printed before a resume).
    """
    check_positive_int(epochs=epochs, print_every=print_every)
    if checkpoint_every is not None:
        check_positive_int(checkpoint_every=checkpoint_every)
    if (resume or checkpoint_every) and checkpoint_path is None:
        raise ValueError("resume and checkpoint_every need a checkpoint_path")
    device = model_device(model) if device is None else check_device(device, allow_meta=False)
    move_to(device, model, optimizer)
    test_batches = _cached_batches(testloader, device)

    # Where to start: from scratch, or from the checkpoint. "batch" counts the
    # batches already done in the unfinished epoch.
    progress = {"epoch": 0, "batch": 0, "step": 0, "loss": None, "running_loss": 0.0,
                "best_accuracy": None, "history": []}
    resumed = None  # the checkpoint, until its generator states are restored
    if resume and Path(checkpoint_path).exists():
        resumed = load_checkpoint(checkpoint_path, map_location=device)
        restore(resumed, model, optimizer, path=checkpoint_path)
        progress = {key: resumed[key] for key in progress}

    def save(path, epoch, batch, epoch_start_rng):
        state = dict(progress, epoch=epoch, batch=batch)
        save_checkpoint(path, model, optimizer, epoch_start_rng=epoch_start_rng, **state)

    for epoch in range(progress["epoch"], epochs):
        model.train()
        skip = progress["batch"] if epoch == progress["epoch"] else 0
        if resumed is not None:
            # Stopped mid-epoch: back to the state at the epoch's start, for the same shuffling.
            set_rng_state(resumed["epoch_start_rng"] if skip else resumed["rng"])
        epoch_start_rng = rng_state()
        batches = iter(trainloader)
        for _ in range(skip):
            next(batches)
        if resumed is not None and skip:
            set_rng_state(resumed["rng"])  # same dropout masks from here on
        resumed = None

        for batch, (images, labels) in enumerate(batches, start=skip + 1):
            progress["step"] += 1
            images, labels = images.to(device), labels.to(device)

            optimizer.zero_grad()
            loss = criterion(model(images), labels)
            loss.backward()
            optimizer.step()
            progress["loss"] = loss.item()
            progress["running_loss"] += progress["loss"]

            if progress["step"] % print_every == 0:
                test_loss, accuracy = validation(model, test_batches, criterion, device)
                record = {
                    "epoch": epoch + 1,
                    "step": progress["step"],
                    "train_loss": progress["running_loss"] / print_every,
                    "test_loss": test_loss,
                    "test_accuracy": accuracy,
                }
                progress["history"].append(record)
                print(f"Epoch: {epoch + 1}/{epochs}.. ",
                      f"Training Loss: {record['train_loss']:.3f}.. ",
                      f"Test Loss: {test_loss:.3f}.. ",
                      f"Test Accuracy: {accuracy:.3f}")
                progress["running_loss"] = 0.0
                if best_path is not None and (progress["best_accuracy"] is None
                                              or accuracy > progress["best_accuracy"]):
                    progress["best_accuracy"] = accuracy
                    save(best_path, epoch, batch, epoch_start_rng)
            if checkpoint_every and progress["step"] % checkpoint_every == 0:
                save(checkpoint_path, epoch, batch, epoch_start_rng)
        if checkpoint_path is not None:
            save(checkpoint_path, epoch + 1, 0, None)
    return progress["history"]
