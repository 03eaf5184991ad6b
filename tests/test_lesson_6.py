"""Lesson 6: wrong answers to its exercises get the message meant for them, the check's way of
telling a mapped parameter from a copy works, and the lesson's own assertions fail when what
they check is broken.

The solutions and the student stubs are run through the checks by ``test_exercises.py``, as for
every lesson.
"""

import json
import sys
from pathlib import Path

import huggingface_hub
import pytest
import safetensors.torch
import torch
from mutants import assert_fails_at, run_mutant

import fc_model
from saveload_lessons import checkpoint_io, exercise_checks
from saveload_lessons.exercise_checks import lesson06

LESSON_6 = "06-big-checkpoints"
INDEX = "model.safetensors.index.json"


# --------------------------------------------------------------------------- exercise 6.1

def _checkpoint(path, mmap=False):
    return checkpoint_io.load_checkpoint(path, fc_model.NETWORK, map_location="cpu", mmap=mmap)


def _load_normally(path):
    checkpoint = _checkpoint(path)
    model = fc_model.Network(**checkpoint["architecture"])
    model.load_state_dict(checkpoint["model_state_dict"])
    return model.eval()


def _mapped_into_a_random_network(path):
    checkpoint = _checkpoint(path, mmap=True)
    model = fc_model.Network(**checkpoint["architecture"])
    model.load_state_dict(checkpoint["model_state_dict"], assign=True)
    return model.eval()


def _meta_without_assign(path):
    checkpoint = _checkpoint(path, mmap=True)
    with torch.device("meta"):
        model = fc_model.Network(**checkpoint["architecture"])
    model.load_state_dict(checkpoint["model_state_dict"])
    return model.eval()


def _meta_and_assign_without_mmap(path):
    checkpoint = _checkpoint(path)
    with torch.device("meta"):
        model = fc_model.Network(**checkpoint["architecture"])
    model.load_state_dict(checkpoint["model_state_dict"], assign=True)
    return model.eval()


def _empty_then_copied(path):
    checkpoint = _checkpoint(path, mmap=True)
    with torch.device("meta"):
        model = fc_model.Network(**checkpoint["architecture"])
    model.to_empty(device="cpu")
    model.load_state_dict(checkpoint["model_state_dict"])
    return model.eval()


def _the_companion_loader(path):
    return fc_model.load_network(path)


def _lean_but_training(path):
    checkpoint = _checkpoint(path, mmap=True)
    with torch.device("meta"):
        model = fc_model.Network(**checkpoint["architecture"])
    model.load_state_dict(checkpoint["model_state_dict"], assign=True)
    return model


def _the_checkpoint_itself(path):
    return _checkpoint(path, mmap=True)


# --------------------------------------------------------------------------- exercise 6.2

def _one_torch_file(state_dict, folder, max_shard_size):
    torch.save(state_dict, Path(folder) / "model.pth")


def _nothing(state_dict, folder, max_shard_size):
    pass


def _one_safetensors_file(state_dict, folder, max_shard_size):
    huggingface_hub.save_torch_state_dict(state_dict, folder)


def _write_shards(folder, shards, total_size):
    """Home-made shards: ``shards`` is ``{file name: {tensor name: tensor}}``."""
    weight_map = {}
    for file, tensors in shards.items():
        safetensors.torch.save_file(tensors, Path(folder) / file)
        weight_map.update(dict.fromkeys(tensors, file))
    index = {"metadata": {"total_size": total_size}, "weight_map": weight_map}
    (Path(folder) / INDEX).write_text(json.dumps(index))


def _two_shards_whatever_the_size(state_dict, folder, max_shard_size):
    names = list(state_dict)
    total = sum(tensor.nbytes for tensor in state_dict.values())
    _write_shards(folder, {"model-00001-of-00002.safetensors": {name: state_dict[name] for name in names[:-1]},
                           "model-00002-of-00002.safetensors": {names[-1]: state_dict[names[-1]]}}, total)


def _without_total_size(state_dict, folder, max_shard_size):
    huggingface_hub.save_torch_state_dict(state_dict, folder, max_shard_size=max_shard_size)
    index = json.loads((Path(folder) / INDEX).read_text())
    del index["metadata"]
    (Path(folder) / INDEX).write_text(json.dumps(index))


def _index_of_another_save(state_dict, folder, max_shard_size):
    huggingface_hub.save_torch_state_dict(state_dict, folder, max_shard_size=max_shard_size)
    index = json.loads((Path(folder) / INDEX).read_text())
    weight_map = index["weight_map"]
    first = next(iter(weight_map))  # swapped with a tensor of another shard: every shard stays named
    other = next(name for name, file in weight_map.items() if file != weight_map[first])
    weight_map[first], weight_map[other] = weight_map[other], weight_map[first]
    (Path(folder) / INDEX).write_text(json.dumps(index))


def _names_left_out(state_dict, folder, max_shard_size):
    huggingface_hub.save_torch_state_dict({name: tensor for name, tensor in state_dict.items()
                                           if not name.startswith("output.")},
                                          folder, max_shard_size=max_shard_size)


WRONG_ANSWERS = [
    (1, _load_normally, "the network was built with random weights on ['cpu']"),
    (1, _mapped_into_a_random_network, "the network was built with random weights on ['cpu']"),
    (1, _meta_without_assign, "are still on the meta device"),
    (1, _meta_and_assign_without_mmap, "the parameters are not the tensors of the mapped file"),
    (1, _empty_then_copied, "the parameters are not the tensors of the mapped file"),
    (1, _the_companion_loader, "the parameters are not the tensors of the mapped file"),
    (1, _lean_but_training, "the network is in training mode"),
    (1, _the_checkpoint_itself, "it returned dict; return the rebuilt network"),
    (2, _nothing, "nothing was written in the folder"),
    (2, _one_torch_file, "the folder holds ['model.pth'] but no model.safetensors.index.json: save "),
    (2, _one_safetensors_file, "the folder holds ['model.safetensors'] but no model.safetensors.index.json: "
                               "the state dict must be split"),
    (2, _two_shards_whatever_the_size, "model-00001-of-00002.safetensors holds"),
    (2, _without_total_size, "the index's metadata.total_size is None"),
    (2, _index_of_another_save, "but the index puts"),
    (2, _names_left_out, "the index's weight_map lacks ['output.bias', 'output.weight']"),
]


@pytest.mark.parametrize("number, answer, message", WRONG_ANSWERS,
                         ids=[f"6.{number}-{answer.__name__}" for number, answer, _ in WRONG_ANSWERS])
def test_a_wrong_answer_gets_the_message_meant_for_it(number, answer, message, capsys):
    with pytest.raises(exercise_checks.ExerciseFailed) as info:
        getattr(exercise_checks.for_lesson(6), f"exercise_{number}")(answer)
    assert not info.value.not_done
    assert message in str(info.value)


def test_the_too_big_shard_is_named_with_its_size(capsys):
    with pytest.raises(exercise_checks.ExerciseFailed,
                       match=r"holds \d+ bytes of tensors, more than max_shard_size = \d+"):
        exercise_checks.for_lesson(6).exercise_2(_two_shards_whatever_the_size)


@pytest.mark.parametrize("number, answer, message", [
    (1, _the_companion_loader, "参数不是映射的文件中的张量"),
    (2, _one_safetensors_file, "状态字典必须分成每个最多"),
])
def test_the_chinese_checks_speak_chinese(number, answer, message, capsys):
    with pytest.raises(exercise_checks.ExerciseFailed) as info:
        getattr(exercise_checks.for_lesson(6, "zh-CN"), f"exercise_{number}")(answer)
    assert str(info.value).startswith(f"练习 6.{number}：") and message in str(info.value)


# --------------------------------------------------------------------------- telling a mapping from a copy

def test_only_a_mapped_load_lies_in_the_mapping(tmp_path):
    path = tmp_path / "network.pth"
    checkpoint_io.save_checkpoint(path, fc_model.Network(8, 3, [5, 4]))
    offsets = lesson06._record_offsets(path)
    assert len(offsets) == 6 + 1  # the network's six tensors and the random-number generator's state
    mapped = torch.load(path, mmap=True, weights_only=True)["model_state_dict"]
    read = torch.load(path, weights_only=True)["model_state_dict"]
    assert lesson06._in_mapping(list(mapped.values()), offsets)
    assert not lesson06._in_mapping(list(read.values()), offsets)
    assert not lesson06._in_mapping([tensor.clone() for tensor in mapped.values()], offsets)
    assert not lesson06._in_mapping([], offsets)


def test_a_random_initialisation_is_seen_on_the_cpu_only():
    watch = lesson06._RandomFills()
    with watch:
        with torch.device("meta"):
            fc_model.Network(8, 3, [5])
    assert watch.devices == set()
    with watch:
        fc_model.Network(8, 3, [5])
    assert watch.devices == {"cpu"}


# --------------------------------------------------------------------------- the lesson's own assertions

@pytest.fixture
def quick_6(data_dir):
    return {"epochs": 1, "hidden_size": 1024, "hidden_count": 3, "max_shard_mb": 8, "train_size": 64,
            "data_dir": data_dir}


needs_peak_memory = pytest.mark.skipif(sys.platform == "win32", reason="Windows has no peak memory to read")


@needs_peak_memory
def test_lesson_6_a_lean_load_that_reads_the_file_is_caught(quick_6, tmp_path):
    # Without mmap=True, the lean child reads the whole file before its forward pass.
    error = run_mutant(LESSON_6, 'map_location="cpu", mmap=True, weights_only=True)\nwith torch.device("meta"):',
                       'map_location="cpu", weights_only=True)\nwith torch.device("meta"):', quick_6, tmp_path)
    assert_fails_at(error, 'lean["loaded"] <= 0.25 * weight_bytes')


def test_lesson_6_tied_weights_left_untied_are_caught(quick_6, tmp_path):
    error = run_mutant(LESSON_6, "lean_tied.output.weight = lean_tied.embedding.weight  # tie them again",
                       "pass  # tie them again", quick_6, tmp_path)
    assert_fails_at(error, "assert len(list(lean_tied.parameters())) == 3")
