"""Shared fixtures: real Fashion-MNIST, prepared offline, and small slices of it."""

import os
from pathlib import Path

import matplotlib
import pytest
import torch
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from torchvision import datasets, transforms

matplotlib.use("Agg")

import helper  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = os.environ.get("FASHION_MNIST_ROOT", helper.DEFAULT_DATA_DIR)
TRANSFORM = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])


def bits(tensor):
    """The bytes of a tensor's elements: a comparison that works for every dtype (torch.equal
    does not handle bits8, uint1 or quantized tensors)."""
    tensor = tensor.detach().cpu()
    if tensor.numel() == 0:
        return b""
    try:
        return tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
    except (RuntimeError, TypeError, NotImplementedError):  # bits8, uint1, quantized...
        return bytes(tensor.contiguous().untyped_storage())


def assert_identical(actual, expected, where="the value"):
    """Nested dicts (an OrderedDict counts as a dict), lists and tuples of tensors and plain
    values, equal bit for bit (a tensor's dtype and shape included); the message names the
    first item that differs."""
    kinds = [dict if isinstance(value, dict) else type(value) for value in (actual, expected)]
    assert kinds[0] is kinds[1], f"{where}: {kinds[0].__name__} != {kinds[1].__name__}"
    if isinstance(expected, dict):
        assert actual.keys() == expected.keys(), f"{where}: keys differ, {sorted(map(str, actual.keys() ^ expected.keys()))}"
        for key in expected:
            assert_identical(actual[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), f"{where}: lengths {len(actual)} != {len(expected)}"
        for index, (a, b) in enumerate(zip(actual, expected)):
            assert_identical(a, b, f"{where}[{index}]")
    elif isinstance(expected, torch.Tensor):
        assert actual.dtype == expected.dtype and actual.shape == expected.shape \
            and bits(actual) == bits(expected), f"{where} differs"
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def damage(draw, data, sources):
    """Hypothesis: ``data`` (bytes) with bytes flipped, cut off, inserted, appended or replaced
    by a piece of one of ``sources`` (a dict of bytes)."""
    data = bytearray(data)
    how = draw(st.sampled_from(["flip", "cut", "insert", "splice", "append"]))
    if how == "flip":
        for position in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=8)):
            data[position] ^= draw(st.integers(1, 255))
    elif how == "cut":
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif how == "insert":
        position = draw(st.integers(0, len(data)))
        data[position:position] = draw(st.binary(min_size=1, max_size=64))
    elif how == "append":
        data += draw(st.binary(min_size=1, max_size=64))
    else:  # a piece of another file in place of a piece of this one
        other = sources[draw(st.sampled_from(sorted(sources)))]
        start, length = draw(st.integers(0, len(data) - 1)), draw(st.integers(1, 256))
        source = draw(st.integers(0, len(other) - 1))
        data[start:start + length] = other[source:source + length]
    event(f"damage: {how}")
    return bytes(data)


@pytest.fixture(scope="session")
def data_dir():
    """The lessons' data folder, filled from a local copy if needed (never from a fake)."""
    helper.prepare_fashion_mnist(DATA_DIR)
    return DATA_DIR


@pytest.fixture
def chinese():
    """The package speaks Chinese for one test, as in a Chinese notebook; English again afterwards."""
    from saveload_lessons import messages

    messages.set_language("zh-CN")
    yield
    messages.set_language("en")


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


def load_checkpoint(path, map_location="cpu"):
    """``checkpoint_io.load_checkpoint`` for files of ``fc_model.Network``: what most tests load."""
    import fc_model
    from saveload_lessons import checkpoint_io

    return checkpoint_io.load_checkpoint(path, fc_model.NETWORK, map_location)
