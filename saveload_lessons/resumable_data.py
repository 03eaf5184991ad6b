"""Training data that a resumed run reads exactly as the uninterrupted run would (lesson 7).

A ``DataLoader`` with ``num_workers > 0`` runs the dataset's ``__getitem__`` in worker
processes. Each time an epoch's iterator is created, the loader draws one *base seed* from
PyTorch's generator (or the loader's own ``generator``); worker ``i`` then seeds PyTorch's
generator and Python's ``random`` with ``base_seed + i``, and NumPy's global generator with a
seed derived from both. A random augmentation in the dataset draws from those three
generators of its worker, which move on with every image.

``torchdata``'s ``StatefulDataLoader`` saves the shuffled order and the position in it, and the
base seed, in its ``state_dict``; a resumed worker starts again from its seed, though, unless
the dataset itself has a state: then the loader calls the dataset's ``state_dict`` in every
worker after each batch, and ``load_state_dict`` in the resumed worker. ``WorkerRandomState``
gives a dataset that state: the three generators of the process it runs in.

- ``AugmentedImages``: Fashion-MNIST images shifted, flipped and given noise at random, one
  random source each (PyTorch, Python's ``random``, NumPy);
- ``StatefulAugmentedImages``: the same, with ``WorkerRandomState``;
- ``resumed_batches``: a loader's resumed iterator, with PyTorch's generator restored after
  the iterator has drawn its seed.

The classes live in a module, not in a notebook cell: under the ``spawn`` and ``forkserver``
start methods (Windows and macOS, and Linux from Python 3.14) each worker imports the
dataset's class by name, which a class defined in a notebook does not have.
"""

import random

import numpy as np
import torch
from torch.utils.data import Dataset

from saveload_lessons import checkpoint_io

# How far an image may move in each direction, in pixels, and the noise's standard deviation
MAX_SHIFT = 2
NOISE = 0.1


class AugmentedImages(Dataset):
    """Images with a random augmentation: ``dataset[i]`` is ``(image, label)``.

    Each call moves the image by up to ``MAX_SHIFT`` pixels (PyTorch's generator), mirrors it
    left to right half of the time (Python's ``random``) and adds Gaussian noise (NumPy), so
    the same image comes out differently every time.

    Args:
        images: a tensor of shape (N, 1, 28, 28), as ``helper.fashion_mnist_tensors`` gives.
        labels: the N class numbers.
    """

    def __init__(self, images, labels):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        image = self.images[index]
        shift = torch.randint(-MAX_SHIFT, MAX_SHIFT + 1, (2,)).tolist()
        image = torch.roll(image, shifts=shift, dims=(1, 2))
        if random.random() < 0.5:
            image = image.flip(2)
        noise = np.random.normal(0.0, NOISE, size=tuple(image.shape)).astype(np.float32)
        return image + torch.from_numpy(noise), self.labels[index]


class WorkerRandomState:
    """Gives a dataset a ``state_dict``: the states of the three generators of the process it
    runs in (PyTorch's, Python's ``random`` and NumPy's), as tensors, numbers and tuples, so
    that a checkpoint holding it loads with ``weights_only=True``.

    ``StatefulDataLoader`` calls ``state_dict`` in each worker process and ``load_state_dict``
    in the resumed worker, so each worker's generators continue where they were.
    """

    def state_dict(self):
        numpy_state = np.random.get_state(legacy=False)
        return {
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "numpy": {"key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
                      "pos": numpy_state["state"]["pos"],
                      "has_gauss": numpy_state["has_gauss"],
                      "gauss": numpy_state["gauss"]},
        }

    def load_state_dict(self, state):
        torch.set_rng_state(state["torch"])
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        numpy_state = state["numpy"]
        np.random.set_state({"bit_generator": "MT19937",
                             "state": {"key": numpy_state["key"].numpy().astype(np.uint32),
                                       "pos": numpy_state["pos"]},
                             "has_gauss": numpy_state["has_gauss"],
                             "gauss": numpy_state["gauss"]})


class StatefulAugmentedImages(WorkerRandomState, AugmentedImages):
    """``AugmentedImages`` whose workers' random state a ``StatefulDataLoader`` saves and restores."""


def resumed_batches(loader, loader_state, rng_state):
    """The rest of the interrupted epoch: ``loader``'s iterator resumed from ``loader_state``
    (a ``StatefulDataLoader.state_dict()``).

    Creating an iterator draws a base seed from PyTorch's generator, even a resumed one,
    which then uses the saved seed instead. So the generators are restored (from
    ``rng_state``, as ``checkpoint_io.rng_state`` returns it) *after* the iterator exists:
    restored before, they would be one draw ahead of the uninterrupted run, and dropout and
    the next epochs would differ.
    """
    loader.load_state_dict(loader_state)
    batches = iter(loader)
    checkpoint_io.set_rng_state(rng_state)
    return batches
