"""fc_model: the network, validation and the training loop, on real Fashion-MNIST."""

import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn, optim
from torch.utils.data import DataLoader

import fc_model
from conftest import REPO

CLASSIC_KEYS = [
    "hidden_layers.0.weight", "hidden_layers.0.bias",
    "hidden_layers.1.weight", "hidden_layers.1.bias",
    "hidden_layers.2.weight", "hidden_layers.2.bias",
    "output.weight", "output.bias",
]


class ClassicNetwork(nn.Module):
    """The course's original Network, to check that its checkpoints still load."""

    def __init__(self, input_size, output_size, hidden_layers, drop_p=0.5):
        super().__init__()
        self.hidden_layers = nn.ModuleList([nn.Linear(input_size, hidden_layers[0])])
        layer_sizes = zip(hidden_layers[:-1], hidden_layers[1:])
        self.hidden_layers.extend([nn.Linear(h1, h2) for h1, h2 in layer_sizes])
        self.output = nn.Linear(hidden_layers[-1], output_size)
        self.dropout = nn.Dropout(p=drop_p)

    def forward(self, x):
        for each in self.hidden_layers:
            x = self.dropout(F.relu(each(x)))
        return F.log_softmax(self.output(x), dim=1)


def test_state_dict_keys_are_the_classic_ones():
    model = fc_model.Network(784, 10, [512, 256, 128])
    assert list(model.state_dict()) == CLASSIC_KEYS
    assert model.state_dict()["hidden_layers.1.weight"].shape == (256, 512)


def test_classic_checkpoint_loads_and_predicts_the_same():
    torch.manual_seed(0)
    classic = ClassicNetwork(784, 10, [512, 256, 128]).eval()
    model = fc_model.Network(784, 10, [512, 256, 128]).eval()
    model.load_state_dict(classic.state_dict())
    x = torch.randn(5, 784)
    assert torch.equal(model(x), classic(x))


def test_architecture_rebuilds_the_same_network():
    model = fc_model.Network(784, 10, [400, 200], drop_p=0.2)
    assert model.architecture == {
        "input_size": 784, "output_size": 10, "hidden_layers": [400, 200], "drop_p": 0.2}
    twin = fc_model.Network(**model.architecture)
    twin.load_state_dict(model.state_dict())
    assert twin.dropout.p == 0.2


@pytest.mark.parametrize("kwargs, message", [
    ({"hidden_layers": []}, "hidden_layers should be a non-empty list"),
    ({"hidden_layers": [512, 0]}, "positive"),
    ({"hidden_layers": [512.0]}, "positive integers, got \\[512.0\\]"),
    ({"input_size": True}, "input_size should be a positive integer, got True"),
    ({"drop_p": 1.0}, "probability"),
    ({"drop_p": -0.1}, "probability"),
])
def test_bad_arguments_are_explained(kwargs, message):
    arguments = {"input_size": 784, "output_size": 10, "hidden_layers": [64], **kwargs}
    with pytest.raises(ValueError, match=message):
        fc_model.Network(**arguments)


def test_forward_takes_images_of_any_shape_that_flattens():
    model = fc_model.Network(784, 10, [32]).eval()
    images = torch.randn(3, 1, 28, 28)
    log_ps = model(images)
    assert log_ps.shape == (3, 10)
    assert torch.allclose(log_ps.exp().sum(dim=1), torch.ones(3))
    assert torch.equal(log_ps, model(images.reshape(3, 784)))


@pytest.mark.parametrize("training", [True, False])
def test_validation_averages_over_examples_and_restores_mode(fashion_slices, training):
    _, test = fashion_slices
    loader = DataLoader(test, batch_size=300)  # 1000 examples: the last batch has 100
    torch.manual_seed(0)
    model = fc_model.Network(784, 10, [64])
    model.train(training)
    criterion = nn.NLLLoss()

    loss, accuracy = fc_model.validation(model, loader, criterion)

    assert model.training is training
    images = torch.stack([image for image, _ in test])
    labels = torch.tensor([label for _, label in test])
    model.eval()
    with torch.no_grad():
        log_ps = model(images)
    assert loss == pytest.approx(criterion(log_ps, labels).item(), rel=1e-5)
    assert accuracy == pytest.approx((log_ps.argmax(1) == labels).float().mean().item())


def test_validation_of_an_empty_loader_is_an_error():
    model = fc_model.Network(784, 10, [8])
    with pytest.raises(ValueError, match="no examples"):
        fc_model.validation(model, [], nn.NLLLoss())


def test_short_training_learns_and_reports(fashion_slices, capsys):
    train, test = fashion_slices
    torch.manual_seed(0)
    trainloader = DataLoader(train, batch_size=64, shuffle=True)  # 47 steps an epoch
    testloader = DataLoader(test, batch_size=64)
    model = fc_model.Network(784, 10, [512, 256, 128])
    optimizer = optim.Adam(model.parameters(), lr=0.001)

    history = fc_model.train(model, trainloader, testloader, nn.NLLLoss(), optimizer,
                             epochs=2, print_every=47, device="cpu")

    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(history) == 2
    pattern = (r"Epoch: [12]/2\.\.  Training Loss: \d\.\d{3}\.\.  "
               r"Test Loss: \d\.\d{3}\.\.  Test Accuracy: [01]\.\d{3}")
    assert all(re.fullmatch(pattern, line) for line in lines), lines
    assert [r["step"] for r in history] == [47, 94]
    assert [r["epoch"] for r in history] == [1, 2]
    assert set(history[0]) == {"epoch", "step", "train_loss", "test_loss", "test_accuracy"}
    assert history[-1]["test_accuracy"] > 0.6  # chance is 0.1
    assert history[-1]["test_loss"] < history[0]["test_loss"]
    # the last report came after the last step: it is validation() on the whole test set
    loss, accuracy = fc_model.validation(model, testloader, nn.NLLLoss())
    assert accuracy == pytest.approx(history[-1]["test_accuracy"])
    assert model.training  # train() leaves the model ready to train on


@pytest.mark.parametrize("kwargs", [{"epochs": 0}, {"epochs": 1.5}, {"print_every": 0}])
def test_train_rejects_bad_counts(kwargs):
    model = fc_model.Network(784, 10, [8])
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="positive integer"):
        fc_model.train(model, [], [], nn.NLLLoss(), optimizer, **kwargs)


def test_load_network_holds_the_weights_once():
    """The memory benchmark, small: ``load_network`` (meta device, ``assign=True``) grows the
    peak memory of a fresh process by about the weights once, where building the model and
    copying the weights in held them twice. Ratios, measured in one run, not absolute figures."""
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "load_network_memory.py"),
                           "--hidden", "3072", "3072", "3072", "--repeats", "1"],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    ratios = {line[:18].strip(): float(line.split()[-1]) for line in done.stdout.splitlines()[2:]}
    assert ratios.keys() == {"torch.load", "build, then copy", "load_network"}, done.stdout
    assert ratios["load_network"] <= 1.2, done.stdout
    assert ratios["load_network"] <= 0.75 * ratios["build, then copy"], done.stdout
