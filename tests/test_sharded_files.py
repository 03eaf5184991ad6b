"""Sharded safetensors checkpoints (``saveload_lessons.sharded_files``): a round trip, and a
refusal, naming the right file, for every way a folder can be damaged or forged.

The folders are written by hand (``safetensors.torch.save_file`` and ``json``), as
``huggingface_hub.save_torch_state_dict`` writes them; the tests that use
``huggingface_hub`` itself run when it is installed.
"""

import collections
import json
import os
import struct

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from conftest import assert_identical
from saveload_lessons import sharded_files
from saveload_lessons.checkpoint_io import CheckpointError
from saveload_lessons.sharded_files import INDEX_FILE, load_sharded, load_sharded_into, read_index

STATE = {
    "embed.weight": torch.arange(24, dtype=torch.float32).reshape(6, 4) / 7,
    "steps": torch.tensor(12345678901, dtype=torch.int64),  # a 0-d tensor
    "layer.weight": torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(3, 4),
    "mask": torch.tensor([[True, False, True]]),
    "layer.bias": torch.tensor([0.5, -2.0, 3.25], dtype=torch.float16),
    "half": torch.tensor([1.5, -0.125], dtype=torch.bfloat16),
    "empty": torch.zeros(0, 3),
}
SHARDS = [["embed.weight", "steps"], ["layer.weight", "mask"], ["layer.bias", "half", "empty"]]


def shard_name(number, count=3):
    """The name huggingface_hub gives a shard: model-00002-of-00003.safetensors."""
    return f"model-{number:05d}-of-{count:05d}.safetensors"


def nbytes(state):
    return sum(tensor.numel() * tensor.element_size() for tensor in state.values())


def write_index(folder, document):
    (folder / INDEX_FILE).write_text(json.dumps(document, indent=2))


def write_folder(folder, state=STATE, shards=SHARDS):
    """``state`` saved as ``huggingface_hub`` saves it: a shard file for each list of names in
    ``shards``, and the index."""
    folder.mkdir(exist_ok=True)
    weight_map = {}
    for number, names in enumerate(shards, 1):
        save_file({name: state[name] for name in names}, folder / shard_name(number, len(shards)),
                  metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(names, shard_name(number, len(shards))))
    write_index(folder, {"metadata": {"total_size": nbytes(state)}, "weight_map": weight_map})
    return folder


def edit_index(folder, change):
    """Rewrite the index of ``folder`` after ``change(document)``."""
    document = json.loads((folder / INDEX_FILE).read_text())
    change(document)
    write_index(folder, document)


@pytest.fixture
def folder(tmp_path):
    return write_folder(tmp_path / "model")


def refused(call, *paths):
    """``call()``'s CheckpointError message, after checking that it names every one of ``paths``."""
    with pytest.raises(CheckpointError) as info:
        call()
    message = str(info.value)
    for path in paths:
        assert str(path) in message, f"{path} not named in: {message}"
    return message


# --------------------------------------------------------------------------- round trips

def test_a_state_dict_in_three_shards_loads_back_bit_identical(folder):
    assert len(list(folder.glob("*.safetensors"))) == 3
    loaded = load_sharded(folder)
    assert_identical(loaded, STATE)
    assert list(loaded) == [name for names in SHARDS for name in names]  # the index's order
    assert read_index(folder) == {name: shard_name(number) for number, names in enumerate(SHARDS, 1)
                                  for name in names}


def test_the_index_may_leave_out_total_size(folder):
    edit_index(folder, lambda document: document.pop("metadata"))
    assert_identical(load_sharded(folder, map_location=torch.device("cpu")), STATE)


def test_a_folder_saved_by_huggingface_hub_loads_back(tmp_path):
    hub = pytest.importorskip("huggingface_hub")
    state = {name: tensor for name, tensor in STATE.items() if tensor.numel() > 0}
    hub.save_torch_state_dict(state, tmp_path, max_shard_size=40)
    assert len(list(tmp_path.glob("*.safetensors"))) >= 3
    assert_identical(load_sharded(tmp_path), state)


def test_an_unknown_device_is_a_value_error(folder):
    with pytest.raises(ValueError, match="unknown device"):
        load_sharded(folder, map_location="nowhere")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_tensors_go_to_map_location(folder):
    loaded = load_sharded(folder, map_location="cuda")
    assert {tensor.device.type for tensor in loaded.values()} == {"cuda"}
    assert_identical(loaded, STATE)


# --------------------------------------------------------------------------- the index

def test_a_folder_without_index_is_refused(tmp_path):
    refused(lambda: load_sharded(tmp_path), tmp_path / INDEX_FILE)
    refused(lambda: read_index(tmp_path / "nowhere"), tmp_path / "nowhere" / INDEX_FILE)


def test_an_index_that_is_a_link_is_refused(folder, tmp_path):
    real = tmp_path / "elsewhere.json"
    (folder / INDEX_FILE).rename(real)
    (folder / INDEX_FILE).symlink_to(real)
    assert "is a link" in refused(lambda: read_index(folder), folder / INDEX_FILE)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_an_index_that_is_a_pipe_is_refused_without_waiting(folder):
    (folder / INDEX_FILE).unlink()
    os.mkfifo(folder / INDEX_FILE)  # opening it to read would wait for a writer forever
    assert "not a regular file" in refused(lambda: read_index(folder), folder / INDEX_FILE)


def test_an_index_over_the_size_limit_is_refused(folder, monkeypatch):
    monkeypatch.setattr(sharded_files, "MAX_INDEX_BYTES", 100)
    assert "larger than 100 bytes" in refused(lambda: read_index(folder), folder / INDEX_FILE)


@pytest.mark.parametrize("content", [b"", b"{", b'{"weight_map": ', b"\xff\xfe\x00{}",
                                     b"[" * 100_000 + b"]" * 100_000,
                                     b'{"weight_map": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_001],
                         ids=["empty", "cut", "cut-later", "not-utf8", "deep-lists", "deep-objects"])
def test_an_index_that_is_not_json_is_refused(folder, content):
    (folder / INDEX_FILE).write_bytes(content)
    assert "not valid JSON" in refused(lambda: read_index(folder), folder / INDEX_FILE)


def test_an_index_that_lists_a_tensor_twice_is_refused(folder):
    shard = shard_name(1)
    (folder / INDEX_FILE).write_text(
        f'{{"weight_map": {{"steps": "{shard}", "embed.weight": "{shard}", "steps": "{shard}"}}}}')
    assert "'steps' twice" in refused(lambda: read_index(folder), folder / INDEX_FILE)


@pytest.mark.parametrize("document", [
    [], "weights", None, {}, {"weight_map": []}, {"weight_map": {}},
    {"weight_map": {"steps": 3}}, {"weight_map": {"steps": None}},
    {"weight_map": {"steps": ["model-00001-of-00003.safetensors"]}},
    {"metadata": [], "weight_map": {"steps": "model-00001-of-00003.safetensors"}},
    {"metadata": {"total_size": "12"}, "weight_map": {"steps": "model-00001-of-00003.safetensors"}},
    {"metadata": {"total_size": -1}, "weight_map": {"steps": "model-00001-of-00003.safetensors"}},
    {"metadata": {"total_size": True}, "weight_map": {"steps": "model-00001-of-00003.safetensors"}},
    {"metadata": {"total_size": 8.0}, "weight_map": {"steps": "model-00001-of-00003.safetensors"}},
])
def test_an_index_without_a_usable_weight_map_is_refused(folder, document):
    write_index(folder, document)
    refused(lambda: read_index(folder), folder / INDEX_FILE)


@pytest.mark.parametrize("name", ["/etc/passwd", "../model-00001-of-00003.safetensors",
                                  "sub/model.safetensors", "sub\\model.safetensors", "", ".", "..",
                                  "C:model.safetensors", "C:\\model.safetensors", "//server/share/x",
                                  "model\0.safetensors"])
def test_a_shard_outside_the_folder_is_refused(folder, name):
    edit_index(folder, lambda document: document["weight_map"].update(steps=name))
    message = refused(lambda: load_sharded(folder), folder / INDEX_FILE)
    assert "not a plain file name inside" in message


def test_a_shard_that_is_not_a_safetensors_file_by_name_is_refused(folder):
    (folder / "model.bin").write_bytes(b"")
    edit_index(folder, lambda document: document["weight_map"].update(steps="model.bin"))
    assert "must be .safetensors files" in refused(lambda: read_index(folder), folder / INDEX_FILE,
                                                   "model.bin")


def test_a_shard_that_is_a_link_is_refused(folder, tmp_path):
    shard = folder / shard_name(2)
    shard.rename(tmp_path / "outside.safetensors")
    shard.symlink_to(tmp_path / "outside.safetensors")
    assert "is a link" in refused(lambda: load_sharded(folder), shard, folder / INDEX_FILE)


def test_a_shard_that_is_a_folder_is_refused(folder):
    shard = folder / shard_name(3)
    shard.unlink()
    shard.mkdir()
    assert "not a regular file" in refused(lambda: load_sharded(folder), shard, folder / INDEX_FILE)


def test_a_missing_shard_is_refused(folder):
    (folder / shard_name(2)).unlink()
    message = refused(lambda: read_index(folder), folder / shard_name(2), folder / INDEX_FILE)
    assert "is missing" in message and "2 tensor(s)" in message


# --------------------------------------------------------------------------- the shards

def test_a_tensor_in_another_shard_than_the_index_says_is_refused(folder):
    edit_index(folder, lambda document: document["weight_map"].update(steps=shard_name(2)))
    message = refused(lambda: load_sharded(folder), folder / shard_name(1), folder / shard_name(2),
                      folder / INDEX_FILE)
    assert "'steps'" in message


def test_a_tensor_that_its_shard_does_not_hold_is_refused(folder):
    edit_index(folder, lambda document: document["weight_map"].update(ghost=shard_name(3)))
    message = refused(lambda: load_sharded(folder), folder / shard_name(3), folder / INDEX_FILE)
    assert "'ghost'" in message and "does not hold it" in message


def test_a_tensor_the_index_does_not_list_is_refused(folder):
    edit_index(folder, lambda document: document["weight_map"].pop("mask"))
    message = refused(lambda: load_sharded(folder), folder / shard_name(2), folder / INDEX_FILE)
    assert "'mask'" in message and "does not list" in message


def test_a_tensor_stored_twice_is_refused(tmp_path):
    folder = write_folder(tmp_path / "model", shards=[SHARDS[0], SHARDS[1] + ["steps"], SHARDS[2]])
    edit_index(folder, lambda document: document["weight_map"].update(steps=shard_name(1)))
    message = refused(lambda: load_sharded(folder), folder / shard_name(1), folder / shard_name(2))
    assert "stored in both" in message


def test_a_wrong_total_size_is_refused(folder):
    edit_index(folder, lambda document: document["metadata"].update(total_size=nbytes(STATE) + 4))
    message = refused(lambda: load_sharded(folder), folder / INDEX_FILE)
    assert f"{nbytes(STATE) + 4:,} bytes" in message and f"{nbytes(STATE):,} bytes" in message


@pytest.mark.parametrize("damage", [lambda data: data[:-1], lambda data: data[:len(data) // 2],
                                    lambda data: data[:12], lambda data: b"",
                                    lambda data: data + b"\0", lambda data: b"PK\3\4" + data[4:]],
                         ids=["last-byte", "half", "header-cut", "empty", "extra-byte", "foreign"])
def test_a_truncated_or_damaged_shard_is_refused(folder, damage):
    shard = folder / shard_name(2)
    shard.write_bytes(damage(shard.read_bytes()))
    message = refused(lambda: load_sharded(folder), shard)
    assert "is not a complete safetensors file" in message
    assert str(folder / shard_name(1)) not in message and str(folder / shard_name(3)) not in message


def test_a_tensor_of_a_packed_dtype_is_refused(folder):
    """Four-bit floats, two to a byte (safetensors' F4), are not plain numbers: refused from
    the shard's header, before anything is loaded."""
    header = json.dumps({"steps": {"dtype": "F4", "shape": [2], "data_offsets": [0, 1]}}).encode()
    header += b" " * (-len(header) % 8)
    shard = folder / shard_name(1)
    shard.write_bytes(struct.pack("<Q", len(header)) + header + b"\0")
    edit_index(folder, lambda document: document["weight_map"].pop("embed.weight"))
    message = refused(lambda: load_sharded(folder), shard)
    assert "'steps' has the dtype 'F4'" in message


# --------------------------------------------------------------------------- into a model

def network(hidden=8):
    torch.manual_seed(hidden)
    return nn.Sequential(nn.Linear(4, hidden), nn.BatchNorm1d(hidden), nn.Linear(hidden, 3))


@pytest.fixture
def saved_network(tmp_path):
    """A trained-looking network, and the folder of its state dict in three shards."""
    source = network()
    source[1].running_mean += 1.5
    source[1].num_batches_tracked += 7
    state = source.state_dict()
    shards = [["0.weight", "0.bias"], ["1.weight", "1.bias", "1.running_mean", "1.running_var"],
              ["1.num_batches_tracked", "2.weight", "2.bias"]]
    return source, write_folder(tmp_path / "model", state=state, shards=shards)


def test_a_model_loads_one_shard_at_a_time(saved_network, monkeypatch):
    source, folder = saved_network
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    parts = []
    load_state_dict = model.load_state_dict

    def recording(part, strict):
        parts.append(sorted(part))
        return load_state_dict(part, strict=strict)

    monkeypatch.setattr(model, "load_state_dict", recording)
    assert load_sharded_into(model, folder) == ([], [])
    assert_identical(model.state_dict(), source.state_dict())
    assert parts == [sorted(names) for names in json_shards(folder)]


def json_shards(folder):
    """The tensor names of each shard file, as the index gives them."""
    weight_map = json.loads((folder / INDEX_FILE).read_text())["weight_map"]
    return [[name for name, file in weight_map.items() if file == shard]
            for shard in dict.fromkeys(weight_map.values())]


def test_a_model_with_other_tensors_is_refused_and_left_as_it_was(saved_network):
    _, folder = saved_network
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3), nn.Linear(3, 3))
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    message = refused(lambda: load_sharded_into(model, folder), folder)
    assert "'3.weight'" in message and "strict=False" in message
    assert_identical(model.state_dict(), before)


def test_strict_false_loads_what_both_have(saved_network):
    source, folder = saved_network
    # keys 0.*, 2.* and 3.*: the batch norm's tensors (1.*) are unexpected, 3.* missing
    model = nn.Sequential(collections.OrderedDict(
        [("0", nn.Linear(4, 8)), ("2", nn.Linear(8, 3)), ("3", nn.Linear(3, 3))]))
    missing, unexpected = load_sharded_into(model, folder, strict=False)
    assert missing == ["3.weight", "3.bias"]
    assert unexpected == [name for name in source.state_dict() if name.startswith("1.")]
    assert_identical(model.state_dict()["2.weight"], source.state_dict()["2.weight"])
    assert_identical(model.state_dict()["0.bias"], source.state_dict()["0.bias"])


def test_a_model_of_other_shapes_is_refused_and_left_as_it_was(saved_network):
    _, folder = saved_network
    model = network(hidden=9)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    message = refused(lambda: load_sharded_into(model, folder, strict=False), folder)
    assert "0.weight has shape (8, 4) in the files, (9, 4) in the model" in message
    assert_identical(model.state_dict(), before)


def test_a_damaged_last_shard_leaves_the_model_as_it_was(saved_network):
    _, folder = saved_network
    shard = folder / shard_name(3)
    shard.write_bytes(shard.read_bytes()[:-4])
    model = network()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    refused(lambda: load_sharded_into(model, folder), shard)
    assert_identical(model.state_dict(), before)


def tied_network():
    """An embedding and an output layer that share one weight, as in a language model."""
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10, bias=False), nn.Linear(10, 3))
    model[1].weight = model[0].weight
    return model


def test_a_tied_weight_saved_once_loads_under_both_names(tmp_path):
    torch.manual_seed(0)
    source = tied_network()
    state = {name: tensor for name, tensor in source.state_dict().items() if name != "1.weight"}
    folder = write_folder(tmp_path / "model", state=state, shards=[[name] for name in state])
    model = tied_network()
    assert load_sharded_into(model, folder) == ([], [])
    assert_identical(model.state_dict(), source.state_dict())
    assert model[1].weight is model[0].weight


def test_a_tied_model_saved_by_huggingface_hub_loads_back(tmp_path):
    hub = pytest.importorskip("huggingface_hub")
    torch.manual_seed(0)
    source = tied_network()
    hub.save_torch_model(source, tmp_path, max_shard_size=100)
    assert len(list(tmp_path.glob("*.safetensors"))) >= 3
    model = tied_network()
    load_sharded_into(model, tmp_path)
    assert_identical(model.state_dict(), source.state_dict())


# --------------------------------------------------------------------------- in Chinese

def test_the_refusals_a_lesson_shows_are_in_chinese(folder, chinese):
    edit_index(folder, lambda document: document["weight_map"].update(steps="../elsewhere.safetensors"))
    message = refused(lambda: load_sharded(folder), folder / INDEX_FILE)
    assert "不是" in message and "中的普通文件名" in message and "只加载来源可信的检查点" in message

    edit_index(folder, lambda document: document["weight_map"].update(steps=shard_name(2)))
    message = refused(lambda: load_sharded(folder), folder / shard_name(1), folder / shard_name(2))
    assert "分片文件" in message and "与索引不匹配" in message

    (folder / shard_name(3)).unlink()
    message = refused(lambda: load_sharded(folder), folder / shard_name(3), folder / INDEX_FILE)
    assert message.startswith("缺少分片文件") and "请重新复制整个文件夹" in message


# --------------------------------------------------------------------------- found by an attack

def test_a_shard_name_no_file_system_can_spell_is_refused(folder):
    edit_index(folder, lambda document: document["weight_map"].update(
        {name: "\ud800.safetensors" for name in document["weight_map"]}))
    with pytest.raises(CheckpointError, match="is not a plain file name inside"):
        read_index(folder)


def test_a_shape_no_tensor_can_have_is_refused(tmp_path):
    folder = write_folder(tmp_path / "model", {"a": torch.zeros(1)}, [["a"]])
    shard = folder / shard_name(1, 1)
    header = json.dumps({"a": {"dtype": "F32", "shape": [0, 2**62, 2**62], "data_offsets": [0, 0]}}).encode()
    shard.write_bytes(struct.pack("<Q", len(header)) + header)
    edit_index(folder, lambda document: document["metadata"].update(total_size=0))
    with pytest.raises(CheckpointError, match="which no tensor can have"):
        load_sharded(folder)


def test_values_of_another_kind_are_not_converted_into_the_model(tmp_path):
    folder = write_folder(tmp_path / "model", {"weight": torch.ones(2, 2, dtype=torch.complex64),
                                              "bias": torch.ones(2, dtype=torch.bool)}, [["weight", "bias"]])
    model = nn.Linear(2, 2)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"weight holds complex values .* the model's is floating-point"):
        load_sharded_into(model, folder)
    assert_identical(dict(model.state_dict()), before)


def test_both_names_of_a_tied_tensor_in_the_files_are_refused(tmp_path):
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.head = nn.Embedding(4, 3), nn.Linear(3, 4, bias=False)
            self.head.weight = self.embed.weight

    folder = write_folder(tmp_path / "model", {"embed.weight": torch.full((4, 3), 5.0),
                                              "head.weight": torch.full((4, 3), 9.0)},
                          [["embed.weight"], ["head.weight"]])
    with pytest.raises(CheckpointError, match="hold both embed.weight and head.weight, which are one tensor"):
        load_sharded_into(Tied(), folder)
