"""Shared fixtures: real Fashion-MNIST, prepared offline, and small slices of it."""

import os
from pathlib import Path

import matplotlib
import pytest
import torch
from hypothesis import HealthCheck, settings
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


# Hypothesis: a fixed, quick budget in the normal test run; the "fuzz" profile for a
# long campaign (python -m pytest tests/test_fuzz.py --hypothesis-profile=fuzz).
# No example database: nothing is written into the repository.
settings.register_profile("default", max_examples=40, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=3000, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("default")
