"""A small fully-connected classifier and the loop that trains it.

This is the companion module of the "Saving and Loading Models" lessons.
``Network`` keeps the exact ``state_dict`` keys of the classic course code
(``hidden_layers.0.weight`` ... ``output.bias``), so checkpoints made with
that code load into it, and it remembers the sizes it was built with
(``model.architecture``), so a checkpoint can carry them.

``train`` prints the classic progress lines, and can save a checkpoint (with
the ``checkpoint_io`` module) every N steps and resume from it exactly: what it
saves besides the model and the optimizer is one ``TrainingState``.
``load_network`` rebuilds a ``Network`` from any file ``checkpoint_io`` reads.

``NETWORK`` tells ``checkpoint_io`` what it needs to know about a ``Network``
(a ``ModelSpec``): which architectures are valid, which tensors each one has,
and how its files are tagged. The rules live here, once: ``Network`` itself
is built only from an architecture that ``check_architecture`` accepts.
"""

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from saveload_lessons import checkpoint_io
from saveload_lessons.checkpoint_io import CheckpointError, ModelSpec
from saveload_lessons.devices import check_device, model_device, move_to
from saveload_lessons.values import check_positive_int, is_count, is_number, quote

# The dropout of the classic course's networks, whose checkpoints did not record it
CLASSIC_DROP_P = 0.5


def check_architecture(architecture):
    """The arguments of ``Network`` as plain values (``drop_p`` defaulting to 0.5), or
    ``ValueError`` listing every problem.

    Sizes must be positive integers, ``hidden_layers`` a non-empty list of them
    and ``drop_p`` a probability in [0, 1). Other keys are ignored.
    """
    if not isinstance(architecture, Mapping):
        raise ValueError(f"an architecture is a dict of Network's arguments, got {quote(architecture)}")
    problems = [f"{key} is missing" for key in ("input_size", "output_size", "hidden_layers")
                if key not in architecture]
    problems += [f"{key} should be a positive integer, got {quote(architecture[key])}"
                 for key in ("input_size", "output_size")
                 if key in architecture and not is_count(architecture[key], 1)]
    hidden = architecture.get("hidden_layers", [])
    if not isinstance(hidden, (list, tuple)) or not hidden or not all(is_count(size, 1) for size in hidden):
        problems.append(f"hidden_layers should be a non-empty list of positive integers, got {quote(hidden)}")
    drop_p = architecture.get("drop_p", CLASSIC_DROP_P)
    if not is_number(drop_p) or not (math.isfinite(drop_p) and 0 <= drop_p < 1):
        problems.append(f"drop_p should be a probability in [0, 1), got {quote(drop_p)}")
    if problems:
        raise ValueError("; ".join(problems))
    return {"input_size": architecture["input_size"], "output_size": architecture["output_size"],
            "hidden_layers": list(hidden), "drop_p": float(drop_p)}


def tensor_shapes(architecture):
    """The name and shape of every tensor in the ``state_dict`` of a Network of ``architecture``."""
    sizes = [architecture["input_size"], *architecture["hidden_layers"]]
    shapes = {}
    for index, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        shapes[f"hidden_layers.{index}.weight"] = (n_out, n_in)
        shapes[f"hidden_layers.{index}.bias"] = (n_out,)
    shapes["output.weight"] = (architecture["output_size"], sizes[-1])
    shapes["output.bias"] = (architecture["output_size"],)
    return shapes


def architecture_from_weights(state_dict):
    """The sizes of the Network whose ``state_dict`` this is, read off its weights (dropout
    0.5 assumed); None when its names are not a Network's."""
    if "hidden_layers.0.weight" not in state_dict or "output.weight" not in state_dict:
        return None
    weights = []
    while f"hidden_layers.{len(weights)}.weight" in state_dict:
        weights.append(state_dict[f"hidden_layers.{len(weights)}.weight"])
    if any(w.dim() != 2 for w in weights) or state_dict["output.weight"].dim() != 2:
        raise ValueError("its weight tensors are not the matrices of a Network")
    return {"input_size": weights[0].shape[1], "output_size": state_dict["output.weight"].shape[0],
            "hidden_layers": [w.shape[0] for w in weights], "drop_p": CLASSIC_DROP_P}


NETWORK = ModelSpec(
    name="fc_model.Network",
    checkpoint_format="fc_model.checkpoint/1",
    safetensors_format="fc_model.safetensors/1",
    check_architecture=check_architecture,
    tensor_shapes=tensor_shapes,
    architecture_from_weights=architecture_from_weights,
    legacy_keys=("input_size", "output_size", "hidden_layers"),  # the classic course's checkpoints
)


class Network(nn.Module):
    """A fully-connected network with ReLU, dropout and a log-softmax output.

    Args:
        input_size: number of input features (784 for a 28x28 image).
        output_size: number of classes.
        hidden_layers: sizes of the hidden layers, for example [512, 256, 128].
        drop_p: dropout probability applied after every hidden layer.
    """

    spec = NETWORK  # what checkpoint_io needs to save and read its files

    def __init__(self, input_size, output_size, hidden_layers, drop_p=CLASSIC_DROP_P):
        super().__init__()
        self.architecture = architecture = check_architecture(
            {"input_size": input_size, "output_size": output_size,
             "hidden_layers": hidden_layers, "drop_p": drop_p})
        sizes = [architecture["input_size"], *architecture["hidden_layers"]]
        self.hidden_layers = nn.ModuleList(
            nn.Linear(n_in, n_out) for n_in, n_out in zip(sizes[:-1], sizes[1:])
        )
        self.output = nn.Linear(sizes[-1], architecture["output_size"])
        self.dropout = nn.Dropout(p=architecture["drop_p"])

    def forward(self, x):
        """Return log-probabilities of shape (batch, output_size)."""
        x = x.reshape(x.shape[0], -1)
        for linear in self.hidden_layers:
            x = self.dropout(F.relu(linear(x)))
        return F.log_softmax(self.output(x), dim=1)


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


def load_network(path, map_location="cpu"):
    """Rebuild the ``Network`` saved in ``path`` on the device ``map_location``
    (default the CPU), in eval mode.

    Accepts every file ``checkpoint_io.load_checkpoint`` reads, checked as it
    checks them. Memory holds the weights once: the model is built on the
    ``meta`` device (shapes, no values, no random initialisation to overwrite),
    and the file's tensors become the model's parameters (``assign=True``), on
    ``map_location`` and with the file's dtypes. On the meta device, nothing is
    allocated at all.

    The file is read, not mapped (``mmap=True`` would cost no less once every
    weight has been used): a mapped file must not change while the model lives,
    and a learner may well overwrite the checkpoint the model came from (on
    Windows that fails; elsewhere, rewriting it in place can crash the process).
    """
    device = check_device(map_location)
    checkpoint = checkpoint_io.load_checkpoint(path, NETWORK, device)  # everything checked
    with torch.device("meta"):  # shapes only: no values to initialise and overwrite
        model = Network(**checkpoint["architecture"])
    checkpoint_io.restore(checkpoint, model, path=path, assign=True)
    return model.eval()


# --------------------------------------------------------------------------- training

def _is_history(value):
    """True for a history as ``train`` writes it: a list of flat dicts from names to numbers."""
    return isinstance(value, list) and all(
        isinstance(record, dict)
        and all(isinstance(key, str) and is_number(number) for key, number in record.items())
        for record in value)


def _is_rng_state(value):
    try:
        checkpoint_io.check_rng_state(value)
    except CheckpointError:
        return False
    return True


def _optional(check):
    return lambda value: value is None or check(value)


@dataclass
class TrainingState:
    """Where a run of ``train`` stands: what a checkpoint must hold, besides the model,
    the optimizer and the generator states, to resume it exactly.

    Attributes:
        epoch: epochs completed.
        batch: batches done in the epoch under way (0 at an epoch boundary).
        step: optimizer steps taken in all.
        loss: the last batch's training loss.
        running_loss: the sum of training losses since the last report.
        best_accuracy: the best test accuracy at a report so far.
        history: one dict per report (see ``train``).
        epoch_start_rng: the generator states when the epoch under way began,
            so that a run resumed mid-epoch shuffles the same way (None at an
            epoch boundary).

    Each field's ``check`` says which values a checkpoint may hold for it.
    """
    epoch: int = field(default=0, metadata={"check": is_count})
    batch: int = field(default=0, metadata={"check": is_count})
    step: int = field(default=0, metadata={"check": is_count})
    loss: float | None = field(default=None, metadata={"check": _optional(is_number)})
    running_loss: float = field(default=0.0, metadata={"check": is_number})
    best_accuracy: float | None = field(default=None, metadata={"check": _optional(is_number)})
    history: list = field(default_factory=list, metadata={"check": _is_history})
    epoch_start_rng: dict | None = field(default=None, metadata={"check": _optional(_is_rng_state)})

    def to_checkpoint(self):
        """The state as plain values, to pass to ``checkpoint_io.save_checkpoint``."""
        return asdict(self)

    @classmethod
    def from_checkpoint(cls, checkpoint, path="the checkpoint"):
        """The state saved in a checkpoint; ``CheckpointError`` if it has none or a broken one."""
        missing = [f.name for f in fields(cls) if f.name not in checkpoint]
        if missing:
            raise CheckpointError(
                f"{path} holds no training state ({', '.join(missing)} missing), so training "
                "cannot resume from it: it was not written by fc_model.train")
        wrong = [f.name for f in fields(cls) if not f.metadata["check"](checkpoint[f.name])]
        if wrong:
            raise CheckpointError(f"{path} holds an unusable training state: {', '.join(wrong)} "
                                  "hold values train never writes")
        state = cls(**{f.name: checkpoint[f.name] for f in fields(cls)})
        if state.batch and state.epoch_start_rng is None:
            raise CheckpointError(f"{path} stopped in the middle of an epoch but lacks the "
                                  "generator state of the epoch's start (epoch_start_rng)")
        return state


def _check_resumable(state, trainloader, path):
    """Raise ``CheckpointError`` if ``state`` stopped past the end of ``trainloader``'s epoch."""
    if state.batch and hasattr(trainloader, "__len__") and state.batch >= len(trainloader):
        raise CheckpointError(
            f"{path} stopped after batch {quote(state.batch)} of an epoch, but the "
            f"training data has {len(trainloader)} batches: resume with the data the run was "
            "started with")


def _epoch_batches(trainloader, state, resumed_rng):
    """An iterator over the batches of the epoch ``state.epoch``, from batch ``state.batch`` on.

    A fresh epoch records the generator states at its start (the DataLoader
    draws its shuffling from them). A run resumed mid-epoch first goes back to
    the states of the epoch's start, draws the same shuffling and skips the
    batches already done, then takes up the states saved with the checkpoint,
    so that dropout draws the same masks as in a run that never stopped.
    """
    if resumed_rng is not None:
        checkpoint_io.set_rng_state(state.epoch_start_rng if state.batch else resumed_rng)
    state.epoch_start_rng = checkpoint_io.rng_state()
    batches = iter(trainloader)
    for _ in range(state.batch):
        next(batches)
    if resumed_rng is not None and state.batch:
        checkpoint_io.set_rng_state(resumed_rng)
    return batches


def progress_line(epoch, epochs, train_loss, test_loss, accuracy):
    """The classic course's progress line, for example
    ``Epoch: 1/2..  Training Loss: 0.616..  Test Loss: 0.474..  Test Accuracy: 0.829``."""
    return (f"Epoch: {epoch}/{epochs}..  Training Loss: {train_loss:.3f}..  "
            f"Test Loss: {test_loss:.3f}..  Test Accuracy: {accuracy:.3f}")


def _report(state, model, test_batches, criterion, device, print_every, epochs):
    """Evaluate on the test set, print the classic progress line and add it to the history."""
    test_loss, accuracy = validation(model, test_batches, criterion, device)
    record = {
        "epoch": state.epoch + 1,
        "step": state.step,
        "train_loss": state.running_loss / print_every,
        "test_loss": test_loss,
        "test_accuracy": accuracy,
    }
    state.history.append(record)
    state.running_loss = 0.0
    print(progress_line(state.epoch + 1, epochs, record["train_loss"], test_loss, accuracy))
    return accuracy


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
            end of every epoch and every ``checkpoint_every`` steps, holding
            the ``TrainingState`` besides what ``save_checkpoint`` stores.
        resume: continue from ``checkpoint_path`` if that file exists. On the
            CPU the result is bit-identical to a run that was never stopped,
            provided the data, model and optimizer are built the same way.
            Everything the resume needs is checked before the model, the
            optimizer or the random-number generators change: a file that
            cannot be resumed from raises ``CheckpointError`` and changes
            nothing.
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

    state, resumed_rng = TrainingState(), None
    if resume and Path(checkpoint_path).exists():  # everything is checked before restore copies
        checkpoint = checkpoint_io.load_checkpoint(checkpoint_path, NETWORK, map_location=device)
        state = TrainingState.from_checkpoint(checkpoint, checkpoint_path)
        _check_resumable(state, trainloader, checkpoint_path)
        checkpoint_io.restore(checkpoint, model, optimizer, path=checkpoint_path)
        resumed_rng = checkpoint["rng"]

    def save(path):
        checkpoint_io.save_checkpoint(path, model, optimizer, **state.to_checkpoint())

    while state.epoch < epochs:
        model.train()
        batches = _epoch_batches(trainloader, state, resumed_rng)
        resumed_rng = None
        for images, labels in batches:
            state.batch += 1
            state.step += 1
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad()
            loss = criterion(model(images), labels)
            loss.backward()
            optimizer.step()
            state.loss = loss.item()
            state.running_loss += state.loss

            if state.step % print_every == 0:
                accuracy = _report(state, model, test_batches, criterion, device,
                                   print_every, epochs)
                if best_path is not None and (state.best_accuracy is None
                                              or accuracy > state.best_accuracy):
                    state.best_accuracy = accuracy
                    save(best_path)
            if checkpoint_every and state.step % checkpoint_every == 0:
                save(checkpoint_path)
        state.epoch, state.batch, state.epoch_start_rng = state.epoch + 1, 0, None
        if checkpoint_path is not None:
            save(checkpoint_path)
    return state.history
