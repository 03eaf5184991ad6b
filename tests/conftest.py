"""Shared fixtures: real Fashion-MNIST, prepared offline, and small slices of it."""

import os
from pathlib import Path

import matplotlib
import pytest
import torch
from torchvision import datasets, transforms

matplotlib.use("Agg")

import helper  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = os.environ.get("FASHION_MNIST_ROOT", helper.DEFAULT_DATA_DIR)
TRANSFORM = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])


@pytest.fixture(scope="session")
def data_dir():
    """The lessons' data folder, filled from a local copy if needed (never from a fake)."""
    helper.prepare_fashion_mnist(DATA_DIR)
    return DATA_DIR


@pytest.fixture(scope="session")
def fashion_slices(data_dir):
    """Real Fashion-MNIST: 3,000 training and 1,000 test examples."""
    train = datasets.FashionMNIST(data_dir, train=True, download=False, transform=TRANSFORM)
    test = datasets.FashionMNIST(data_dir, train=False, download=False, transform=TRANSFORM)
    return (torch.utils.data.Subset(train, range(3000)),
            torch.utils.data.Subset(test, range(1000)))
