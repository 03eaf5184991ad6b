"""Distributed checkpoints on disk: step folders, a "latest" pointer, safe loading, one-file copies.

``torch.distributed.checkpoint`` (DCP) saves a state dict as a *folder*:
every rank writes the shards it holds into its own file (``__0_0.distcp``,
``__1_0.distcp``, ... with ``FileSystemWriter``'s defaults), then rank 0
writes ``.metadata``, the table of contents that says which piece of which
tensor is where. Because of that table, the folder can be loaded by any
number of processes, each reading just the pieces it needs (resharding).

This module adds what DCP leaves to its user:

- **Not losing work.** Each save goes into a new folder, ``step-000040``;
  only once it is complete does ``mark_latest`` point the small file
  ``latest`` at it (an atomic rename), and ``prune`` keeps the last few. A
  process killed while saving leaves an incomplete folder that nothing
  points to, and ``latest_checkpoint`` still gives the previous one.
- **Safe loading.** DCP reads ``.metadata`` with ``pickle`` and every
  non-tensor value (a learning rate, an epoch number) with
  ``torch.load(weights_only=False)``, and believes whatever ``.metadata``
  says about paths and sizes. ``check_metadata`` unpickles ``.metadata``
  allowing only DCP's own classes, then checks that every piece it lists
  lies inside a shard file of the folder, that the pieces of each tensor
  cover it exactly, and so that no tensor is larger than the bytes that
  hold it. ``CheckedReader`` reads the folder on those terms (values with
  ``weights_only=True``), and ``load`` uses it.
- **Leaving the distributed world.** ``to_single_file`` turns a folder into
  one ``torch.save`` file that ``torch.load(..., weights_only=True)`` reads;
  ``from_single_file`` does the reverse.

Every problem with a folder is a ``CheckpointError`` that names it.
"""

import collections
import contextlib
import io
import math
import os
import pathlib
import pickle
import shutil
import stat
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import filesystem
from torch.distributed.checkpoint import metadata as dcp_metadata
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.planner import LoadItemType

from saveload_lessons import checkpoint_io
from saveload_lessons.checkpoint_io import CheckpointError
from saveload_lessons.files import atomic_write
from saveload_lessons.messages import say
from saveload_lessons.retention import folder_step, step_folder  # noqa: F401 (named here by lesson 5)
from saveload_lessons.values import is_count, quote

METADATA_FILE = ".metadata"   # written by DCP last, once every shard is on disk
LATEST_FILE = "latest"        # names the newest complete step folder
MAX_METADATA_BYTES = 16 * 2**20  # DCP writes a few hundred bytes per piece of a tensor
MAX_CHUNK_COMPARISONS = 10**5     # checking that no two pieces of a tensor overlap


def _metadata_globals():
    """Every (module, name) a DCP ``.metadata`` pickle names, and the object each stands for.

    Exact pairs only: a name is never looked up inside a module, so a file cannot
    reach ``os.system`` through a module that imports ``os``.
    """
    allowed = {("torch.distributed.checkpoint.metadata", name): getattr(dcp_metadata, name)
               for name in ("Metadata", "TensorStorageMetadata", "BytesStorageMetadata",
                            "ChunkStorageMetadata", "TensorProperties", "MetadataIndex",
                            "StorageMeta")}
    # An enum's members exist once per process: the file may look one up by its value, but
    # gets no class whose __new__ would hand it a member to give attributes to.
    encoding = dcp_metadata._MEM_FORMAT_ENCODING
    allowed[("torch.distributed.checkpoint.metadata", "_MEM_FORMAT_ENCODING")] = \
        lambda value: encoding(value)
    allowed.update({("torch.distributed.checkpoint.filesystem", name): getattr(filesystem, name)
                    for name in ("_StorageInfo", "_StoragePrefix")})
    allowed.update({("torch", name): value for name, value in vars(torch).items()
                    if isinstance(value, torch.dtype)})
    allowed[("torch", "Size")] = torch.Size
    allowed[("torch.serialization", "_get_layout")] = torch.serialization._get_layout
    allowed[("collections", "OrderedDict")] = collections.OrderedDict
    # the checkpoint's own path; Python 3.13 pickles pathlib's classes as pathlib._local
    for module in ("pathlib", "pathlib._local"):
        for name in ("PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath"):
            allowed[(module, name)] = getattr(pathlib, name)
    return allowed


_METADATA_GLOBALS = _metadata_globals()


# --------------------------------------------------------------------------- step folders

def is_complete(folder):
    """Whether DCP finished saving ``folder``: its ``.metadata`` exists, as a file of its own
    (not a link to another folder's)."""
    metadata = Path(folder) / METADATA_FILE
    return metadata.is_file() and not metadata.is_symlink()


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
    with atomic_write(root / LATEST_FILE) as file:
        file.write(f"{folder.name}\n".encode())


def latest_checkpoint(root):
    """The step folder that ``root/latest`` names, or None if there is no checkpoint yet.

    Raises ``CheckpointError`` if the pointer is unreadable or names a folder
    that is missing or incomplete, instead of starting again from scratch.
    """
    pointer = Path(root) / LATEST_FILE
    if not os.path.lexists(pointer):
        return None
    content = checkpoint_io.read_small_file(pointer, 64)
    name = content.decode("utf-8", errors="replace").strip()
    if len(content) > 64 or folder_step(name) is None or Path(name).name != name:
        raise CheckpointError(f"{pointer} should name a step folder such as step-000040, "
                              f"but holds {quote(name)}")
    folder = Path(root) / name
    if folder.is_symlink():
        raise CheckpointError(f"{pointer} names {folder}, which is a link: a checkpoint's folder "
                              "must be a real folder inside the checkpoint folder")
    if not is_complete(folder):
        raise CheckpointError(f"{pointer} names {folder}, which is missing or has no "
                              f"{METADATA_FILE}: the folder was moved or damaged after it was saved")
    return folder


def step_folders(root):
    """The step folders of ``root`` (links to folders included), oldest first."""
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
    (that one included, always). Folders newer than it were left by a save
    that never finished, and are deleted too. A step folder that is a link
    loses only the link, never what it points to. Every folder is tried; if
    some cannot be deleted, ``CheckpointError`` lists them afterwards. Call it
    on one rank, when no save is under way.
    """
    if not is_count(keep, 1):
        raise ValueError(f"keep must be a positive integer, got {keep!r}")
    latest = latest_checkpoint(root)
    if latest is None:
        return []
    newest = folder_step(latest)
    folders = step_folders(root)
    kept = {latest, *[p for p in folders if folder_step(p) <= newest][-keep:]}
    deleted, failed = [], []
    for folder in (p for p in folders if p not in kept):
        try:
            folder.unlink() if folder.is_symlink() else shutil.rmtree(folder)
        except OSError as err:
            failed.append(f"{folder.name} ({err.strerror or err})")
        else:
            deleted.append(folder)
    if failed:
        raise CheckpointError(f"prune could not delete {', '.join(failed[:5])} in {root}; the "
                              "checkpoints it keeps are intact. Delete those folders yourself")
    return deleted


# --------------------------------------------------------------------------- reading .metadata

class _RefusedGlobal(pickle.UnpicklingError):
    """A global that a checkpoint's metadata has no business naming."""


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles a DCP ``.metadata`` file, refusing every global but the exact allowed pairs."""

    def find_class(self, module, name):
        try:
            return _METADATA_GLOBALS[(module, name)]
        except KeyError:
            # check_pickle has bounded both names
            raise _RefusedGlobal(say(f"{module}.{name} is not part of a checkpoint's metadata",
                                     f"{module}.{name} 不属于检查点的元数据")) from None

    def persistent_load(self, pid):
        raise _RefusedGlobal("a persistent id is not part of a checkpoint's metadata")


def _unpickle_metadata(path):
    """The object in ``path``, unpickled with nothing but DCP's record classes."""
    data = checkpoint_io.read_small_file(path, MAX_METADATA_BYTES)
    if len(data) > MAX_METADATA_BYTES:
        raise CheckpointError(f"{path} is larger than {MAX_METADATA_BYTES:,} bytes; DCP's own "
                              "metadata needs a few hundred bytes per piece of a tensor: the file "
                              "is damaged or hostile")
    checkpoint_io.check_pickle(data, path, state_only_for_new_objects=True)
    try:
        return _MetadataUnpickler(io.BytesIO(data)).load()
    except _RefusedGlobal as err:
        raise CheckpointError(say(f"{path} was refused: {err}. Only load checkpoints from a source "
                                  "you trust; this one may try to run code",
                                  f"{path} 被拒绝：{err}。只加载来源可信的检查点；这个检查点可能试图执行代码")) from None
    except Exception as err:  # a truncated or foreign file: UnpicklingError, EOFError, TypeError...
        raise CheckpointError(f"{path} is damaged or not DCP metadata "
                              f"({type(err).__name__}: {quote(str(err))})") from None


def _is_size(value, dims=None):
    """A ``torch.Size`` of non-negative sizes, of at most 32 dimensions (``dims``, if given)."""
    return (type(value) is torch.Size and all(size >= 0 for size in value) and len(value) <= 32
            and (dims is None or len(value) == dims))


class _Forged(Exception):
    """What is wrong with a ``.metadata`` whose pickle is clean but whose contents are not."""


def _shard_files(folder, storage):
    """``{file name: size}`` of the shard files ``storage`` names: plain names of regular
    files inside ``folder``, never a path elsewhere, a link, a pipe or a device."""
    sizes = {}
    for index, info in storage.items():
        if type(index) is not dcp_metadata.MetadataIndex or not isinstance(index.fqn, str) \
                or not (index.offset is None or _is_size(index.offset)) \
                or type(info) is not filesystem._StorageInfo:
            raise _Forged(f"a storage entry {quote(index)} is not DCP's")
        name = info.relative_path
        if not isinstance(name, str) or name in ("", ".", "..") or "\0" in name \
                or pathlib.PurePosixPath(name).name != name or pathlib.PureWindowsPath(name).name != name:
            raise _Forged(say(f"{quote(index.fqn)} is stored at {quote(name)}, which is not a file "
                              "name inside the folder",
                              f"{quote(index.fqn)} 存放在 {quote(name)} 中，而这不是目录内的文件名"))
        if not (is_count(info.offset) and is_count(info.length)):
            raise _Forged(f"{quote(index.fqn)} has offset {quote(info.offset)} and length "
                          f"{quote(info.length)}")
        if getattr(info, "transform_descriptors", None):
            raise _Forged(f"{quote(index.fqn)} is stored through DCP extensions "
                          f"{quote(info.transform_descriptors)}, which this loader does not read")
        if name not in sizes:
            status = os.lstat(Path(folder) / name) if os.path.lexists(Path(folder) / name) else None
            if status is None or not stat.S_ISREG(status.st_mode):
                raise _Forged(f"its shard file {quote(name)} is missing, a link or not a regular file")
            sizes[name] = status.st_size
    return sizes


def _check_regions(storage, sizes):
    """Every stored piece lies inside its file, and no two pieces share bytes."""
    regions = sorted((info.relative_path, info.offset, info.length, index.fqn)
                     for index, info in storage.items())
    previous_end = {}
    for name, offset, length, fqn in regions:
        if offset + length > sizes[name]:
            raise _Forged(f"{quote(fqn)} lies at bytes {offset:,}-{offset + length:,} of "
                          f"{name}, which has {sizes[name]:,}")
        if offset < previous_end.get(name, 0):
            raise _Forged(f"{quote(fqn)} shares bytes of {name} with another entry")
        previous_end[name] = offset + length


def _overlap(a, b):
    return all(ao < bo + bs and bo < ao + as_
               for ao, as_, bo, bs in zip(a.offsets, a.sizes, b.offsets, b.sizes))


def _check_tensor_entry(fqn, entry, storage, comparisons):
    """A tensor's pieces lie inside it, cover it exactly once, and each is stored in at least
    as many bytes as it holds, so that loading it costs no more than the files hold. Returns
    the comparisons of pieces spent, of the ``comparisons`` the whole metadata may spend."""
    properties = entry.properties
    if type(properties) is not dcp_metadata.TensorProperties \
            or not isinstance(properties.dtype, torch.dtype) \
            or properties.dtype not in checkpoint_io.PLAIN_DTYPES or properties.layout != torch.strided \
            or not _is_size(entry.size) or not isinstance(entry.chunks, list):
        raise _Forged(f"the tensor {quote(fqn)} is described with {quote(entry)}")
    itemsize, dims = properties.dtype.itemsize, len(entry.size)
    if math.prod(max(size, 1) for size in entry.size) * itemsize >= 2**62:
        raise _Forged(f"the tensor {quote(fqn)} has the impossible size {tuple(entry.size)}")
    volume = 0
    for chunk in entry.chunks:
        if type(chunk) is not dcp_metadata.ChunkStorageMetadata \
                or not (_is_size(chunk.offsets, dims) and _is_size(chunk.sizes, dims)) \
                or any(o + n > size for o, n, size in zip(chunk.offsets, chunk.sizes, entry.size)):
            raise _Forged(f"a piece {quote(chunk)} of {quote(fqn)} lies outside its size "
                          f"{tuple(entry.size)}")
        info = storage.get(dcp_metadata.MetadataIndex(fqn, chunk.offsets))
        if info is None:
            raise _Forged(f"the piece of {quote(fqn)} at {tuple(chunk.offsets)} is stored nowhere")
        if info.length < math.prod(chunk.sizes) * itemsize:
            raise _Forged(f"the piece of {quote(fqn)} at {tuple(chunk.offsets)} holds "
                          f"{math.prod(chunk.sizes) * itemsize:,} bytes of data in {info.length:,}")
        volume += math.prod(chunk.sizes)
    if volume != math.prod(entry.size):
        raise _Forged(f"the pieces of {quote(fqn)} hold {volume:,} of its "
                      f"{math.prod(entry.size):,} elements")
    return _check_no_overlap(fqn, [c for c in entry.chunks if math.prod(c.sizes)], dims, comparisons)


def _check_no_overlap(fqn, chunks, dims, comparisons):
    """No two ``chunks`` (of ``dims`` dimensions, none empty) share an element. They are swept
    along the dimension where their offsets differ most, each compared only with those it
    meets in that dimension; returns the comparisons spent, refusing more than
    ``comparisons`` (only a forged table of contents needs many)."""
    if dims == 0:
        if len(chunks) > 1:
            raise _Forged(f"two pieces of {quote(fqn)} overlap")
        return 0
    sweep = max(range(dims), key=lambda dim: len({chunk.offsets[dim] for chunk in chunks}))
    active, spent = [], 0
    for chunk in sorted(chunks, key=lambda chunk: chunk.offsets[sweep]):
        start = chunk.offsets[sweep]
        active = [other for other in active if other.offsets[sweep] + other.sizes[sweep] > start]
        spent += len(active)
        if spent > comparisons:
            raise _Forged(f"{quote(fqn)} has too many overlapping pieces to check")
        if any(_overlap(other, chunk) for other in active):
            raise _Forged(f"two pieces of {quote(fqn)} overlap")
        active.append(chunk)
    return spent


def _check_planner_data(planner_data, entries):
    """Where each key goes in the nested state dict: a path whose parts, joined with dots,
    spell the key (list indices below the number of keys), and no path running through
    another key's place, so that every key keeps a place of its own."""
    if planner_data is None:
        planner_data = {}
    if not isinstance(planner_data, dict):
        raise _Forged(f"its planner data is {quote(planner_data)}")
    places, branches = set(), {}
    for fqn in entries:
        path = planner_data.get(fqn) or (fqn,)
        if not isinstance(path, (tuple, list)) or not 1 <= len(path) <= 64 \
                or not all(isinstance(part, str) or (is_count(part) and part < len(entries))
                           for part in path) \
                or ".".join(map(str, path)) != fqn:
            raise _Forged(f"the key {quote(fqn)} has the nesting {quote(path)}")
        path = tuple(path)
        for depth in range(1, len(path)):
            kind = type(path[depth])  # an int below a place makes it a list, a str a dict
            if branches.setdefault(path[:depth], kind) is not kind:
                raise _Forged(f"the key {quote(fqn)} nests {quote(path[:depth])} both as a "
                              "list and as a dict")
        places.add(path)
    clashing = [path for path in places if path in branches]
    if clashing:
        raise _Forged(f"the place {quote(clashing[0])} holds a value and other keys at once")


def _check_contents(metadata, folder):
    """Raise ``_Forged`` unless ``metadata`` describes ``folder``'s files as DCP writes them."""
    if type(metadata) is not dcp_metadata.Metadata:
        raise _Forged(f"it holds a {type(metadata).__name__}, not DCP metadata")
    entries, storage = metadata.state_dict_metadata, metadata.storage_data
    if not isinstance(entries, dict) or not all(isinstance(key, str) for key in entries) \
            or not isinstance(storage, dict):
        raise _Forged("its table of contents is not DCP's")
    sizes = _shard_files(folder, storage)
    _check_regions(storage, sizes)
    comparisons = MAX_CHUNK_COMPARISONS
    for fqn, entry in entries.items():
        if type(entry) is dcp_metadata.TensorStorageMetadata:
            comparisons -= _check_tensor_entry(fqn, entry, storage, comparisons)
        elif type(entry) is dcp_metadata.BytesStorageMetadata:
            if dcp_metadata.MetadataIndex(fqn) not in storage:
                raise _Forged(f"the value {quote(fqn)} is stored nowhere")
        else:
            raise _Forged(f"{quote(fqn)} is described with {quote(entry)}")
    _check_planner_data(metadata.planner_data, entries)
    if not (metadata.storage_meta is None or type(metadata.storage_meta) is dcp_metadata.StorageMeta):
        raise _Forged(f"its storage_meta is {quote(metadata.storage_meta)}")


def check_metadata(folder):
    """Read the ``.metadata`` of a DCP folder without running any code it might carry, and
    check that it describes the folder's own files.

    Returns DCP's ``Metadata`` object. Raises ``CheckpointError`` if the
    folder is incomplete (no ``.metadata``), if the file is damaged, if it
    names anything but DCP's own record classes (a hostile file would name
    ``os.system`` or ``builtins.exec``), or if what it says is impossible:
    a piece stored outside the folder or outside its file, two pieces in the
    same bytes, a tensor its pieces do not cover exactly, or a piece larger
    than the bytes that store it.
    """
    path = Path(folder) / METADATA_FILE
    if not os.path.lexists(path):
        raise CheckpointError(say(
            f"{folder} is not a complete distributed checkpoint: it has no {METADATA_FILE}, which "
            "DCP writes last. A process stopped while saving it; load the previous checkpoint "
            f"(the one '{LATEST_FILE}' names)",
            f"{folder} 不是完整的分布式检查点：其中没有 DCP 最后才写出的 {METADATA_FILE}。"
            f"保存过程中有进程中途退出了；请加载上一个检查点（'{LATEST_FILE}' 指向的那个）"))
    if path.is_symlink():
        raise CheckpointError(f"{path} is a link: a checkpoint's files must be inside its folder")
    metadata = _unpickle_metadata(path)
    try:
        _check_contents(metadata, folder)
    except (AttributeError, TypeError, ValueError, OverflowError) as err:
        # a record unpickled without one of its fields, or with fields of absurd types
        raise CheckpointError(f"{path} is damaged or forged: its records do not have the fields "
                              f"DCP writes ({type(err).__name__}: {quote(str(err))})") from None
    except _Forged as err:
        raise CheckpointError(say(f"{path} is damaged or forged: {err}. Only load checkpoints "
                                  "from a source you trust",
                                  f"{path} 已损坏或是伪造的：{err}。只加载来源可信的检查点")) from None
    return metadata


# --------------------------------------------------------------------------- reading the shards

def _load_piece(data, where):
    """What ``torch.load(weights_only=True)`` makes of one stored piece, after the archive
    itself was checked (``checkpoint_io.check_torch_archive``)."""
    source = io.BytesIO(data)
    checkpoint_io.check_torch_archive(source, where)
    source.seek(0)
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{where} was refused by torch.load(weights_only=True) or is "
                              f"damaged ({type(err).__name__}: {quote(str(err))})") from None


class CheckedReader(dcp.FileSystemReader):
    """DCP's ``FileSystemReader``, reading only what ``check_metadata`` has checked.

    ``dcp.load(state_dict, storage_reader=CheckedReader(folder))`` loads a
    folder as ``dcp.load`` does, but the metadata is read and checked by
    ``check_metadata``; every piece is read from inside its own file, checked
    as a ``torch.save`` archive and loaded with ``weights_only=True``; and a
    tensor piece must have the shape and dtype the metadata gives. All the
    pieces a process needs are read and checked *before* any is copied into
    the state dict (this costs memory for one copy of them), so a damaged
    folder leaves the state dict as it was. Non-tensor values reach DCP's
    planner as a fresh ``torch.save`` of what ``weights_only=True`` loaded:
    whatever the planner does with them, it never sees the file's own pickle.
    """

    def __init__(self, folder):
        super().__init__(folder)
        self.folder = Path(folder)
        self._metadata = None

    def read_metadata(self, *args, **kwargs):
        if self._metadata is None:
            self._metadata = check_metadata(self.folder)
            if self._metadata.storage_meta is None:
                self._metadata.storage_meta = dcp_metadata.StorageMeta()
            self._metadata.storage_meta.load_id = self.load_id
        return self._metadata

    def read_data(self, plan, planner):
        loaded = [(item, self._read_item(item)) for item in plan.items]
        for item, value in loaded:
            if item.type == LoadItemType.BYTE_IO:
                planner.load_bytes(item, value)
            else:
                target = planner.resolve_tensor(item).detach()
                target.copy_(value)
                planner.commit_tensor(item, target)
        done = torch.futures.Future()
        done.set_result(None)
        return done

    def _read_item(self, item):
        info = self.storage_data[item.storage_index]
        where = (f"{self.folder / info.relative_path}, bytes {info.offset:,}-"
                 f"{info.offset + info.length:,} ({quote(item.storage_index.fqn)})")
        with open(self.folder / info.relative_path, "rb") as file:
            file.seek(info.offset)
            data = file.read(info.length)
        if len(data) != info.length:
            raise CheckpointError(f"{where}: the file ends early (truncated)")
        value = _load_piece(data, where)
        if item.type == LoadItemType.BYTE_IO:
            clean = io.BytesIO()
            torch.save(value, clean)
            clean.seek(0)
            return clean
        entry = self._metadata.state_dict_metadata[item.storage_index.fqn]
        chunk = next(c for c in entry.chunks if c.offsets == item.storage_index.offset)
        if not torch.is_tensor(value) or value.dtype != entry.properties.dtype \
                or value.shape != chunk.sizes:
            raise CheckpointError(f"{where} holds {quote(value)}, but {METADATA_FILE} says a "
                                  f"{entry.properties.dtype} tensor of shape {tuple(chunk.sizes)}")
        checkpoint_io.check_tensor(value, item.storage_index.fqn, where)
        for dim, (start, length) in enumerate(zip(item.storage_offsets, item.lengths)):
            value = value.narrow(dim, start, length)
        return value


@contextlib.contextmanager
def _dcp_errors(folder, doing="load"):
    """Around a DCP call: silence its warning that it assumes one process when there is no
    process group, and turn every failure into a ``CheckpointError`` that names ``folder``
    (DCP wraps errors in ``CheckpointException``, a ``BaseException`` that ``except
    Exception`` misses and whose message names no file)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        try:
            yield
        except CheckpointException as err:
            failures = [error for error, _ in err.failures.values()]
            ours = [error for error in failures if isinstance(error, CheckpointError)]
            if ours:
                raise ours[0] from None
            causes = "; ".join(f"{type(error).__name__}: {quote(str(error))}" for error in failures[:3])
            raise CheckpointError(f"DCP could not {doing} {folder}: {causes}") from None
        except CheckpointError:
            raise
        except (OSError, RuntimeError, ValueError, KeyError) as err:
            raise CheckpointError(f"DCP could not {doing} {folder} ({type(err).__name__}: "
                                  f"{quote(str(err))})") from None


def load(state_dict, folder, process_group=None):
    """Load ``folder`` into ``state_dict`` in place, as ``dcp.load`` does, but safely.

    The folder is read through ``CheckedReader``: the metadata is checked
    first, values are read with ``weights_only=True``, and a damaged folder
    leaves ``state_dict`` unchanged. Every rank calls it with the state dict
    of what it holds. In a plain process without a process group, whole
    tensors load.
    """
    reader = CheckedReader(folder)
    reader.read_metadata()
    with _dcp_errors(folder):
        dcp.load(state_dict, storage_reader=reader, process_group=process_group,
                 no_dist=not dist.is_initialized())


def _nest(flat, planner_data):
    """The nested state dict that DCP flattened into ``flat`` (its keys joined with dots),
    rebuilt from the paths in the metadata's ``planner_data`` (a list index is an int)."""
    nested = {}
    for fqn, value in flat.items():
        path = (planner_data or {}).get(fqn) or (fqn,)
        container = nested
        for part, following in zip(path[:-1], path[1:]):
            container = _child(container, part, [] if isinstance(following, int) else {})
        _put(container, path[-1], value)
    return nested


def _child(container, key, empty):
    """``container[key]``, created as ``empty`` when it is not there yet."""
    if isinstance(container, list):
        _put(container, key, container[key] if key < len(container) else None)
        if container[key] is None:
            container[key] = empty
    else:
        container.setdefault(key, empty)
    return container[key]


def _put(container, key, value):
    if isinstance(container, list):
        container.extend([None] * (key + 1 - len(container)))
    container[key] = value


def _refuse_target_inside(folder, path):
    """A file written from ``folder`` must not land inside it, nor be a folder."""
    folder, path = Path(folder).resolve(), Path(path).resolve()
    if path == folder or folder in path.parents:
        raise CheckpointError(f"{path} is inside the checkpoint {folder}: writing it there would "
                              "damage the checkpoint. Choose a path outside that folder")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder: give the path of the file to write")


def to_single_file(folder, path):
    """Gather a DCP folder into one ``torch.save`` file at ``path``; return its state dict.

    Does what ``torch.distributed.checkpoint.format_utils.dcp_to_torch_save``
    does, in one process and without a process group, but reads the folder
    through ``CheckedReader`` and writes the file atomically. The whole
    checkpoint must fit in memory; the folder's checked metadata guarantees
    that it takes no more than its shard files hold. ``torch.load(path,
    weights_only=True)`` reads the result.
    """
    _refuse_target_inside(folder, path)
    reader = CheckedReader(folder)
    metadata = reader.read_metadata()
    flat = {fqn: (torch.empty(entry.size, dtype=entry.properties.dtype)
                  if type(entry) is dcp_metadata.TensorStorageMetadata else None)
            for fqn, entry in metadata.state_dict_metadata.items()}
    with _dcp_errors(folder):
        dcp.load(flat, storage_reader=reader, no_dist=True)
    state_dict = _nest(flat, metadata.planner_data)  # check_metadata made sure the keys nest
    with atomic_write(path) as file:
        torch.save(state_dict, file)
    return state_dict


def from_single_file(path, folder):
    """Turn a ``torch.save`` file into a DCP folder, the reverse of ``to_single_file``.

    PyTorch's ``torch_save_to_dcp`` reads the file with
    ``weights_only=False``, which runs whatever code a hostile file carries;
    here it is read with ``weights_only=True`` (``CheckpointError`` if
    refused), and every tensor must own the bytes it claims
    (``checkpoint_io.load_torch_file`` checks both), so a tiny file cannot
    turn into a huge folder. A folder that already holds a checkpoint is
    refused too, not overwritten.
    """
    folder = Path(folder)
    if os.path.lexists(folder) and not folder.is_dir():
        raise CheckpointError(f"{folder} exists and is not a folder: choose a new folder")
    if is_complete(folder):
        raise CheckpointError(f"{folder} already holds a distributed checkpoint; "
                              "choose a new folder so that it is not overwritten")
    state_dict = checkpoint_io.load_torch_file(path, map_location="cpu")
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{path} holds a {type(state_dict).__name__}, not a state dict")
    with _dcp_errors(folder, "write"):
        dcp.save(state_dict, checkpoint_id=folder, no_dist=True)
