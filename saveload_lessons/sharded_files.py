"""Big models saved as several safetensors files (shards) and an index, read safely.

A model too big for one comfortable file is saved as a *folder*, the way the
Hugging Face libraries do it (``huggingface_hub.save_torch_state_dict(state_dict,
folder, max_shard_size="5GB")`` writes exactly this)::

    folder/
        model.safetensors.index.json        the index
        model-00001-of-00003.safetensors    the shard files: each an ordinary
        model-00002-of-00003.safetensors    safetensors file holding some of
        model-00003-of-00003.safetensors    the model's tensors

The index is a small JSON file that says which shard holds which tensor::

    {"metadata": {"total_size": 1234567},
     "weight_map": {"embed.weight": "model-00001-of-00003.safetensors",
                    "head.weight": "model-00003-of-00003.safetensors", ...}}

``total_size`` is the number of bytes all the tensors take together. Shards
are loaded **one at a time**, so the memory a load needs beyond its result is
about one shard, never the whole model twice; ``load_sharded_into`` copies
each shard into a model and lets it go, so the peak stays near one shard.

Nothing in the folder is trusted. Before a single tensor is loaded, the
index and the headers of every shard are checked:

- the index is a regular file (not a link, a pipe or a device) of at most
  ``MAX_INDEX_BYTES``, valid JSON, with a ``weight_map`` from tensor names to
  file names that lists each tensor once;
- every file it names is a plain ``.safetensors`` file name, inside the
  folder (no other folder, no ``..``, no absolute path, no link), and exists;
- every shard is a complete safetensors file (not truncated or damaged);
- each tensor is in the shard the index names, exactly once, and no shard
  holds a tensor the index does not list;
- ``total_size``, when given, equals what the tensors take
  (``numel * element_size`` summed over them).

Every problem is a ``CheckpointError`` that names the file at fault and says
what to do, and it comes before any tensor is copied into a model, so a bad
folder leaves the model as it was. What no check can see: safetensors stores
no checksum, so a changed byte *inside* a tensor's values goes unnoticed.
A model saved in a *single* file (``model.safetensors``, no index) is read
by ``checkpoint_io``, not here.
"""

import collections
import json
import os
import stat
from pathlib import Path, PurePosixPath, PureWindowsPath

import safetensors
import torch

from saveload_lessons import checkpoint_io
from saveload_lessons.checkpoint_io import CheckpointError
from saveload_lessons.devices import check_device
from saveload_lessons.messages import say
from saveload_lessons.values import is_count, quote

INDEX_FILE = "model.safetensors.index.json"
SHARD_SUFFIX = ".safetensors"
MAX_DIMENSIONS = 32  # what a shape may have, as for distributed checkpoints
MAX_INDEX_BYTES = 16 * 2**20  # an index holds about 80 bytes per tensor: 200,000 tensors

# The dtypes a shard's header may give (safetensors' names), and what torch calls them.
SAFETENSORS_DTYPES = {
    "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16,
    "U16": torch.uint16, "I32": torch.int32, "U32": torch.uint32, "I64": torch.int64,
    "U64": torch.uint64, "F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32,
    "F64": torch.float64, "C64": torch.complex64, "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2, "F8_E4M3FNUZ": torch.float8_e4m3fnuz,
    "F8_E5M2FNUZ": torch.float8_e5m2fnuz,
}

# What load_sharded_into returns, as model.load_state_dict does.
IncompatibleKeys = collections.namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])

# What the checks found out about a folder: the index's path and weight map, the tensor
# names each shard file holds (in the index's order), and each tensor's shape.
_Survey = collections.namedtuple("_Survey", ["index", "weight_map", "shards", "shapes", "dtypes"])


class _RepeatedKey(ValueError):
    """A JSON object that gives the same key twice (``json`` would keep the last silently)."""


# --------------------------------------------------------------------------- the index

def _unique_keys(pairs):
    """``json.loads``'s ``object_pairs_hook``: a dict, or ``_RepeatedKey`` for a key given twice."""
    result = {}
    for key, value in pairs:
        if key in result:
            raise _RepeatedKey(key)
        result[key] = value
    return result


def _read_index_document(folder):
    """The index of ``folder`` as a JSON object (a dict), and the index's path."""
    path = Path(folder) / INDEX_FILE
    if not os.path.lexists(path):
        raise CheckpointError(say(
            f"{path} is missing: {folder} is not a sharded checkpoint (no index). Give the folder "
            "that holds the index and the shard files; a model saved as one file "
            "(model.safetensors) is read with checkpoint_io",
            f"缺少索引文件 {path}：{folder} 不是分片保存的检查点。请给出存放索引和各个分片文件的"
            "文件夹；保存成单个文件（model.safetensors）的模型请用 checkpoint_io 读取"))
    if path.is_symlink():
        raise CheckpointError(f"{path} is a link: a checkpoint's index must be a file inside its "
                              "folder. Copy the real file there")
    data = checkpoint_io.read_small_file(path, MAX_INDEX_BYTES)
    if len(data) > MAX_INDEX_BYTES:
        raise CheckpointError(f"{path} is larger than {MAX_INDEX_BYTES:,} bytes, far more than the "
                              "index of any model needs: it is not an index of shard files")
    try:
        document = json.loads(data.decode("utf-8"), object_pairs_hook=_unique_keys)
    except _RepeatedKey as err:
        raise CheckpointError(f"{path} gives the key {quote(err.args[0])} twice: an index names "
                              "each tensor once. Save or download the model again") from None
    except (ValueError, RecursionError) as err:  # bad UTF-8 or JSON; absurd nesting
        raise CheckpointError(f"{path} is not valid JSON, so it is not an index of shard files "
                              f"({type(err).__name__}: {quote(str(err))})") from None
    if not isinstance(document, dict):
        raise CheckpointError(f"{path} holds {quote(document)}, not an index of shard files: "
                              "expected a JSON object with a 'weight_map'")
    return path, document


def _total_size(document, path):
    """``metadata.total_size`` of an index, or None when it does not give one."""
    metadata = document.get("metadata", {})
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path}: its 'metadata' should be a JSON object, got {quote(metadata)}")
    if "total_size" not in metadata:
        return None
    total = metadata["total_size"]
    if not is_count(total):
        raise CheckpointError(f"{path}: its metadata.total_size should be a number of bytes, "
                              f"got {quote(total)}")
    return total


def _check_weight_map(weight_map, path):
    """Raise ``CheckpointError`` unless ``weight_map`` maps tensor names to file names."""
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{path} has no usable 'weight_map' (got {quote(weight_map)}): an "
                              "index maps each tensor's name to the shard file that holds it")
    for name, file in weight_map.items():
        if not isinstance(file, str):
            raise CheckpointError(f"{path}: its weight_map should map tensor names to shard file "
                                  f"names (strings), but {quote(name)} maps to {quote(file)}")


def _is_plain_name(name):
    """Whether ``name`` is the name of a file right inside a folder, on every system: not
    empty, not ``.`` or ``..``, without a separator (``/`` or ``\\``) or a drive (``C:``), and
    spelt in proper Unicode (a lone surrogate cannot name a file)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return (name not in ("", ".", "..") and "\0" not in name
            and PurePosixPath(name).name == name and PureWindowsPath(name).name == name)


def _check_shard_name(name, folder, path):
    """Raise ``CheckpointError`` unless the index's file name ``name`` is a shard of ``folder``."""
    if not _is_plain_name(name):
        raise CheckpointError(say(
            f"{path} names the shard file {quote(name)}, which is not a plain file name inside "
            f"{folder}: a shard must be a file of the checkpoint's own folder (no other folder, "
            "no '..', no absolute path). Only load checkpoints from a source you trust",
            f"{path} 中的分片文件名 {quote(name)} 不是 {folder} 中的普通文件名：分片文件必须在"
            "检查点自己的文件夹里（不能指向别的文件夹，不能含 '..'，不能是绝对路径）。"
            "只加载来源可信的检查点"))
    if not name.endswith(SHARD_SUFFIX):
        raise CheckpointError(f"{path} names the shard file {quote(name)}: the shards of this "
                              f"index must be {SHARD_SUFFIX} files")


def _check_shard_file(shard, name, path, weight_map):
    """Raise ``CheckpointError`` unless the shard file ``shard`` exists as a regular file."""
    try:
        mode = os.lstat(shard).st_mode
    except FileNotFoundError:
        count = sum(file == name for file in weight_map.values())
        example = next(tensor for tensor, file in weight_map.items() if file == name)
        raise CheckpointError(say(
            f"the shard file {shard} is missing: the index {path} puts {count} tensor(s) in it "
            f"(such as {quote(example)}). A shard was not downloaded or copied; copy the whole "
            "folder again",
            f"缺少分片文件 {shard}：索引 {path} 说其中有 {count} 个张量（例如 {quote(example)}）。"
            "有分片文件没有下载或复制过来；请重新复制整个文件夹")) from None
    except OSError as err:
        raise CheckpointError(f"cannot read the shard file {shard} ({err.strerror or err})") from None
    if stat.S_ISLNK(mode):
        raise CheckpointError(say(
            f"the shard file {shard}, named by {path}, is a link: a shard must be a file inside "
            "the checkpoint's own folder. Copy the real file there",
            f"索引 {path} 中的分片文件 {shard} 是一个链接：分片文件必须是检查点自己文件夹里的文件。"
            "请把真正的文件复制过去"))
    if not stat.S_ISREG(mode):
        raise CheckpointError(f"the shard file {shard}, named by {path}, is not a regular file "
                              "(a folder, a pipe or a device)")


def _read_index(folder):
    """The checked index of ``folder``: its path, weight map and total size (or None)."""
    path, document = _read_index_document(folder)
    weight_map = document.get("weight_map")
    _check_weight_map(weight_map, path)
    total = _total_size(document, path)
    for name in dict.fromkeys(weight_map.values()):
        _check_shard_name(name, folder, path)
        _check_shard_file(Path(folder) / name, name, path, weight_map)
    return path, weight_map, total


def read_index(folder):
    """The checked weight map of the sharded checkpoint in ``folder``: ``{tensor name: shard
    file name}``, in the index's order.

    Raises ``CheckpointError``, naming the index, if it is missing, unreadable,
    too large or not valid JSON, if its ``weight_map`` does not map names to
    file names, or if a file it names is not a plain ``.safetensors`` file name
    inside ``folder``, is a link or not a regular file, or is missing.
    """
    return dict(_read_index(folder)[1])


# --------------------------------------------------------------------------- the shards

def _header(shard):
    """``{tensor name: (dtype name, shape)}`` from the header of the safetensors file ``shard``;
    no tensor's data is read."""
    try:
        with safetensors.safe_open(shard, framework="pt", device="cpu") as file:
            slices = {name: file.get_slice(name) for name in file.keys()}
            return {name: (piece.get_dtype(), tuple(piece.get_shape())) for name, piece in slices.items()}
    except Exception as err:
        raise _not_safetensors(shard, err) from None


def _not_safetensors(shard, err):
    return CheckpointError(f"the shard file {shard} is not a complete safetensors file: it is "
                           f"truncated, damaged or of another format ({str(err)[:200]}). Copy or "
                           "download it again")


def _check_placement(found, weight_map, folder, path):
    """Raise ``CheckpointError`` unless each tensor was ``found`` (``{name: [shard files]}``)
    once, in the shard file the index names, and the shards hold no other tensor."""
    for name, files in found.items():
        if len(files) > 1:
            raise CheckpointError(f"the tensor {quote(name)} is stored in both {folder / files[0]} and "
                                  f"{folder / files[1]} (the index {path} puts it in "
                                  f"{weight_map.get(name, 'neither')}): a tensor is saved once")
        if name not in weight_map:
            raise CheckpointError(f"the shard file {folder / files[0]} holds the tensor {quote(name)}, "
                                  f"which the index {path} does not list: the shards and the "
                                  "index come from different saves. Save or download the model again")
        if files[0] != weight_map[name]:
            raise CheckpointError(say(
                f"the shard file {folder / files[0]} holds the tensor {quote(name)}, but the index "
                f"{path} puts it in {folder / weight_map[name]}: the shard files do not belong to "
                "this index (files of two saves mixed?). Save or download the model again",
                f"分片文件 {folder / files[0]} 中有张量 {quote(name)}，但索引 {path} 说它在 "
                f"{folder / weight_map[name]} 中：这些分片文件与索引不匹配（混用了两次保存的文件？）。"
                "请重新保存或下载模型"))
    for name, file in weight_map.items():
        if name not in found:
            raise CheckpointError(say(
                f"the index {path} puts the tensor {quote(name)} in the shard file {folder / file}, "
                "which does not hold it: the shard files do not belong to this index. Save or "
                "download the model again",
                f"索引 {path} 说张量 {quote(name)} 在分片文件 {folder / file} 中，但其中没有它："
                "这些分片文件与索引不匹配。请重新保存或下载模型"))


def _check_sizes(headers, total, path):
    """Raise ``CheckpointError`` unless every tensor has a dtype of ``SAFETENSORS_DTYPES`` and,
    when ``total`` is given, the tensors take ``total`` bytes together."""
    size = 0
    for shard, header in headers.items():
        for name, (dtype, shape) in header.items():
            if dtype not in SAFETENSORS_DTYPES:
                raise CheckpointError(f"the shard file {shard}: the tensor {quote(name)} has the dtype "
                                      f"{quote(dtype)}, which these lessons do not load (plain "
                                      f"numbers only: {', '.join(SAFETENSORS_DTYPES)})")
            numel, extent = 1, 1
            for length in shape:
                numel *= length
                extent *= max(length, 1)
            if len(shape) > MAX_DIMENSIONS or extent * SAFETENSORS_DTYPES[dtype].itemsize >= 2**62:
                raise CheckpointError(f"the shard file {shard}: the tensor {quote(name)} has the "
                                      f"shape {quote(tuple(shape))}, which no tensor can have "
                                      f"(at most {MAX_DIMENSIONS} dimensions, and strides that fit "
                                      "in 64 bits): the file is damaged or forged")
            size += numel * SAFETENSORS_DTYPES[dtype].itemsize
    if total is not None and size != total:
        raise CheckpointError(f"the index {path} says the tensors take {total:,} bytes "
                              f"(metadata.total_size), but its shard files hold {size:,} bytes of "
                              "tensors: a shard was replaced or the index edited. Save or download "
                              "the model again")


def _survey(folder):
    """Check the index of ``folder`` and the header of every shard; load no tensor."""
    folder = Path(folder)
    path, weight_map, total = _read_index(folder)
    shards = {}
    for tensor, name in weight_map.items():
        shards.setdefault(name, []).append(tensor)
    headers, found = {}, {}
    for name in shards:
        headers[folder / name] = _header(folder / name)
        for tensor in headers[folder / name]:
            found.setdefault(tensor, []).append(name)
    _check_placement(found, weight_map, folder, path)
    _check_sizes(headers, total, path)
    shapes = {tensor: shape for header in headers.values() for tensor, (_, shape) in header.items()}
    dtypes = {tensor: SAFETENSORS_DTYPES[dtype] for header in headers.values()
              for tensor, (dtype, _) in header.items()}
    return _Survey(path, weight_map, shards, shapes, dtypes)


def _load_shard(shard, names, device):
    """The tensors ``names`` of the shard file ``shard``, each checked, on ``device``."""
    try:
        with safetensors.safe_open(shard, framework="pt", device="cpu") as file:
            tensors = {name: file.get_tensor(name) for name in names}
    except Exception as err:
        raise _not_safetensors(shard, err) from None
    for name, tensor in tensors.items():
        checkpoint_io.check_tensor(tensor, quote(name), shard)
    return {name: tensor.to(device) for name, tensor in tensors.items()}


def load_sharded(folder, map_location="cpu"):
    """The whole state dict of the sharded checkpoint in ``folder``, its tensors on
    ``map_location`` (a device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``).

    The index and every shard's header are checked first (see the module's
    documentation); then the shards are read one at a time with
    ``safetensors.safe_open``, each tensor checked by ``checkpoint_io.check_tensor``.
    The keys come in the index's order. Raises ``CheckpointError`` naming the
    file at fault, and ``ValueError`` for a device this machine lacks.
    """
    device = check_device(map_location, allow_meta=False)
    survey = _survey(folder)
    state_dict = {}
    for name, tensors in survey.shards.items():
        state_dict.update(_load_shard(Path(folder) / name, tensors, device))
    return {name: state_dict[name] for name in survey.weight_map}


def _kind(dtype):
    """What a value of ``dtype`` is: loading may convert within a kind, never across."""
    if dtype.is_complex:
        return "complex"
    if dtype.is_floating_point:
        return "floating-point"
    return "bool" if dtype == torch.bool else "integer"


def _fit_problems(survey, own):
    """How the tensors of a checked folder differ from a model's state dict ``own`` (with
    ``keep_vars=True``): the names missing, the names unexpected, and the problems that forbid
    the load: a shape that differs, a value of another kind (complex into real, float into
    integer, ...), and one tensor of the model given twice by the files. A tied weight (one
    tensor under two names, saved once) counts as loaded under both."""
    loaded = {id(own[name]) for name in survey.weight_map if name in own}
    missing = [name for name in own if name not in survey.weight_map and id(own[name]) not in loaded]
    unexpected = [name for name in survey.weight_map if name not in own]
    present = [name for name in survey.weight_map if torch.is_tensor(own.get(name))]
    problems = [f"{name} has shape {survey.shapes[name]} in the files, {tuple(own[name].shape)} "
                "in the model" for name in present if survey.shapes[name] != tuple(own[name].shape)]
    problems += [f"{name} holds {_kind(survey.dtypes[name])} values ({survey.dtypes[name]}) in the "
                 f"files, but the model's is {_kind(own[name].dtype)} ({own[name].dtype})"
                 for name in present if _kind(survey.dtypes[name]) != _kind(own[name].dtype)]
    first = {}
    for name in present:
        other = first.setdefault(id(own[name]), name)
        if other != name:
            problems.append(f"the files hold both {other} and {name}, which are one tensor (tied) in "
                            "the model: keep one of the names when saving (save_torch_state_dict does)")
    return missing, unexpected, problems


def load_sharded_into(model, folder, strict=True):
    """Load the sharded checkpoint in ``folder`` into ``model``, one shard at a time.

    Each shard is read, checked and copied into the model's parameters and
    buffers (where they already are, as ``model.load_state_dict`` does), then
    let go, so the memory needed stays near one shard. Everything is checked
    *before* anything is copied: the folder (as ``load_sharded`` does) and its
    fit to the model (every tensor's shape; with ``strict``, that the files hold
    exactly the model's tensors). So a bad folder leaves the model as it was.

    Returns ``IncompatibleKeys(missing_keys, unexpected_keys)``, as
    ``load_state_dict`` does (both empty when ``strict``); unexpected tensors
    are not even read. Raises ``CheckpointError`` naming the file at fault.
    """
    folder = Path(folder)
    survey = _survey(folder)
    own = model.state_dict(keep_vars=True)
    missing, unexpected, problems = _fit_problems(survey, own)
    if problems:
        raise CheckpointError(f"{folder} does not fit this model: {'; '.join(problems[:5])}")
    if strict and (missing or unexpected):
        missing_text, unexpected_text = quote(missing), quote(unexpected)
        raise CheckpointError(say(
            f"{folder} does not hold this model's tensors: missing {missing_text}, unexpected "
            f"{unexpected_text}. Build the model the checkpoint was saved from, or load with "
            "strict=False to load only the tensors both have",
            f"{folder} 中的张量与这个模型的不一致：缺少 {missing_text}，多出 {unexpected_text}。"
            "请构建保存检查点时的那个模型，或者用 strict=False 只加载两者都有的张量"))
    for name, tensors in survey.shards.items():
        wanted = [tensor for tensor in tensors if tensor in own]
        if wanted:
            model.load_state_dict(_load_shard(folder / name, wanted, "cpu"), strict=False)
    return IncompatibleKeys(missing, unexpected)
