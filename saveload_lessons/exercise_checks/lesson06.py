"""The checks of lesson 6's exercises.

Exercise 6.1 asks for a lean load: the network built on the ``meta`` device, the file mapped
(``mmap=True``) and its tensors made the parameters (``assign=True``). Three facts tell such a
load from one that copies:

- no random initialisation runs on a device that holds memory (``_RandomFills`` watches every
  operation while the learner's function runs);
- no tensor is left on ``meta``;
- every parameter's data lies where a mapping of the whole file puts it: ``torch.load(...,
  mmap=True)`` maps the file once and makes each tensor a view of it, so each data pointer is
  one base address plus the file offset of its record (``_in_mapping``). A tensor read or
  copied into memory of its own lies elsewhere.
"""

import gc
import json
import re
import struct
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

import safetensors
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from saveload_lessons.exercise_checks.common import (
    Checks,
    _chance,
    _file_name,
    _hidden_sizes,
    _layout,
    _quiet,
    _same_tensor,
    _same_tensors,
    _seeds,
    _tiny_network,
)

INDEX_FILE = "model.safetensors.index.json"

# A tensor's record in a torch.save zip archive ("archive/data/0", ...), and the fixed part of
# the zip local header that stands before each record's data.
_RECORD = re.compile(r"[^/]+/data/\d+")
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")
# The operations that fill a tensor with random numbers, as a network's initialisation does.
_RANDOM_FILLS = {"uniform_", "normal_", "bernoulli_", "exponential_", "random_"}


@contextmanager
def _folder():
    """A temporary folder. Its removal ignores errors: on Windows, a file that a returned
    tensor still maps cannot be deleted, and that must not hide the check's message."""
    with tempfile.TemporaryDirectory(prefix="exercise-", ignore_cleanup_errors=True) as name:
        yield Path(name)


def _record_offsets(path):
    """The offsets in the file ``path`` (a ``torch.save`` zip archive) where the data of each
    tensor record starts."""
    offsets = set()
    with open(path, "rb") as file, zipfile.ZipFile(file) as archive:
        for entry in archive.infolist():
            if _RECORD.fullmatch(entry.filename):
                file.seek(entry.header_offset)
                header = _LOCAL_HEADER.unpack(file.read(_LOCAL_HEADER.size))
                offsets.add(entry.header_offset + _LOCAL_HEADER.size + header[-2] + header[-1])
    return offsets


def _in_mapping(tensors, offsets):
    """Whether the data of every tensor in ``tensors`` lies where one mapping of the whole file
    puts it: at a single base address plus the offset of one of its records."""
    pointers = [tensor.data_ptr() for tensor in tensors]
    if not pointers or not offsets:
        return False
    return any(all(pointer - base in offsets for pointer in pointers)
               for base in {pointers[0] - offset for offset in offsets})


class _RandomFills(TorchDispatchMode):
    """Notes the devices on which a random fill (a network's initialisation) ran, ``meta`` aside."""

    def __init__(self):
        super().__init__()
        self.devices = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in _RANDOM_FILLS and args and isinstance(args[0], torch.Tensor) \
                and args[0].device.type != "meta":
            self.devices.add(args[0].device.type)
        return func(*args, **(kwargs or {}))


def _shard_tensors(path):
    """``{name: tensor}`` of the safetensors file ``path``, or None when it is not one."""
    try:
        with safetensors.safe_open(path, framework="pt") as file:
            return {name: file.get_tensor(name) for name in file.keys()}
    except Exception:  # not safetensors: truncated, pickled, text...
        return None


class Lesson6(Checks):
    lesson = 6

    def exercise_1(self, load_lean):
        """``load_lean(path)`` rebuilds a network saved by ``checkpoint_io.save_checkpoint`` on
        ``meta``, from the mapped file, with ``assign=True``."""
        from saveload_lessons import checkpoint_io

        chance = _chance()
        source = _tiny_network(*_layout(chance), _seeds(chance, 1)[0])
        with _folder() as folder:
            path = folder / _file_name(chance, "lean", ".pth")
            checkpoint_io.save_checkpoint(path, source)
            fills = _RandomFills()
            with fills, _quiet():
                model = self.call(1, load_lean, path)
            problem = self._lean_problem(model, source, fills, path)
            del model
            gc.collect()  # lets the mapping go before the folder is removed
        if problem:
            self.fail(1, *problem)
        self.passed(1, "the network's parameters are the tensors of the mapped file: no random "
                    "initialisation, no second copy.",
                    "网络的参数就是映射的文件中的张量：没有随机初始化，也没有第二份副本。")

    def _lean_problem(self, model, source, fills, path):
        """What is wrong with the network ``model`` that ``load_lean`` returned, as an
        (English, Chinese) pair, or None."""
        if not isinstance(model, torch.nn.Module):
            return (f"it returned {type(model).__name__}; return the rebuilt network.",
                    f"你的函数返回了 {type(model).__name__}；请返回重建的网络。")
        state = model.state_dict()
        on_meta = [name for name, tensor in state.items() if tensor.is_meta]
        if on_meta:
            return (f"{on_meta} are still on the meta device: `load_state_dict` copies into them, which does "
                    "nothing on `meta`. Load with `load_state_dict(..., assign=True)`, which makes the "
                    "file's tensors the parameters.",
                    f"{on_meta} 仍然在 `meta` 设备上：`load_state_dict` 会把值复制进去，而在 `meta` 上复制什么也不做。"
                    "请用 `load_state_dict(..., assign=True)` 加载，让文件中的张量成为参数。")
        if not _same_tensors(state, source.state_dict()):
            return ("the network does not hold the saved weights.", "网络中的权重不是保存的那些。")
        if fills.devices:
            return (f"the network was built with random weights on {sorted(fills.devices)} before the file's "
                    "were loaded: build it under `with torch.device(\"meta\"):`, which neither allocates nor "
                    "initialises anything.",
                    f"网络先在 {sorted(fills.devices)} 上用随机权重构建，之后才加载文件中的权重：请在 "
                    "`with torch.device(\"meta\"):` 块中构建它，这样既不分配内存，也不做初始化。")
        if not _in_mapping(list(state.values()), _record_offsets(path)):
            return ("the parameters are not the tensors of the mapped file: they were read or copied into "
                    "memory of their own. Map the file with `torch.load(..., mmap=True)` (or "
                    "`checkpoint_io.load_checkpoint(..., mmap=True)`) and make its tensors the parameters with "
                    "`load_state_dict(..., assign=True)`.",
                    "参数不是映射的文件中的张量：它们被读取或复制到了单独分配的内存中。请用 "
                    "`torch.load(..., mmap=True)`（或 `checkpoint_io.load_checkpoint(..., mmap=True)`）映射文件，"
                    "再用 `load_state_dict(..., assign=True)` 让其中的张量成为参数。")
        if model.training:
            return ("the network is in training mode: return it in evaluation mode (`model.eval()`).",
                    "网络处于训练模式：请返回处于评估模式的网络（`model.eval()`）。")
        return None

    def exercise_2(self, save_shards):
        """``save_shards(state_dict, folder, max_shard_size)`` writes safetensors shards of at
        most ``max_shard_size`` bytes of tensors and the index ``model.safetensors.index.json``."""
        chance = _chance()
        output_size, hidden = _layout(chance)
        hidden += _hidden_sizes(chance, 1, 2)
        state_dict = _tiny_network(output_size, hidden, _seeds(chance, 1)[0]).state_dict()
        sizes = {name: tensor.nbytes for name, tensor in state_dict.items()}
        largest, total = max(sizes.values()), sum(sizes.values())
        max_shard_size = chance.randint(largest, max(largest, total // 2))
        expected = {name: tensor.clone() for name, tensor in state_dict.items()}
        with _folder() as folder:
            self.call(2, save_shards, dict(state_dict), folder, max_shard_size)
            problem = self._shards_problem(folder, expected, sizes, max_shard_size)
            gc.collect()  # lets the shards' mappings go before the folder is removed
        if problem:
            self.fail(2, *problem)
        self.passed(2, "several shards, none over max_shard_size, and an index that matches them.",
                    "多个分片，没有一个超过 max_shard_size，索引与它们一致。")

    def _shards_problem(self, folder, expected, sizes, max_shard_size):
        """What is wrong with the sharded checkpoint in ``folder``, as an (English, Chinese)
        pair, or None."""
        written = sorted(path.name for path in folder.iterdir())
        index_path = folder / INDEX_FILE
        if not index_path.is_file():
            if not written:
                return ("nothing was written in the folder.", "文件夹中没有写入任何东西。")
            if any(name.endswith(".safetensors") for name in written):
                return (f"the folder holds {written} but no {INDEX_FILE}: the state dict must be split into "
                        f"shards of at most max_shard_size = {max_shard_size} bytes, with an index "
                        "(`huggingface_hub.save_torch_state_dict` takes `max_shard_size`).",
                        f"文件夹中有 {written}，却没有 {INDEX_FILE}：状态字典必须分成每个最多 "
                        f"max_shard_size = {max_shard_size} 字节的分片，并附上索引"
                        "（`huggingface_hub.save_torch_state_dict` 接受 `max_shard_size` 参数）。")
            return (f"the folder holds {written} but no {INDEX_FILE}: save safetensors shards with an index.",
                    f"文件夹中有 {written}，却没有 {INDEX_FILE}：请保存成带索引的 safetensors 分片。")
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            return (f"{INDEX_FILE} is not valid JSON.", f"{INDEX_FILE} 不是有效的 JSON。")
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(file, str) for file in weight_map.values()):
            return (f"{INDEX_FILE} needs a \"weight_map\" from each tensor's name to its shard's file name.",
                    f"{INDEX_FILE} 需要一个 \"weight_map\"，把每个张量的名字映射到它所在分片的文件名。")
        if set(weight_map) != set(expected):
            missing, extra = sorted(set(expected) - set(weight_map)), sorted(set(weight_map) - set(expected))
            return (f"the index's weight_map lacks {missing} and lists {extra} that the state dict does not have.",
                    f"索引的 weight_map 缺少 {missing}，还列出了状态字典中没有的 {extra}。")
        metadata = index.get("metadata")
        total = metadata.get("total_size") if isinstance(metadata, dict) else None
        if total != sum(sizes.values()):
            return (f"the index's metadata.total_size is {total!r}; the tensors take {sum(sizes.values())} bytes.",
                    f"索引中的 metadata.total_size 是 {total!r}；这些张量一共占 {sum(sizes.values())} 字节。")
        shards = sorted(set(weight_map.values()))
        unlisted = [name for name in written if name not in shards and name != INDEX_FILE]
        if unlisted:
            return (f"the folder also holds {unlisted}, which the index does not name.",
                    f"文件夹中还有索引没有提到的 {unlisted}。")
        for shard in shards:
            names = sorted(name for name, file in weight_map.items() if file == shard)
            if Path(shard).name != shard or not (folder / shard).is_file():
                return (f"the index names the shard {shard!r}, which is not a file of the folder.",
                        f"索引提到的分片 {shard!r} 不是这个文件夹中的文件。")
            tensors = _shard_tensors(folder / shard)
            if tensors is None:
                return (f"{shard} is not a safetensors file.", f"{shard} 不是 safetensors 文件。")
            if sorted(tensors) != names:
                return (f"{shard} holds {sorted(tensors)}, but the index puts {names} in it.",
                        f"{shard} 中有 {sorted(tensors)}，而索引说其中是 {names}。")
            wrong = [name for name in names if not _same_tensor(tensors[name], expected[name])]
            if wrong:
                return (f"in {shard}, {wrong} do not hold the values of the state dict.",
                        f"{shard} 中的 {wrong} 与状态字典中的值不同。")
            size = sum(sizes[name] for name in names)
            if size > max_shard_size:
                return (f"{shard} holds {size} bytes of tensors, more than max_shard_size = {max_shard_size}.",
                        f"{shard} 中的张量共 {size} 字节，超过了 max_shard_size = {max_shard_size}。")
        return None
