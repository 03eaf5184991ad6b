"""Helpers for the lessons: Fashion-MNIST on or off line, its data loaders, and plots.

Run ``python -m helper --help`` to prepare Fashion-MNIST from a local copy
(a workshop USB stick, or Debian's ``dataset-fashion-mnist`` package), so
that torchvision finds it and never needs the network.
``fashion_mnist_loaders`` gives the two data loaders that lesson 1 builds
step by step, with the same batches, but with every image transformed once.
"""

import argparse
import gzip
import os
import shutil
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    RandomSampler,
    SequentialSampler,
    TensorDataset,
)
from torchvision import datasets

from saveload_lessons.files import atomic_write
from saveload_lessons.messages import say

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

DEFAULT_DATA_DIR = "~/.pytorch/F_MNIST_data/"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SOURCE_ENV_VAR = "FASHION_MNIST_SOURCE"

# The four original IDX files: magic number, number of items, and for images
# the rows and columns. torchvision reads them uncompressed from ROOT/FashionMNIST/raw/.
IDX_FILES = {
    "train-images-idx3-ubyte": (0x803, 60000, 28, 28),
    "train-labels-idx1-ubyte": (0x801, 60000),
    "t10k-images-idx3-ubyte": (0x803, 10000, 28, 28),
    "t10k-labels-idx1-ubyte": (0x801, 10000),
}


class FashionMNISTError(RuntimeError):
    """Fashion-MNIST is missing or one of its files is damaged."""


# --------------------------------------------------------------------------- data

def fashion_mnist_raw_dir(root=DEFAULT_DATA_DIR):
    """The folder where torchvision looks for the uncompressed IDX files."""
    try:
        return Path(root).expanduser() / "FashionMNIST" / "raw"
    except RuntimeError:  # ~someone, for a user this machine does not have
        raise FashionMNISTError(f"the data folder {root!r} starts with a home folder this machine "
                                "does not know: give the folder's full path") from None


def check_idx_file(path, expected, name=None):
    """Raise ``FashionMNISTError`` unless ``path`` is the complete IDX file described by ``expected``.

    ``expected`` is a value of ``IDX_FILES``: the magic number, then the sizes.
    The file size must be exactly the header plus one byte per pixel or label.
    Messages call the file ``name`` (default: its path).
    """
    path = Path(path)
    name = name or path
    if not path.is_file():  # a folder, a FIFO or a device would block or fail when read
        raise FashionMNISTError(f"{name} is not a regular file")
    magic, *dims = expected
    header_size = 4 * (1 + len(dims))
    with open(path, "rb") as f:
        header = f.read(header_size)
    if len(header) < header_size:
        raise FashionMNISTError(f"{name} is too short to be an IDX file ({len(header)} bytes)")
    found_magic, *found_dims = struct.unpack(f">{1 + len(dims)}I", header)
    if found_magic != magic or found_dims != dims:
        raise FashionMNISTError(
            f"{name} is not the expected Fashion-MNIST file: its header says "
            f"magic {found_magic:#x} with sizes {found_dims}, expected {magic:#x} with {dims}")
    expected_bytes = idx_size(expected)
    actual_bytes = path.stat().st_size
    if actual_bytes != expected_bytes:
        raise FashionMNISTError(
            f"{name} has {actual_bytes} bytes, expected {expected_bytes}: "
            "the file is truncated or damaged")


def idx_size(expected):
    """The exact size in bytes of the IDX file described by ``expected`` (header and data)."""
    magic, *dims = expected
    return 4 * (1 + len(dims)) + int(np.prod(dims))


def fashion_mnist_is_ready(root=DEFAULT_DATA_DIR):
    """True when all four files under ``root`` are complete, so torchvision will not download."""
    raw = fashion_mnist_raw_dir(root)
    try:
        for name, expected in IDX_FILES.items():
            check_idx_file(raw / name, expected)
    except (OSError, FashionMNISTError):
        return False
    return True


def _find_source_file(source, name):
    for candidate in (source / f"{name}.gz", source / name):
        if candidate.is_file():
            return candidate
        if candidate.exists():
            raise FashionMNISTError(f"{candidate} is not a regular file: replace it with the "
                                    "original file")
    files = ", ".join(n + ".gz" for n in IDX_FILES)
    raise FashionMNISTError(say(
        f"{source} has no {name}.gz (nor {name}): a Fashion-MNIST copy needs the four files {files}",
        f"{source} 中没有 {name}.gz（也没有 {name}）：Fashion-MNIST 的副本需要这四个文件：{files}"))


class _SourceError(Exception):
    """Reading the source file failed (as opposed to writing the target)."""


def _copy_at_most(source, target, limit, chunk=1 << 20):
    """Copy from the open file ``source`` to ``target`` until its end or ``limit`` bytes,
    whichever comes first; return the number of bytes copied. A read failure (a damaged
    compressed stream, say) raises ``_SourceError``."""
    copied = 0
    while copied < limit:
        try:
            data = source.read(min(chunk, limit - copied))
        except (OSError, EOFError, zlib.error) as err:
            raise _SourceError(err) from None
        if not data:
            break
        target.write(data)
        copied += len(data)
    return copied


def _cannot_write(folder, err):
    return FashionMNISTError(say(
        f"cannot write the data into {folder} ({err.strerror or err}): choose a data folder you "
        "can write to (the notebooks' data_dir, or --root for python -m helper)",
        f"无法把数据写入 {folder}（{err.strerror or err}）：请选择一个你有写权限的数据目录"
        "（notebook 中的 data_dir，或者 python -m helper 的 --root）"))


def _install_idx_file(source_file, target, expected):
    """Decompress (if needed) and check one file, then move it into place atomically.

    Never more than the expected size is written, so a small compressed file
    that would inflate to gigabytes is stopped at once.
    """
    opener = gzip.open if source_file.suffix == ".gz" else open
    size = idx_size(expected)
    try:
        src = opener(source_file, "rb")
    except OSError as err:
        raise FashionMNISTError(f"{source_file} cannot be read ({err.strerror or err})") from None
    try:
        with src, atomic_write(target) as out:
            copied = _copy_at_most(src, out, size + 1)
            if copied > size:
                raise FashionMNISTError(f"it holds more than the {size} bytes of the original")
            out.flush()
            check_idx_file(out.name, expected, name=source_file.name)
    except (_SourceError, FashionMNISTError) as err:
        raise FashionMNISTError(
            f"{source_file} is not a usable Fashion-MNIST file ({err}). "
            "Copy it again from the original source, or remove it and let torchvision download it."
        ) from None
    except OSError as err:  # creating, writing or renaming the target
        raise _cannot_write(target.parent, err) from None


def install_fashion_mnist(source, root=DEFAULT_DATA_DIR):
    """Fill ``ROOT/FashionMNIST/raw/`` from a local copy of the four original files.

    ``source`` is a folder holding the ``.gz`` files (or the uncompressed
    ones). Every file is checked (size and IDX header) before it replaces
    anything, so a wrong or truncated copy never damages a good data set.
    Returns the raw folder.
    """
    source = Path(source).expanduser()
    if not source.is_dir():
        raise FashionMNISTError(say(f"the Fashion-MNIST source folder {source} does not exist",
                                    f"Fashion-MNIST 的源目录 {source} 不存在"))
    found = {name: _find_source_file(source, name) for name in IDX_FILES}
    raw = fashion_mnist_raw_dir(root)
    try:
        raw.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _cannot_write(raw, err) from None
    for name, expected in IDX_FILES.items():
        _install_idx_file(found[name], raw / name, expected)
    return raw


def _how_to_get_data(root, downloading):
    """The message for data that is missing: ``downloading`` is why it could not be
    downloaded, ``(english, chinese)``."""
    raw = fashion_mnist_raw_dir(root)
    return say(
        f"Fashion-MNIST is not in {raw} and {downloading[0]}. "
        "Either connect to the internet and run again, or provide a local copy of the four "
        f".gz files: `python -m helper --source FOLDER --root {root}`, set {SOURCE_ENV_VAR}=FOLDER, "
        "or on Debian/Ubuntu `sudo apt install dataset-fashion-mnist`.",
        f"{raw} 中没有 Fashion-MNIST，而且{downloading[1]}。请联网后再运行一次，或者提供那四个 .gz "
        f"文件的本地副本：运行 `python -m helper --source FOLDER --root {root}`，或者设置 "
        f"{SOURCE_ENV_VAR}=FOLDER；在 Debian/Ubuntu 上也可以运行 `sudo apt install dataset-fashion-mnist`。")


def _outermost_missing(path):
    """The outermost of ``path`` and its parents that does not exist, or None when ``path``
    exists: the folder that creating ``path`` creates, with everything in it."""
    missing = None
    for folder in (path, *path.parents):
        try:
            folder.lstat()
        except FileNotFoundError:
            missing = folder
            continue
        except OSError:  # there, or nothing can be made under it (a file, no permission)
            pass
        break
    return missing


def prepare_fashion_mnist(root=DEFAULT_DATA_DIR, source=None, download=True):
    """Make sure ``datasets.FashionMNIST(root, ...)`` finds its files; return the raw folder.

    A ``source`` folder given here is always installed (after its files are
    checked), so a wrong one is reported even when ``root`` already holds
    good data. Otherwise, in order: files already complete under ``root`` are
    used as they are; a local copy is installed from the folder named by the
    environment variable ``FASHION_MNIST_SOURCE`` or from Debian's package
    (``/usr/share/datasets/fashion-mnist``); torchvision downloads the data.
    If all of these fail, ``FashionMNISTError`` says how to provide the data.

    A data folder that does not exist is created, and one line, in the
    notebook's language, says so: a misspelt ``data_dir`` does not go
    unnoticed. When preparing fails (or is interrupted), the folders it
    created are removed again, so that no empty ``FashionMNIST/`` stays behind.
    """
    created = _outermost_missing(fashion_mnist_raw_dir(root))
    folder = Path(root).expanduser()
    try:
        raw = _prepare(root, source, download)
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
    if created is not None and created in (folder, *folder.parents):
        print(say(f"Note: the data folder {folder} did not exist, so it was created "
                  "(check data_dir if you meant another folder).",
                  f"注意：数据目录 {folder} 原本不存在，现已创建（如果你想用的是另一个目录，请检查 data_dir）。"))
    return raw


def _prepare(root, source, download):
    """``prepare_fashion_mnist`` without the care for the folders it creates."""
    if source is not None:
        return install_fashion_mnist(source, root)
    if fashion_mnist_is_ready(root):
        return fashion_mnist_raw_dir(root)
    source = os.environ.get(SOURCE_ENV_VAR) or None
    if source is not None:
        return install_fashion_mnist(source, root)
    if DEBIAN_FASHION_MNIST.is_dir():
        return install_fashion_mnist(DEBIAN_FASHION_MNIST, root)
    if download:
        root_path = Path(root).expanduser()
        try:
            for train in (True, False):
                datasets.FashionMNIST(root_path, train=train, download=True)
        except (OSError, RuntimeError) as err:
            raise FashionMNISTError(
                _how_to_get_data(root, ("could not be downloaded", "无法下载"))
                + say(f" (download error: {err})", f"（下载错误：{err}）")
            ) from None
        return fashion_mnist_raw_dir(root)
    raise FashionMNISTError(_how_to_get_data(root, ("downloading is turned off", "已关闭下载")))


def main(argv=None):
    """Command line: prepare Fashion-MNIST for torchvision from a local copy."""
    parser = argparse.ArgumentParser(
        prog="python -m helper",
        description="Put Fashion-MNIST where torchvision finds it, from a local copy "
                    "of the four original .gz files (no network needed).")
    parser.add_argument("--root", default=DEFAULT_DATA_DIR,
                        help=f"the data_dir of the lessons (default: {DEFAULT_DATA_DIR})")
    parser.add_argument("--source", default=None,
                        help=f"folder with the four .gz files (default: ${SOURCE_ENV_VAR}, "
                             f"then {DEBIAN_FASHION_MNIST})")
    parser.add_argument("--no-download", action="store_true",
                        help="fail instead of downloading when no local copy is found")
    args = parser.parse_args(argv)
    try:
        raw = prepare_fashion_mnist(args.root, source=args.source, download=not args.no_download)
    except FashionMNISTError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"Fashion-MNIST is ready in {raw}")
    return 0


# The normalisation of the lessons: pixels in [0, 1] mapped to [-1, 1]
MEAN, STD = 0.5, 0.5


def fashion_mnist_tensors(data_dir=DEFAULT_DATA_DIR, train=True):
    """One split of Fashion-MNIST as two tensors, ``(images, labels)``, transformed once.

    ``images`` has shape (N, 1, 28, 28) and holds exactly the values that
    ``Normalize((0.5,), (0.5,))(ToTensor()(image))`` gives for every image
    (the same operations, applied to all images at once); ``labels`` holds
    the class numbers (int64). The files must be in ``data_dir`` (see
    ``prepare_fashion_mnist``).
    """
    dataset = datasets.FashionMNIST(data_dir, train=train, download=True)
    images = dataset.data.unsqueeze(1).to(torch.float32)
    images.div_(255).sub_(MEAN).div_(STD)  # in place: no temporary copies of 188 MB
    return images, dataset.targets


def tensor_loader(images, labels, batch_size=64, shuffle=False):
    """A ``DataLoader`` over two tensors that yields ``[images, labels]`` batches.

    It draws its random numbers exactly as ``DataLoader(dataset, batch_size,
    shuffle=shuffle)`` does over a dataset of the same length, so both give
    the same examples in the same order, and leave PyTorch's random-number
    generator in the same state. But each batch is one indexing operation
    instead of ``batch_size`` calls to ``dataset[i]`` and a collate.
    """
    dataset = TensorDataset(images, labels)
    order = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
    return DataLoader(dataset, batch_size=None,
                      sampler=BatchSampler(order, batch_size, drop_last=False))


def fashion_mnist_loaders(data_dir=DEFAULT_DATA_DIR, batch_size=64, train_size=None):
    """The data loaders of lesson 1, ``(trainloader, testloader)``, only faster.

    Lesson 1 builds them with ``datasets.FashionMNIST``, the transforms
    ``ToTensor`` and ``Normalize((0.5,), (0.5,))``, and ``DataLoader`` (the
    training set shuffled at every epoch, the test set in order). These
    loaders yield the very same batches in the same order, bit for bit, but
    transform every image once, when they are built, instead of at every
    epoch. ``train_size`` keeps only the first images of the training set.
    """
    train_images, train_labels = fashion_mnist_tensors(data_dir, train=True)
    if train_size is not None:
        if isinstance(train_size, bool) or not isinstance(train_size, int) \
                or not 1 <= train_size <= len(train_labels):
            raise ValueError(f"train_size must be an integer from 1 to {len(train_labels)}, "
                             f"got {train_size!r}")
        train_images, train_labels = train_images[:train_size], train_labels[:train_size]
    return (tensor_loader(train_images, train_labels, batch_size, shuffle=True),
            tensor_loader(*fashion_mnist_tensors(data_dir, train=False), batch_size))


# --------------------------------------------------------------------------- plots

def _pyplot():
    """matplotlib's pyplot, imported on the first plot: the processes of lesson 5 and the
    data preparation never draw, and start faster without it."""
    import matplotlib.pyplot as plt

    return plt


def _as_numpy(tensor):
    """A detached CPU NumPy copy, whatever device the tensor is on."""
    return torch.as_tensor(tensor).detach().to("cpu", torch.float32).numpy().copy()


def imshow(image, ax=None, title=None, normalize=True, mean=MEAN, std=STD):
    """Show one greyscale image tensor, undoing ``Normalize((mean,), (std,))``.

    ``image`` may have shape (1, 28, 28), (28, 28) or (784,). The defaults
    match the lessons' ``transforms.Normalize((0.5,), (0.5,))``; pass the
    mean and std you used, or ``normalize=False`` for an image in [0, 1].
    Returns the axes.
    """
    pixels = _as_numpy(image).squeeze()
    if pixels.ndim == 1:
        side = int(round(pixels.size ** 0.5))
        if side * side != pixels.size:
            raise ValueError(f"cannot show {pixels.size} values as a square image")
        pixels = pixels.reshape(side, side)
    if pixels.ndim != 2:
        raise ValueError(
            f"imshow shows one greyscale image, got shape {tuple(torch.as_tensor(image).shape)}")
    if normalize:
        pixels = pixels * std + mean
    if ax is None:
        _, ax = _pyplot().subplots()
    ax.imshow(np.clip(pixels, 0, 1), cmap="gray", vmin=0, vmax=1)
    ax.axis("off")
    if title is not None:
        ax.set_title(title)
    return ax


def view_classify(image, probabilities, class_names=FASHION_MNIST_CLASSES, mean=MEAN, std=STD):
    """Show an image beside a bar chart of the predicted class probabilities.

    Neither tensor is changed; both may live on any device. ``probabilities``
    has shape (n_classes,) or (1, n_classes). Returns the figure.
    """
    ps = _as_numpy(probabilities).reshape(-1)
    if len(ps) != len(class_names):
        raise ValueError(f"got {len(ps)} probabilities for {len(class_names)} class names")
    fig, (ax_image, ax_bars) = _pyplot().subplots(figsize=(6, 9), ncols=2)
    imshow(image, ax=ax_image, mean=mean, std=std)
    ax_bars.barh(np.arange(len(ps)), ps)
    ax_bars.set_aspect(0.1)
    ax_bars.set_yticks(np.arange(len(ps)))
    ax_bars.set_yticklabels(class_names, size="small")
    ax_bars.set_title("Class Probability")
    ax_bars.set_xlim(0, 1.1)
    fig.tight_layout()
    return fig


def plot_history(history):
    """Plot the losses and the test accuracy returned by ``fc_model.train``. Returns the figure."""
    if not history:
        raise ValueError("the history is empty: train for at least print_every steps")
    steps = [record["step"] for record in history]
    fig, (ax_loss, ax_accuracy) = _pyplot().subplots(ncols=2, figsize=(10, 3.5))
    ax_loss.plot(steps, [r["train_loss"] for r in history], label="training loss")
    ax_loss.plot(steps, [r["test_loss"] for r in history], label="test loss")
    ax_loss.set_xlabel("step")
    ax_loss.legend()
    ax_accuracy.plot(steps, [r["test_accuracy"] for r in history], color="tab:green")
    ax_accuracy.set_xlabel("step")
    ax_accuracy.set_ylabel("test accuracy")
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    sys.exit(main())
