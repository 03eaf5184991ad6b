"""Distributed checkpoints: step folders and the latest pointer, safe loading, one-file copies,
launching, and real torchrun runs of ``fsdp_training`` (gloo, CPU).

The torchrun runs are few and small (640 images, 10 steps): a reference run on 2 processes; a
run whose last rank is killed while saving, then resumed; and a load on 3 processes. Each launch costs seconds of process start-up, so they are shared by
the tests through module fixtures.
"""

import pickle
import stat

import pytest
import torch
import torch.distributed.checkpoint as dcp

import fc_model
from conftest import assert_identical
from saveload_lessons import distributed_checkpoints, fsdp_training, launching
from saveload_lessons.checkpoint_io import CheckpointError

MARKER = "payload-ran"


class Payload:
    """Unpickling this writes the file MARKER in the current folder: proof that code ran."""

    def __reduce__(self):  # builtins.exec: pickled under the same name on every Python
        return (exec, (f"open({MARKER!r}, 'w').close()",))


def dcp_save(state_dict, folder):
    """Save a state dict as a DCP folder in this one process (no process group)."""
    with pytest.warns(UserWarning, match="torch.distributed is disabled"):
        dcp.save(state_dict, checkpoint_id=folder, no_dist=True)


# --------------------------------------------------------------------------- step folders

def complete_folder(root, step):
    folder = distributed_checkpoints.step_folder(root, step)
    dcp_save({"w": torch.full((2,), float(step))}, folder)
    return folder


def test_step_folders_are_named_and_read_back():
    folder = distributed_checkpoints.step_folder("run", 40)
    assert folder.name == "step-000040"
    assert distributed_checkpoints.folder_step(folder) == 40
    assert distributed_checkpoints.folder_step("step-40") is None
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="non-negative integer"):
            distributed_checkpoints.step_folder("run", bad)


def test_latest_names_only_complete_folders(tmp_path):
    assert distributed_checkpoints.latest_checkpoint(tmp_path) is None
    first = complete_folder(tmp_path, 10)
    distributed_checkpoints.mark_latest(tmp_path, first)
    assert distributed_checkpoints.latest_checkpoint(tmp_path) == first

    unfinished = distributed_checkpoints.step_folder(tmp_path, 20)
    unfinished.mkdir()
    (unfinished / "__0_0.distcp").write_bytes(b"shards")
    with pytest.raises(CheckpointError, match="incomplete"):
        distributed_checkpoints.mark_latest(tmp_path, unfinished)
    assert distributed_checkpoints.latest_checkpoint(tmp_path) == first
    assert distributed_checkpoints.unfinished_folders(tmp_path) == [unfinished]
    with pytest.raises(ValueError, match="not a step folder"):
        distributed_checkpoints.mark_latest(tmp_path, tmp_path / "elsewhere")


@pytest.mark.parametrize("content, message", [
    ("../../etc", "should name a step folder"),
    ("step-000099", "missing or has no .metadata"),
])
def test_a_broken_pointer_is_an_error_not_a_fresh_start(tmp_path, content, message):
    (tmp_path / "latest").write_text(content)
    with pytest.raises(CheckpointError, match=message):
        distributed_checkpoints.latest_checkpoint(tmp_path)


def test_the_pointer_stays_private(tmp_path):
    distributed_checkpoints.mark_latest(tmp_path, complete_folder(tmp_path, 1))
    (tmp_path / "latest").chmod(0o600)
    distributed_checkpoints.mark_latest(tmp_path, complete_folder(tmp_path, 2))
    assert stat.S_IMODE((tmp_path / "latest").stat().st_mode) == 0o600
    assert distributed_checkpoints.latest_checkpoint(tmp_path).name == "step-000002"


def test_prune_keeps_the_newest_up_to_latest_and_drops_unfinished(tmp_path):
    folders = [complete_folder(tmp_path, step) for step in (10, 20, 30)]
    distributed_checkpoints.mark_latest(tmp_path, folders[1])   # 30 complete but never marked
    (tmp_path / "notes").mkdir()                                # not a step folder: untouched
    deleted = distributed_checkpoints.prune(tmp_path, keep=1)
    assert sorted(p.name for p in deleted) == ["step-000010", "step-000030"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "notes", "step-000020"]
    with pytest.raises(ValueError, match="keep"):
        distributed_checkpoints.prune(tmp_path, keep=0)


# --------------------------------------------------------------------------- safe loading

def test_metadata_of_a_real_checkpoint_passes(tmp_path):
    folder = complete_folder(tmp_path, 1)
    metadata = distributed_checkpoints.check_metadata(folder)
    assert "w" in metadata.state_dict_metadata


@pytest.mark.parametrize("content, message", [
    (None, "no .metadata"),
    (b"\x80\x04\x95", "damaged or not a pickle"),
    (pickle.dumps({"state_dict_metadata": {}}), "holds a dict"),
    (pickle.dumps(Payload()), "builtins.exec is not part of a checkpoint's metadata"),
], ids=["missing", "truncated", "foreign", "hostile"])
def test_bad_metadata_is_refused_and_runs_nothing(tmp_path, monkeypatch, content, message):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "step-000001"
    folder.mkdir()
    if content is not None:
        (folder / ".metadata").write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        distributed_checkpoints.check_metadata(folder)
    assert not (tmp_path / MARKER).exists()


def test_values_are_loaded_with_weights_only(tmp_path, monkeypatch):
    """DCP itself unpickles a checkpoint's non-tensor values freely; ``load`` does not."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "hostile"
    dcp_save({"w": torch.ones(2), "lr": Payload()}, folder)
    (tmp_path / MARKER).unlink(missing_ok=True)

    target = {"w": torch.zeros(2), "lr": 0.0}
    with pytest.raises(CheckpointError, match="'lr'.*weights_only=True"):
        distributed_checkpoints.load(target, folder)
    assert not (tmp_path / MARKER).exists()

    with pytest.warns(UserWarning):
        dcp.load({"w": torch.zeros(2), "lr": 0.0}, checkpoint_id=folder)  # PyTorch's own loader
    assert (tmp_path / MARKER).exists(), "the test's payload no longer runs under dcp.load"


def test_plain_values_load_safely(tmp_path):
    folder = tmp_path / "plain"
    dcp_save({"w": torch.arange(4.0), "progress": {"step": 7, "betas": (0.9, 0.999)}}, folder)
    target = {"w": torch.zeros(4), "progress": {"step": 0, "betas": (0.0, 0.0)}}
    distributed_checkpoints.load(target, folder)
    assert torch.equal(target["w"], torch.arange(4.0))
    assert target["progress"] == {"step": 7, "betas": (0.9, 0.999)}


# --------------------------------------------------------------------------- one file

def test_single_file_round_trip(tmp_path):
    state = {"model": {"w": torch.randn(3, 4)}, "progress": {"epoch": 2, "step": 50}}
    folder = tmp_path / "dcp"
    dcp_save(state, folder)
    single = distributed_checkpoints.to_single_file(folder, tmp_path / "one.pt")
    assert_identical(single, state)
    assert_identical(torch.load(tmp_path / "one.pt", weights_only=True), state)

    distributed_checkpoints.from_single_file(tmp_path / "one.pt", tmp_path / "back")
    assert_identical(distributed_checkpoints.to_single_file(tmp_path / "back", tmp_path / "two.pt"), state)
    with pytest.raises(CheckpointError, match="already holds a distributed checkpoint"):
        distributed_checkpoints.from_single_file(tmp_path / "one.pt", tmp_path / "back")


def test_to_single_file_refuses_an_unfinished_folder(tmp_path):
    (tmp_path / "step-000003").mkdir()
    with pytest.raises(CheckpointError, match="no .metadata"):
        distributed_checkpoints.to_single_file(tmp_path / "step-000003", tmp_path / "one.pt")
    assert not (tmp_path / "one.pt").exists()


@pytest.mark.parametrize("content, message", [
    (Payload(), "refused \\(found builtins.exec\\)"),
    ([torch.ones(1)], "holds a list"),
], ids=["hostile", "foreign"])
def test_from_single_file_refuses_what_torch_save_to_dcp_would_run(tmp_path, monkeypatch,
                                                                    content, message):
    monkeypatch.chdir(tmp_path)
    torch.save(content, tmp_path / "file.pt")
    (tmp_path / MARKER).unlink(missing_ok=True)
    with pytest.raises(CheckpointError, match=message):
        distributed_checkpoints.from_single_file(tmp_path / "file.pt", tmp_path / "dcp")
    assert not (tmp_path / MARKER).exists()
    assert not (tmp_path / "dcp").exists()


# --------------------------------------------------------------------------- launching, options

@pytest.mark.parametrize("nproc", [0, 65, 1.0, True, "2"])
def test_process_counts_are_checked(nproc):
    with pytest.raises(ValueError, match="number of processes"):
        launching.torchrun_command("saveload_lessons.fsdp_training", nproc=nproc)


def test_a_failed_run_quotes_its_output():
    with pytest.raises(launching.LaunchError, match="(?s)exit status.*no_such_module"):
        launching.torchrun("no_such_module", nproc=1)


def test_devices_for_distributed_training(monkeypatch):
    assert fsdp_training.distributed_device(torch.device("cpu"), 3) == "cpu"
    with pytest.raises(ValueError, match="not 'mps'"):
        fsdp_training.distributed_device("mps", 1)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert fsdp_training.distributed_device("cuda", 1) == "cuda"
    with pytest.raises(ValueError, match="world_size=2 processes need 2 GPUs.*has 1"):
        fsdp_training.distributed_device("cuda", 2)


def test_steps_per_epoch_follow_the_distributed_sampler():
    for size, world in [(3200, 2), (640, 3), (65, 1), (1, 4)]:
        sampler = torch.utils.data.DistributedSampler(range(size), num_replicas=world, rank=0)
        expected = len(torch.arange(len(sampler)).split(64))
        assert fsdp_training.steps_per_epoch(size, world) == expected


def test_the_script_says_how_to_start_it(monkeypatch, capsys):
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(SystemExit, match="runs under torchrun, one process per rank"):
        fsdp_training.main(["train", "--checkpoint-dir", "x"])
    with pytest.raises(SystemExit) as exit_info:
        fsdp_training.main(["gather", "--checkpoint-dir", "x"])
    assert exit_info.value.code == 2 and "gather needs --output" in capsys.readouterr().err


# --------------------------------------------------------------------------- real runs

TRAIN = ["--train-size", 640, "--epochs", 2, "--save-every", 3, "--keep", 2, "--seed", 3]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    """A 2-process run that nothing interrupts: 10 steps, checkpoints at 3, 6, 9 and 10."""
    root = tmp_path_factory.mktemp("reference")
    result = launching.torchrun("saveload_lessons.fsdp_training", ["train", "--checkpoint-dir", root,
                                                  "--data-dir", data_dir, *TRAIN], nproc=2)
    return root, result.stdout


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory, data_dir):
    """The same run, saving asynchronously; its last rank is killed while saving step 6. What
    the folder held then, and the output of the run that resumes from it."""
    root = tmp_path_factory.mktemp("killed")
    options = ["--checkpoint-dir", root, "--data-dir", data_dir, "--async-save", *TRAIN]
    killed = launching.torchrun("saveload_lessons.fsdp_training", ["train", "--kill-while-saving", 6, *options],
                                nproc=2, check=False)
    after_kill = {"returncode": killed.returncode, "stdout": killed.stdout,
                  "latest": distributed_checkpoints.latest_checkpoint(root).name,
                  "unfinished": [p.name for p in distributed_checkpoints.unfinished_folders(root)]}
    resumed = launching.torchrun("saveload_lessons.fsdp_training", ["train", "--resume", *options], nproc=2)
    return root, after_kill, resumed.stdout


def test_the_reference_run_saved_sharded_checkpoints(reference):
    root, stdout = reference
    assert "rank 1 holds rows 256-511" in stdout
    assert [p.name for p in distributed_checkpoints.step_folders(root)] == ["step-000009", "step-000010"]
    latest = distributed_checkpoints.latest_checkpoint(root)
    assert latest.name == "step-000010"
    assert sorted(p.name for p in latest.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]


def test_a_kill_while_saving_costs_only_the_steps_since_the_last_checkpoint(reference,
                                                                           killed_and_resumed):
    root, after_kill, stdout = killed_and_resumed
    assert after_kill["returncode"] != 0
    assert "killed (SIGKILL) before the checkpoint was complete" in after_kill["stdout"]
    assert after_kill["latest"] == "step-000003" and after_kill["unfinished"] == ["step-000006"]
    assert "step-000006 is incomplete" in stdout
    assert "resumed from step-000003: epoch 1, batch 3, step 3" in stdout
    assert [p.name for p in distributed_checkpoints.step_folders(root)] == ["step-000009", "step-000010"]
    resumed = distributed_checkpoints.to_single_file(root / "step-000010", root / "resumed.pt")
    expected = distributed_checkpoints.to_single_file(reference[0] / "step-000010",
                                                      reference[0] / "reference.pt")
    assert_identical(resumed, expected)
    assert set(expected["app"]["ranks"]) == {"rank0", "rank1"} and len(expected["app"]["optim"]["state"]) == 8
    losses = [line for line in stdout.splitlines() if line.startswith("Epoch: 2/2")]
    assert losses and losses[0] in reference[1]  # the same training loss, over the whole epoch


def test_resuming_on_another_number_of_processes_is_refused(reference):
    root, _ = reference
    with pytest.raises(CheckpointError, match="saved by 2 processes.*not 3.*gather"):
        fsdp_training.checkpoint_to_resume(root, resume=True, world_size=3)
    with pytest.raises(CheckpointError, match="already holds the checkpoints of a run.*--resume"):
        fsdp_training.checkpoint_to_resume(root, resume=False, world_size=2)
    assert fsdp_training.checkpoint_to_resume(root, resume=True, world_size=2).name == "step-000010"


def test_the_checkpoint_loads_on_one_and_on_three_processes(reference):
    root, _ = reference
    latest = distributed_checkpoints.latest_checkpoint(root)
    expected = distributed_checkpoints.to_single_file(latest, root / "full.pt")["app"]

    network = fc_model.Network(**fsdp_training.ARCHITECTURE)
    wanted = {"app": {"model": network.state_dict()}}
    distributed_checkpoints.load(wanted, latest)
    assert_identical(wanted["app"]["model"], expected["model"])

    result = launching.torchrun("saveload_lessons.fsdp_training", ["gather", "--checkpoint-dir", root,
                                                  "--output", root / "gathered.pt"], nproc=3)
    assert "rank 2 holds rows 342-511" in result.stdout
    gathered = torch.load(root / "gathered.pt", weights_only=True)
    assert_identical(gathered, {"model": expected["model"], "optim": expected["optim"]})
