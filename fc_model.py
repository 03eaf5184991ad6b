"""A small fully-connected classifier and the loop that trains it.

This is the companion module of the "Saving and Loading Models" lessons.
``Network`` keeps the exact ``state_dict`` keys of the classic course code
(``hidden_layers.0.weight`` ... ``output.bias``), so checkpoints made with
that code load into it, and it remembers the sizes it was built with
(``model.architecture``), so a checkpoint can carry them.
"""

import torch
import torch.nn.functional as F
from torch import nn


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


def model_device(model):
    """The device holding the model's parameters."""
    return next(model.parameters()).device


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


def train(model, trainloader, testloader, criterion, optimizer, epochs=5,
          print_every=40, device=None):
    """Train ``model`` and report test metrics every ``print_every`` steps.

    Prints the classic progress line, for example
    ``Epoch: 1/2..  Training Loss: 0.616..  Test Loss: 0.474..  Test Accuracy: 0.829``,
    where the test metrics cover the whole test set. The test set is read
    once and kept in memory (on ``device``) for all evaluations.

    Args:
        model: the network; it is moved to ``device``.
        trainloader, testloader: iterables of (images, labels) batches.
        criterion: the loss, for example nn.NLLLoss().
        optimizer: built on ``model.parameters()``.
        epochs: number of passes over ``trainloader`` (a positive integer).
        print_every: steps between progress lines (a positive integer).
        device: "cpu", "cuda", "mps" or a torch.device; by default the
            model's own device.

    Returns:
        The history: a list of dicts with keys ``epoch``, ``step``,
        ``train_loss``, ``test_loss`` and ``test_accuracy``, one per line printed.
    """
    check_positive_int(epochs=epochs, print_every=print_every)
    device = model_device(model) if device is None else torch.device(device)
    model.to(device)
    test_batches = _cached_batches(testloader, device)

    history = []
    steps, running_loss = 0, 0.0
    for epoch in range(epochs):
        model.train()
        for images, labels in trainloader:
            steps += 1
            images, labels = images.to(device), labels.to(device)

            optimizer.zero_grad()
            loss = criterion(model(images), labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()

            if steps % print_every == 0:
                test_loss, accuracy = validation(model, test_batches, criterion, device)
                record = {
                    "epoch": epoch + 1,
                    "step": steps,
                    "train_loss": running_loss / print_every,
                    "test_loss": test_loss,
                    "test_accuracy": accuracy,
                }
                history.append(record)
                print(f"Epoch: {epoch + 1}/{epochs}.. ",
                      f"Training Loss: {record['train_loss']:.3f}.. ",
                      f"Test Loss: {test_loss:.3f}.. ",
                      f"Test Accuracy: {accuracy:.3f}")
                running_loss = 0.0
    return history
