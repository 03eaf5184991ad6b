"""Distributed checkpoints on disk: step folders, a "latest" pointer, safe loading, one-file copies.

``torch.distributed.checkpoint`` (DCP) saves a state dict as a *folder*:
every rank writes the shards it holds into its own file (``__0_0.distcp``,
``__1_0.distcp``, ...), then rank 0 writes ``.metadata``, the table of
contents that says which piece of which tensor is where. Because of that
table, the folder can be loaded by any number of processes, each reading
just the pieces it needs (resharding).

This module adds what DCP leaves to its user:

- **Not losing work.** Each save goes into a new folder, ``step-000040``;
  only once it is complete does ``mark_latest`` point the small file
  ``latest`` at it (an atomic rename), and ``prune`` keeps the last few. A
  process killed while saving leaves an incomplete folder that nothing
  points to, and ``latest_checkpoint`` still gives the previous one.
- **Safe loading.** DCP reads ``.metadata`` with ``pickle`` and every
  non-tensor value (a learning rate, an epoch number) with
  ``torch.load(weights_only=False)``, so a hostile folder could run code.
  ``check_metadata`` unpickles ``.metadata`` allowing only DCP's own
  classes, and ``load`` reads values with ``weights_only=True``.
- **Leaving the distributed world.** ``to_single_file`` turns a folder into
  one ``torch.save`` file that ``torch.load(..., weights_only=True)`` reads;
  ``from_single_file`` does the reverse.
"""

import contextlib
import io
import pickle
import re
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner, _EmptyStateDictLoadPlanner
from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

import checkpoint_io
from checkpoint_io import CheckpointError

METADATA_FILE = ".metadata"   # written by DCP last, once every shard is on disk
LATEST_FILE = "latest"        # names the newest complete step folder
STEP_FOLDER = re.compile(r"step-(\d{6,})")

# What the .metadata pickle of a DCP folder may contain: DCP's own record classes,
# and the torch and pathlib values they hold. Anything else is refused unopened.
_METADATA_MODULES = ("torch.distributed.checkpoint.metadata",)
_METADATA_GLOBALS = {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch.distributed.checkpoint.filesystem", "_StoragePrefix"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    # the checkpoint's own path; Python 3.13 pickles pathlib's classes as pathlib._local
    *((module, name) for module in ("pathlib", "pathlib._local")
      for name in ("PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath")),
    ("collections", "OrderedDict"),
}


# --------------------------------------------------------------------------- step folders

def step_folder(root, step):
    """The folder of the checkpoint taken after ``step`` optimizer steps: ``root/step-000040``."""
    if not checkpoint_io.is_count(step):
        raise ValueError(f"step must be a non-negative integer, got {step!r}")
    return Path(root) / f"step-{step:06d}"


def folder_step(folder):
    """The step number in a step folder's name, or None for any other name."""
    match = STEP_FOLDER.fullmatch(Path(folder).name)
    return int(match.group(1)) if match else None


def is_complete(folder):
    """Whether DCP finished saving ``folder`` (its ``.metadata`` exists)."""
    return (Path(folder) / METADATA_FILE).is_file()


def mark_latest(root, folder):
    """Point ``root/latest`` at ``folder``, a complete step folder inside ``root``, atomically.

    Call it on one rank, after the save has returned on every rank (or after
    ``async_save``'s future is done). Until then ``latest`` still names the
    previous checkpoint, whatever happens to this process.
    """
    root, folder = Path(root), Path(folder)
    if folder.parent.resolve() != root.resolve() or folder_step(folder) is None:
        raise ValueError(f"{folder} is not a step folder of {root}")
    if not is_complete(folder):
        raise CheckpointError(f"{folder} is incomplete (no {METADATA_FILE}): it cannot become the "
                              "latest checkpoint; mark it once the save has finished on every rank")
    with checkpoint_io.atomic_write(root / LATEST_FILE) as file:
        file.write(f"{folder.name}\n".encode())


def latest_checkpoint(root):
    """The step folder that ``root/latest`` names, or None if there is no checkpoint yet.

    Raises ``CheckpointError`` if the pointer is unreadable or names a folder
    that is missing or incomplete, instead of starting again from scratch.
    """
    pointer = Path(root) / LATEST_FILE
    if not pointer.exists():
        return None
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointError(f"cannot read {pointer}: {err}") from err
    if STEP_FOLDER.fullmatch(name) is None:
        raise CheckpointError(f"{pointer} should name a step folder such as step-000040, "
                              f"but holds {name[:60]!r}")
    folder = Path(root) / name
    if not is_complete(folder):
        raise CheckpointError(f"{pointer} names {folder}, which is missing or has no "
                              f"{METADATA_FILE}: the folder was moved or damaged after it was saved")
    return folder


def step_folders(root):
    """The step folders of ``root``, oldest first."""
    return sorted((p for p in Path(root).iterdir() if p.is_dir() and folder_step(p) is not None),
                  key=folder_step)


def unfinished_folders(root):
    """Step folders newer than the latest checkpoint: saves that never finished."""
    latest = latest_checkpoint(root)
    newest = -1 if latest is None else folder_step(latest)
    return [p for p in step_folders(root) if folder_step(p) > newest]


def prune(root, keep):
    """Delete old and unfinished step folders of ``root``; return the deleted ones.

    Keeps the ``keep`` newest step folders up to the one ``latest`` names
    (that one included). Folders newer than it were left by a save that
    never finished, and are deleted too. Call it on one rank, when no save
    is under way.
    """
    if not checkpoint_io.is_count(keep, 1):
        raise ValueError(f"keep must be a positive integer, got {keep!r}")
    latest = latest_checkpoint(root)
    if latest is None:
        return []
    newest = folder_step(latest)
    folders = step_folders(root)
    kept = [p for p in folders if folder_step(p) <= newest][-keep:]
    deleted = [p for p in folders if p not in kept]
    for folder in deleted:
        shutil.rmtree(folder)
    return deleted


# --------------------------------------------------------------------------- safe loading

class _RefusedGlobal(pickle.UnpicklingError):
    """A global that a checkpoint's metadata has no business naming."""


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles a DCP ``.metadata`` file, refusing every global outside the allowlist."""

    def find_class(self, module, name):
        allowed = (module in _METADATA_MODULES or (module, name) in _METADATA_GLOBALS
                   or (module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)))
        if not allowed:
            raise _RefusedGlobal(f"{module}.{name} is not part of a checkpoint's metadata")
        return super().find_class(module, name)


def check_metadata(folder):
    """Read the ``.metadata`` of a DCP folder without running any code it might carry.

    Returns DCP's ``Metadata`` object. Raises ``CheckpointError`` if the
    folder is incomplete (no ``.metadata``), if the file is damaged, or if
    it names anything but DCP's own record classes (a hostile file would name
    ``os.system`` or ``builtins.exec``).
    """
    path = Path(folder) / METADATA_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{folder} is not a complete distributed checkpoint: it has no {METADATA_FILE}, which "
            "DCP writes last. A process stopped while saving it; load the previous checkpoint "
            f"(the one '{LATEST_FILE}' names)")
    try:
        with open(path, "rb") as file:
            metadata = _MetadataUnpickler(file).load()
    except _RefusedGlobal as err:
        raise CheckpointError(f"{path} was refused: {err}. Only load checkpoints from a source "
                              "you trust; this one may try to run code") from err
    except Exception as err:  # a truncated or foreign file: UnpicklingError, EOFError, ...
        raise CheckpointError(f"{path} is damaged or not DCP metadata "
                              f"({type(err).__name__}: {err})") from err
    if type(metadata).__name__ != "Metadata" or not hasattr(metadata, "state_dict_metadata"):
        raise CheckpointError(f"{path} holds a {type(metadata).__name__}, not DCP metadata")
    return metadata


class _SafeValues:
    """Load-planner mix-in: non-tensor values are read with ``torch.load(weights_only=True)``."""

    def load_bytes(self, read_item, value):
        try:
            loaded = torch.load(value, weights_only=True)
        except pickle.UnpicklingError as err:
            raise CheckpointError(f"the value {read_item.dest_index.fqn!r} of the checkpoint was "
                                  f"refused by torch.load(weights_only=True): {err}") from err
        # DCP's planner stores the value where it belongs; it gets a re-saved copy
        # of what was just loaded safely, which holds plain values only.
        copy = io.BytesIO()
        torch.save(loaded, copy)
        copy.seek(0)
        super().load_bytes(read_item, copy)


class SafeLoadPlanner(_SafeValues, DefaultLoadPlanner):
    """DCP's default load planner, reading non-tensor values with ``weights_only=True``."""


class _SafeEmptyStateDictLoadPlanner(_SafeValues, _EmptyStateDictLoadPlanner):
    """The planner of ``dcp_to_torch_save`` (it loads every key), reading values safely."""


@contextlib.contextmanager
def _dcp_call():
    """Around a DCP call: silence its warning that it assumes one process when there is no
    process group, and raise our own ``CheckpointError`` rather than DCP's wrapper of it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        try:
            yield
        except CheckpointException as err:
            ours = [error for error, _ in err.failures.values() if isinstance(error, CheckpointError)]
            if ours:
                raise ours[0] from None
            raise


def load(state_dict, folder, process_group=None):
    """Load ``folder`` into ``state_dict`` in place, as ``dcp.load`` does, but safely.

    The metadata is checked first (``check_metadata``) and values are read with
    ``weights_only=True``. Every rank calls it with the state dict of what it
    holds. In a plain process without a process group, whole tensors load.
    """
    check_metadata(folder)
    with _dcp_call():
        dcp.load(state_dict, checkpoint_id=folder, planner=SafeLoadPlanner(),
                 process_group=process_group, no_dist=not dist.is_initialized())


def to_single_file(folder, path):
    """Gather a DCP folder into one ``torch.save`` file at ``path``; return its state dict.

    Does what ``torch.distributed.checkpoint.format_utils.dcp_to_torch_save``
    does, in one process and without a process group, but reads the folder
    safely and writes the file atomically. The whole checkpoint must fit in
    memory. ``torch.load(path, weights_only=True)`` reads the result.
    """
    check_metadata(folder)
    state_dict = {}
    with _dcp_call():
        _load_state_dict(state_dict, storage_reader=dcp.FileSystemReader(folder),
                         planner=_SafeEmptyStateDictLoadPlanner(), no_dist=True)
    with checkpoint_io.atomic_write(path) as file:
        torch.save(state_dict, file)
    return state_dict


def from_single_file(path, folder):
    """Turn a ``torch.save`` file into a DCP folder, the reverse of ``to_single_file``.

    PyTorch's ``torch_save_to_dcp`` reads the file with
    ``weights_only=False``, which runs whatever code a hostile file carries;
    here it is read with ``weights_only=True`` (``CheckpointError`` if refused).
    A folder that already holds a checkpoint is refused too, not overwritten.
    """
    if is_complete(folder):
        raise CheckpointError(f"{folder} already holds a distributed checkpoint; "
                              "choose a new folder so that it is not overwritten")
    state_dict = checkpoint_io.load_torch_file(path, map_location="cpu")
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{path} holds a {type(state_dict).__name__}, not a state dict")
    with _dcp_call():
        dcp.save(state_dict, checkpoint_id=folder, no_dist=True)
