"""Lesson 7's modules: the workers' random state, the stop request, the best K and the job."""

import io
import json
import random
import signal

import numpy as np
import pytest
import torch
from torchdata.stateful_dataloader import StatefulDataLoader

from saveload_lessons import checkpoint_io, preemption, resumable_data, resumable_job
from saveload_lessons.checkpoint_io import CheckpointError
from saveload_lessons.retention import LEDGER, CheckpointKeeper, file_step, step_file

# torchdata 0.11 warns at every StatefulDataLoader on torch 2.10 and later (resumable_job explains)
pytestmark = pytest.mark.filterwarnings("ignore:'set_vital' is deprecated:UserWarning")


def _draws():
    """One number from each of the three generators a worker's augmentation uses."""
    return torch.rand(1).item(), random.random(), float(np.random.random())


def _round_trip(state):
    """``state`` through a file, read back as a checkpoint is: with ``weights_only=True``."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


# --------------------------------------------------------------------------- resumable_data

def test_the_worker_random_state_restores_all_three_generators_through_a_safe_file():
    dataset = resumable_data.StatefulAugmentedImages(torch.zeros(2, 1, 28, 28), torch.zeros(2))
    np.random.normal(size=3)  # leaves a cached Gaussian in NumPy's state, which must survive too
    state = _round_trip(dataset.state_dict())
    expected = _draws()
    _draws(), _draws()
    dataset.load_state_dict(state)
    assert _draws() == expected


def test_an_augmented_image_differs_each_time_and_keeps_its_shape_and_label():
    images = torch.randn(3, 1, 28, 28)
    dataset = resumable_data.AugmentedImages(images, torch.tensor([4, 5, 6]))
    (first, label), (second, _) = dataset[1], dataset[1]
    assert first.shape == (1, 28, 28) and label == 5 and not torch.equal(first, second)


def test_images_and_labels_must_be_as_many():
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        resumable_data.AugmentedImages(torch.zeros(3, 1, 28, 28), torch.zeros(2))


def test_resumed_batches_restores_the_generator_after_the_iterator_has_drawn_its_seed():
    dataset = list(range(20))
    loader = StatefulDataLoader(dataset, batch_size=4, shuffle=True)
    next(iter(loader))
    loader_state, rng = loader.state_dict(), checkpoint_io.rng_state()
    expected = torch.rand(1)
    resumed = StatefulDataLoader(dataset, batch_size=4, shuffle=True)
    batches = resumable_data.resumed_batches(resumed, loader_state, rng)
    assert torch.equal(torch.rand(1), expected)
    assert sum(len(batch) for batch in batches) == 16


# --------------------------------------------------------------------------- preemption

def test_a_stop_request_records_the_signal_and_puts_the_previous_handler_back():
    previous = signal.getsignal(preemption.STOP_SIGNAL)
    with preemption.StopRequest() as stop:
        assert not stop.requested
        signal.raise_signal(preemption.STOP_SIGNAL)
        assert stop.requested
    assert signal.getsignal(preemption.STOP_SIGNAL) is previous


# --------------------------------------------------------------------------- retention

def _write(value):
    return lambda file: torch.save({"value": torch.tensor(value)}, file)


def _names(folder):
    return sorted(path.name for path in folder.iterdir())


def test_the_keeper_keeps_the_latest_and_the_best_k(tmp_path):
    keeper = CheckpointKeeper(tmp_path, keep_best=2)
    for step, accuracy in [(10, 0.5), (20, 0.9), (30, 0.7), (40, 0.6), (50, 0.8)]:
        keeper.save(step, accuracy, _write(step))
    assert _names(tmp_path) == [LEDGER, "step-000020.pt", "step-000050.pt"]
    assert keeper.latest() == step_file(tmp_path, 50)
    assert keeper.best() == [(step_file(tmp_path, 20), 0.9), (step_file(tmp_path, 50), 0.8)]
    assert torch.load(keeper.latest(), weights_only=True)["value"].item() == 50


def test_a_loss_keeps_the_lowest_and_equal_metrics_keep_the_earlier(tmp_path):
    keeper = CheckpointKeeper(tmp_path, keep_best=1, higher_is_better=False)
    for step, loss in [(1, 0.3), (2, 0.2), (3, 0.2), (4, 0.4)]:
        keeper.save(step, loss, _write(step))
    assert keeper.best() == [(step_file(tmp_path, 2), 0.2)]
    assert _names(tmp_path) == [LEDGER, "step-000002.pt", "step-000004.pt"]


def test_a_failed_save_changes_nothing(tmp_path):
    keeper = CheckpointKeeper(tmp_path, keep_best=1)
    keeper.save(1, 0.5, _write(1))
    keeper.save(2, 0.4, _write(2))
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}

    def disk_full(file):
        file.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        keeper.save(3, 0.9, disk_full)
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before


def test_a_file_left_by_a_kill_before_the_ledger_is_deleted_by_the_next_save(tmp_path):
    keeper = CheckpointKeeper(tmp_path, keep_best=1)
    keeper.save(1, 0.5, _write(1))
    step_file(tmp_path, 2).write_bytes(b"written, but never in the ledger")
    keeper.save(3, 0.4, _write(3))
    assert _names(tmp_path) == [LEDGER, "step-000001.pt", "step-000003.pt"]


@pytest.mark.parametrize("content", [
    b"not json", b"[" * 100_000, json.dumps({"latest": 1}).encode(),
    json.dumps({"latest": "step-1", "best": []}).encode(),
    json.dumps({"latest": 1, "best": [{"step": 1, "metric": "NaN"}]}).encode(),
    b"NaN" * 400_000,
])
def test_a_damaged_ledger_is_refused_with_its_name(tmp_path, content):
    (tmp_path / LEDGER).write_bytes(content)
    with pytest.raises(CheckpointError, match=LEDGER):
        CheckpointKeeper(tmp_path, keep_best=1).latest()


def test_a_ledger_that_names_a_missing_file_says_so(tmp_path):
    keeper = CheckpointKeeper(tmp_path, keep_best=1)
    keeper.save(7, 0.5, _write(7))
    step_file(tmp_path, 7).unlink()
    with pytest.raises(CheckpointError, match="step-000007.pt.*missing"):
        keeper.latest()


@pytest.mark.parametrize("step, metric", [(-1, 0.5), (1.0, 0.5), (1, float("nan")), (1, "0.5"), (True, 0.5)])
def test_a_save_needs_a_step_and_a_finite_metric(tmp_path, step, metric):
    with pytest.raises(ValueError):
        CheckpointKeeper(tmp_path, keep_best=1).save(step, metric, _write(0))
    assert not tmp_path.exists() or _names(tmp_path) == []


def test_only_the_names_of_checkpoint_files_count():
    assert file_step("step-000040.pt") == 40
    assert [file_step(name) for name in ("step-40.pt", "step-000040", "step-000040.pth", "latest")] == [None] * 4


# --------------------------------------------------------------------------- the job

def _examples(count=192):
    generator = torch.Generator().manual_seed(0)
    return torch.randn(count, 1, 28, 28, generator=generator), torch.randint(0, 10, (count,), generator=generator)


def _interrupted(tmp_path, stop_at, until, **options):
    images, labels = _examples()
    job = resumable_job.Job(images, labels, 3, 2, **options)
    resumable_job.train_steps(job, stop_at)
    torch.save(job.checkpoint(), tmp_path / "job.pt")
    job = resumable_job.Job(images, labels, 3, 2, **options)
    job.resume(tmp_path / "job.pt")
    resumable_job.train_steps(job, until)
    return job


def test_a_job_resumed_in_the_middle_of_an_epoch_with_two_workers_is_bit_identical(tmp_path):
    images, labels = _examples()
    reference = resumable_job.Job(images, labels, 3, 2)
    resumable_job.train_steps(reference, 7)
    resumed = _interrupted(tmp_path, 2, 7)  # 3 steps an epoch: stopped in the first, ends in the third
    for name in ("model", "ema"):
        expected, got = getattr(reference, name).state_dict(), getattr(resumed, name).state_dict()
        assert all(torch.equal(expected[key], got[key]) for key in expected)
    assert resumed.step == 7


def test_without_the_workers_random_state_the_rest_of_the_epoch_differs(tmp_path):
    images, labels = _examples()
    options = {"dataset_class": resumable_data.AugmentedImages}
    reference = resumable_job.Job(images, labels, 3, 2, **options)
    resumable_job.train_steps(reference, 3)
    resumed = _interrupted(tmp_path, 2, 3, **options)
    assert not torch.equal(reference.model.output.weight, resumed.model.output.weight)


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter:UserWarning")  # meta's no-op copies
def test_a_job_on_another_device_keeps_the_loaders_state_on_the_cpu(tmp_path):
    """The meta device stands for a GPU: a job there resumes, with its loader's generators."""
    images, labels = _examples()
    job = resumable_job.Job(images, labels, 3, 2)
    resumable_job.train_steps(job, 2)
    torch.save(job.checkpoint(), tmp_path / "job.pt")
    elsewhere = resumable_job.Job(images, labels, 3, 2, device="meta")
    elsewhere.resume(tmp_path / "job.pt")
    assert elsewhere.step == 2 and elsewhere.model.output.weight.is_meta
    assert next(iter(elsewhere.batches))[0].device.type == "cpu"


def test_the_job_checkpoint_loads_safely_through_checkpoint_io(tmp_path):
    images, labels = _examples()
    job = resumable_job.Job(images, labels, 3, 2)
    resumable_job.train_steps(job, 2)
    torch.save(job.checkpoint(), tmp_path / "job.pt")
    checkpoint = checkpoint_io.load_checkpoint(tmp_path / "job.pt", resumable_job.fc_model.NETWORK)
    assert checkpoint["step"] == 2 and checkpoint["ema_state_dict"]["n_averaged"].item() == 2


def test_resuming_with_another_number_of_workers_says_what_to_do(tmp_path):
    images, labels = _examples()
    job = resumable_job.Job(images, labels, 3, 2)
    resumable_job.train_steps(job, 1)
    torch.save(job.checkpoint(), tmp_path / "job.pt")
    with pytest.raises(CheckpointError, match="num_workers"):
        resumable_job.Job(images, labels, 3, 1).resume(tmp_path / "job.pt")


def test_a_forged_generator_state_in_the_loaders_state_is_refused_with_the_file_named(tmp_path):
    images, labels = _examples()
    job = resumable_job.Job(images, labels, 3, 2)
    resumable_job.train_steps(job, 1)
    checkpoint = job.checkpoint()
    sampler = checkpoint["loader_state"]["_snapshot"]["_main_snapshot"]["_sampler_iter_state"]
    sampler["sampler_iter_state"]["generator"] = torch.zeros(3, dtype=torch.uint8)
    torch.save(checkpoint, tmp_path / "forged.pt")
    with pytest.raises(CheckpointError, match="forged.pt.*does not fit this loader"):
        resumable_job.Job(images, labels, 3, 2).resume(tmp_path / "forged.pt")


def test_a_general_checkpoint_of_another_job_is_refused(tmp_path):
    images, labels = _examples()
    job = resumable_job.Job(images, labels, 3, 1)
    checkpoint_io.save_checkpoint(tmp_path / "other.pt", job.model, job.optimizer, epoch=1)
    with pytest.raises(CheckpointError, match="lesson-7 job"):
        job.resume(tmp_path / "other.pt")


def test_examples_round_trip_and_a_foreign_file_is_refused(tmp_path):
    images, labels = _examples(8)
    resumable_job.save_examples(tmp_path / "examples.pt", (images[:6], labels[:6]), (images[6:], labels[6:]))
    (train_images, _), (test_images, _) = resumable_job.load_examples(tmp_path / "examples.pt")
    assert torch.equal(train_images, images[:6]) and torch.equal(test_images, images[6:])
    assert (tmp_path / "examples.pt").stat().st_size < images.nbytes * 1.5  # the slices alone
    torch.save({"weights": images}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="save_examples"):
        resumable_job.load_examples(tmp_path / "foreign.pt")
