"""The notebooks: bilingual parity, sync with their sources, and papermill runs.

nbval re-runs every notebook and compares outputs (see the README's test
command); the tests here run them with other parameters, from a folder
outside the repository, against the companion modules installed by pip.
"""

import ast
import os
import re
import subprocess
import sys
import zipfile

import nbformat
import papermill
import pytest
import torch
from torch import nn
from torchvision import datasets

import fc_model
from conftest import REPO, TRANSFORM, assert_identical
from saveload_lessons import checkpoint_io, distributed_checkpoints, fsdp_training, retention
from tools import build_notebooks, run_notebooks

EN = sorted(p.name for p in (REPO / "notebooks" / "en").glob("*.ipynb"))
ZH = sorted(p.name for p in (REPO / "notebooks" / "zh-CN").glob("*.ipynb"))
ALL = run_notebooks.notebook_paths()
EN_PATHS = [path for path in ALL if path.parent.name == "en"]
PROGRESS = re.compile(r"^Epoch: (\d+)/(\d+)\.\.  Training Loss", re.M)


def code_cells(nb):
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def read(path):
    return nbformat.read(path, as_version=4)


# --------------------------------------------------------------------------- static checks

def test_notebooks_and_readmes_match_their_sources():
    assert build_notebooks.check() == []


@pytest.mark.parametrize("path", ALL, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_notebook_shape(path):
    nb = read(path)
    cells = code_cells(nb)
    first = cells[0].source
    assert '"google.colab" in sys.modules' in first
    assert f"git+{build_notebooks.repository_url()}" in first
    for cell in cells:
        ast.parse(cell.source)  # pure Python: no ! or % lines
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1)), \
        "committed outputs must come from one top-to-bottom run"
    errors = [o for c in cells for o in c.outputs if o.output_type == "error"]
    assert errors == []
    # nbval does not compare images: check that every plotting cell did draw one
    for cell in cells:
        if re.search(r"helper\.(imshow|view_classify|plot_history)\(", cell.source):
            assert any("image/png" in o.get("data", {}) for o in cell.outputs), cell.source


# --------------------------------------------------------------------------- papermill runs

@pytest.fixture(scope="session")
def installed_site(tmp_path_factory):
    """The companion modules installed by pip into a folder of their own."""
    site = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-compile", "--no-build-isolation", "--target", str(site), str(REPO)],
                   check=True)
    return site


def test_installing_the_collection_adds_three_names(installed_site):
    """helper and fc_model, which the lessons are built around, and one package for the rest:
    nothing generic (devices, launching...) that could shadow or be shadowed by another package."""
    names = {path.name for path in installed_site.iterdir()
             if not path.name.endswith(".dist-info") and path.name != "bin"}  # bin: its command
    assert names == {"helper.py", "fc_model.py", "saveload_lessons"}


@pytest.fixture(scope="session")
def quick_main_job(installed_site, tmp_path_factory, data_dir):
    """The main job with --quick, run once from a folder outside the repository on the
    pip-installed modules: (the finished process, the folder of executed notebooks).

    English only: the Chinese twins have the same code and parameters (the build's --check
    makes sure of it), and nbval runs them in full."""
    output = tmp_path_factory.mktemp("main-job")
    # the installed modules first; the repository only for tools/
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(installed_site), str(REPO)])}
    environment.pop("PYTHONDONTWRITEBYTECODE", None)
    result = subprocess.run(
        [sys.executable, "-m", "tools.run_notebooks", "--quick", "--language", "en",
         "-p", "device", "cpu", "-p", "data_dir", data_dir, "--output", str(output)],
        capture_output=True, text=True, cwd=output, env=environment)
    return result, output


@pytest.fixture(scope="session")
def quick_run(quick_main_job):
    """``quick_run(path)``: (the folder it ran in, the executed notebook) from the quick main job."""
    result, output = quick_main_job
    assert result.returncode == 0, result.stdout + result.stderr

    def executed(path):
        folder = output / path.parent.name
        return folder, read(folder / path.name)

    return executed


# Each lesson's quick-run parameters, from its source
QUICK = {lesson.name: lesson.quick_run for lesson in build_notebooks.all_lessons()}


def quick_parameters(path, data_dir):
    return dict(QUICK[path.stem], device="cpu", data_dir=data_dir)


@pytest.mark.parametrize("path", EN_PATHS, ids=lambda p: p.stem)
def test_parameters_change_the_run(path, quick_run, installed_site, data_dir):
    parameters = quick_parameters(path, data_dir)
    folder, nb = quick_run(path)

    assert nb.metadata.papermill.parameters == parameters
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert f"epochs = {parameters['epochs']}" in injected[0].source
    assert 'device = "cpu"' in injected[0].source
    text = "".join(o.get("text", "") for c in code_cells(nb) for o in c.outputs)
    progress = PROGRESS.findall(text)
    assert progress, "no training progress printed"
    epochs = parameters["epochs"]
    assert max(int(epoch) for epoch, _ in progress) == epochs
    assert {int(total) for _, total in progress} <= {epochs, parameters.get("stop_after", epochs)}
    # the notebook imported the pip-installed modules, not the repository's files
    assert any(installed_site.joinpath("__pycache__").glob("fc_model.*.pyc"))


def test_lesson_1_saves_the_trained_network(quick_run, data_dir):
    folder, nb = quick_run(REPO / "notebooks" / "en" / "01-saving-and-loading-models.ipynb")

    checkpoint = torch.load(folder / "checkpoint.pth", map_location="cpu", weights_only=True)
    architecture = {k: checkpoint[k] for k in ("input_size", "output_size", "hidden_layers", "drop_p")}
    assert architecture == {"input_size": 784, "output_size": 10,
                            "hidden_layers": [512, 256, 128], "drop_p": 0.5}
    model = fc_model.Network(**architecture)
    model.load_state_dict(checkpoint["state_dict"])
    testset = datasets.FashionMNIST(data_dir, train=False, transform=TRANSFORM)
    loader = torch.utils.data.DataLoader(testset, batch_size=1000)
    _, accuracy = fc_model.validation(model, loader, nn.NLLLoss())
    assert accuracy > 0.75  # trained: an untrained network scores about 0.1
    assert run_notebooks.last_test_accuracy(nb) == pytest.approx(accuracy, abs=5e-5)


BAD_PARAMETERS = [
    ({"device": "tpu"}, {}, "unknown device 'tpu'"),
    ({"epochs": 0}, {}, "epochs must be a positive integer, got 0"),
    ({"data_dir": "{tmp}/empty"}, {"FASHION_MNIST_SOURCE": "{tmp}/no-copy"},
     "Fashion-MNIST source folder"),
]
# Every wrong value once and every lesson at least once: the lesson rules make each lesson
# call the same checks right after its parameters cell (test_every_lesson_follows_the_rules),
# so one kernel per case shows the checks work without running every pair.
BAD_CASES = [(EN_PATHS[i % len(EN_PATHS)], *BAD_PARAMETERS[i % len(BAD_PARAMETERS)])
             for i in range(max(len(EN_PATHS), len(BAD_PARAMETERS)))]


@pytest.mark.parametrize("path, parameters, environment, message", BAD_CASES,
                         ids=[f"{case[0].stem[:2]}-{next(iter(case[1]))}" for case in BAD_CASES])
def test_bad_parameters_stop_early_with_a_clear_error(path, parameters, environment, message,
                                                      tmp_path, monkeypatch):
    parameters = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v
                  for k, v in parameters.items()}
    for name, value in environment.items():
        monkeypatch.setenv(name, value.format(tmp=tmp_path))

    with pytest.raises(papermill.PapermillExecutionError) as info:
        run_notebooks.run_notebook(path, tmp_path / "out", parameters)

    assert message in info.value.evalue
    # it stopped in the checks right after the parameters, before any training
    cells = code_cells(read(tmp_path / "out" / path.name))
    injected = next(i for i, c in enumerate(cells) if "injected-parameters" in c.metadata.get("tags", []))
    failed = [i for i, c in enumerate(cells) if any(o.output_type == "error" for o in c.outputs)]
    assert failed == [injected + 1]


def test_main_job_reports_one_line_per_notebook(quick_main_job):
    result, _ = quick_main_job
    lines = result.stdout.splitlines()
    assert len(lines) == len(EN_PATHS) + 2, lines
    for path, line in zip(EN_PATHS, lines[1:]):
        assert re.fullmatch(rf"{path.stem}\s+en\s+\d+\.\d\s+0\.\d{{4}}", line), line
    assert lines[-1].startswith(f"{len(EN_PATHS)} notebooks ran, 0 failed")
    assert result.stderr == "", "the kernel's own messages must stay out of the report"


def test_the_kernels_own_errors_stay_out_of_the_report(tmp_path):
    """jupyter_client interrupts every kernel before shutting it down; a kernel that is handling
    a message then logs "KeyboardInterrupt caught in kernel." at ERROR level (seen on Python 3.13).
    The main job's kernels log nothing below CRITICAL."""
    logs = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        'get_ipython().kernel.log.error("KeyboardInterrupt caught in kernel.")\nprint("ran")')])
    nbformat.write(logs, tmp_path / "logs.ipynb")
    result = subprocess.run(
        [sys.executable, "-c", "import pathlib, sys; sys.path.insert(0, sys.argv[1]); "
         "from tools import run_notebooks; "
         "print(run_notebooks.run_notebook(pathlib.Path(sys.argv[2]), sys.argv[3])[2])",
         str(REPO), str(tmp_path / "logs.ipynb"), str(tmp_path / "out")],
        capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    executed = read(tmp_path / "out" / "logs.ipynb")
    assert executed.cells[0].outputs[0].text == "ran\n"
    assert result.stderr == ""


# --------------------------------------------------------------------------- the main job's checks

LESSON_2 = REPO / "notebooks" / "en" / "02-checkpoints-and-resuming-training.ipynb"


@pytest.mark.parametrize("name", ["2", "02", LESSON_2.stem, LESSON_2.name, str(LESSON_2)])
def test_a_notebook_is_named_by_number_file_name_or_path(name):
    assert run_notebooks.notebook_paths(["en"], [name]) == [LESSON_2]


def test_a_path_selects_its_language_only():
    zh = REPO / "notebooks" / "zh-CN" / LESSON_2.name
    assert run_notebooks.notebook_paths(names=[str(zh)]) == [zh]
    assert run_notebooks.notebook_paths(names=["2"]) == [LESSON_2, zh]


def test_an_unknown_name_lists_the_notebooks(capsys):
    missing = str(len(EN_PATHS) + 1)  # the number of the next lesson, not written yet
    with pytest.raises(SystemExit) as info:
        run_notebooks.main([missing])
    assert info.value.code == 2
    error = capsys.readouterr().err
    assert f"no notebook matches '{missing}'" in error
    assert all(path.stem in error for path in EN_PATHS)


def test_a_misspelt_parameter_is_refused_before_anything_runs(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_notebooks.main(["-p", "epoch", "1", "--output", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert "no notebook has a parameter 'epoch'. Did you mean 'epochs'?" in error
    assert not (tmp_path / "out").exists()


def test_each_notebook_gets_the_parameters_it_has(data_dir):
    given = {"epochs": 4, "train_size": 3200}
    parameters = run_notebooks.parameters_for(EN_PATHS, given)
    assert parameters[LESSON_2] == given
    assert parameters[EN_PATHS[0]] == {"epochs": 4}
    quick = run_notebooks.parameters_for(EN_PATHS, {"epochs": 5}, quick=True)
    assert quick[LESSON_2] == {**QUICK[LESSON_2.stem], "epochs": 5}


def test_missing_data_stops_the_main_job_at_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FASHION_MNIST_SOURCE", str(tmp_path / "no-copy"))
    code = run_notebooks.main(["-p", "data_dir", str(tmp_path / "empty"),
                               "--output", str(tmp_path / "out")])
    assert code == 2
    out, error = capsys.readouterr()
    assert out == ""
    assert error.count("\n") == 1 and "no notebook was run" in error
    assert "Fashion-MNIST source folder" in error
    assert not (tmp_path / "out").exists()


def test_lesson_2_leaves_resumable_checkpoints(quick_run, data_dir):
    path = REPO / "notebooks" / "en" / "02-checkpoints-and-resuming-training.ipynb"
    parameters = quick_parameters(path, data_dir)
    folder, nb = quick_run(path)

    text = "".join(o.get("text", "") for c in code_cells(nb) for o in c.outputs)
    assert "bit-identical weights: True" in text and "same history: True" in text
    latest = checkpoint_io.load_checkpoint(folder / "checkpoints" / "latest.pt", fc_model.NETWORK)
    steps_per_epoch = -(-parameters["train_size"] // 64)
    assert (latest["epoch"], latest["step"]) == (3, 3 * steps_per_epoch)
    best = checkpoint_io.load_checkpoint(folder / "checkpoints" / "best.pt", fc_model.NETWORK)
    assert best["best_accuracy"] == max(r["test_accuracy"] for r in latest["history"])


@pytest.mark.parametrize("parameters, message", [
    ({"stop_after": 2, "epochs": 2}, "stop_after (2) must be less than epochs (2)"),
    ({"train_size": 70000}, "train_size can be at most 60000"),
    ({"epochs": 1}, "this lesson needs at least 2 epochs"),
])
def test_lesson_2_bad_parameters(parameters, message, tmp_path):
    path = REPO / "notebooks" / "en" / "02-checkpoints-and-resuming-training.ipynb"
    with pytest.raises(papermill.PapermillExecutionError) as info:
        run_notebooks.run_notebook(path, tmp_path, parameters)
    assert message in info.value.evalue


def test_lesson_3_files_are_real_and_the_payload_never_ran(quick_run, data_dir):
    folder, nb = quick_run(REPO / "notebooks" / "en" / "03-whole-models-safe-loading-and-formats.ipynb")

    saved = folder / "saved_models"
    assert not (saved / "payload_ran.txt").exists()
    text = "".join(o.get("text", "") for c in code_cells(nb) for o in c.outputs)
    assert "marker file exists: False" in text
    assert "fc_model imported by the child process: False" in text
    network = fc_model.load_network(saved / "model.safetensors")
    testset = datasets.FashionMNIST(data_dir, train=False, transform=TRANSFORM)
    _, accuracy = fc_model.validation(network, torch.utils.data.DataLoader(testset, batch_size=1000),
                                      nn.NLLLoss())
    assert accuracy > 0.75  # the trained network, not an untrained one
    with pytest.raises(checkpoint_io.CheckpointError, match="found builtins.exec"):
        checkpoint_io.load_checkpoint(saved / "evil_checkpoint.pth", fc_model.NETWORK)


def test_lesson_4_files_are_what_the_lesson_says(quick_run):
    folder, nb = quick_run(REPO / "notebooks" / "en" / "04-checkpoints-from-elsewhere.ipynb")
    files = folder / "elsewhere"
    float32 = torch.load(files / "float32.pth", weights_only=True)

    # the "GPU" file records cuda:0 for its tensors, as a file written on a GPU does
    with zipfile.ZipFile(files / "saved_on_gpu.pth") as archive:
        pickled = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    assert b"cuda:0" in pickled and b"cpu" not in pickled
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA device"):
            torch.load(files / "saved_on_gpu.pth", weights_only=True)
    on_cpu = torch.load(files / "saved_on_gpu.pth", map_location="cpu", weights_only=True)
    assert all(torch.equal(on_cpu["model"][name], float32[name]) for name in float32)

    for half in ("bfloat16", "float16"):
        assert (files / f"{half}.pth").stat().st_size < 0.55 * (files / "float32.pth").stat().st_size

    # the legacy file needs an allowlist; the converted one does not, and holds the same weights
    legacy_globals = torch.serialization.get_unsafe_globals_in_checkpoint(files / "legacy.pth")
    assert "argparse.Namespace" in legacy_globals
    assert torch.serialization.get_unsafe_globals_in_checkpoint(files / "converted.pth") == []
    converted = torch.load(files / "converted.pth", weights_only=True)
    assert converted["args"]["hidden"] == [512, 256, 128]
    assert all(torch.equal(converted["state_dict"][name], float32[name]) for name in float32)

    text = "".join(o.get("text", "") for c in code_cells(nb) for o in c.outputs)
    assert re.search(r"after 20 steps: warm start 0\.\d+, from scratch 0\.\d+", text)
    assert text.count("same predictions: True") == 4



def test_lesson_5_left_the_checkpoints_it_describes(quick_run, data_dir):
    path = REPO / "notebooks" / "en" / "05-distributed-checkpoints.ipynb"
    folder, nb = quick_run(path)
    files = folder / "distributed"
    run = {**run_notebooks.notebook_parameters(path), **quick_parameters(path, data_dir)}
    total = run["epochs"] * fsdp_training.steps_per_epoch(run["train_size"], run["world_size"])
    saved = [*range(run["save_every"], total, run["save_every"]), total]  # and always the last step
    kept = [distributed_checkpoints.step_folder(files, step).name for step in saved[-run["keep"]:]]
    final = kept[-1]
    for run_folder in ("uninterrupted", "killed-and-resumed"):
        assert distributed_checkpoints.latest_checkpoint(files / run_folder).name == final
        assert [p.name for p in distributed_checkpoints.step_folders(files / run_folder)] == kept
    uninterrupted = distributed_checkpoints.to_single_file(files / "uninterrupted" / final,
                                                           folder / "a.pt")
    resumed = distributed_checkpoints.to_single_file(files / "killed-and-resumed" / final,
                                                     folder / "b.pt")
    assert_identical(resumed, uninterrupted)
    network = fc_model.load_network(files / "for-inference.pth")
    assert all(torch.equal(network.state_dict()[name], value)
               for name, value in uninterrupted["app"]["model"].items())
    with pytest.raises(checkpoint_io.CheckpointError, match="builtins.print is not part"):
        distributed_checkpoints.check_metadata(files / "hostile")
    text = "".join(o.get("text", "") for c in code_cells(nb) for o in c.outputs)
    assert "rank 2 holds rows 342-511" in text and "exit status: 1" in text


def test_lesson_5_needs_a_save_before_the_kill(tmp_path):
    path = REPO / "notebooks" / "en" / "05-distributed-checkpoints.ipynb"
    with pytest.raises(papermill.PapermillExecutionError) as info:
        run_notebooks.run_notebook(path, tmp_path, {"train_size": 640})
    assert "are 10 steps; this lesson needs more than 2 * save_every = 20" in info.value.evalue


def test_lesson_7_left_the_checkpoints_it_describes(quick_run, data_dir):
    path = REPO / "notebooks" / "en" / "07-resuming-real-training-jobs.ipynb"
    folder, nb = quick_run(path)
    run = {**run_notebooks.notebook_parameters(path), **quick_parameters(path, data_dir)}
    total = run["epochs"] * -(-run["train_size"] // 64)
    keeper = retention.CheckpointKeeper(folder / run["checkpoint_dir"] / "preempted", run["keep_best"])
    assert keeper.latest() == retention.step_file(keeper.folder, total)
    kept = {keeper.latest(), *(path for path, _ in keeper.best())}
    assert sorted(p.name for p in keeper.folder.glob("step-*.pt")) == sorted(p.name for p in kept)
    assert len(keeper.best()) == run["keep_best"]
    checkpoint = checkpoint_io.load_checkpoint(keeper.latest(), fc_model.NETWORK)
    assert checkpoint["step"] == total and checkpoint["ema_state_dict"]["n_averaged"].item() == total
    text = "".join(o.get("text", "") for c in code_cells(nb) for o in c.outputs)
    assert "exit status: 75" in text and "identical after a real SIGTERM: True" in text
    assert "StatefulAugmentedImages resumed run has the weights of the uninterrupted one: True" in text


def test_lesson_7_needs_a_stop_in_the_middle_of_an_epoch(tmp_path):
    path = REPO / "notebooks" / "en" / "07-resuming-real-training-jobs.ipynb"
    with pytest.raises(papermill.PapermillExecutionError) as info:
        run_notebooks.run_notebook(path, tmp_path, {"train_size": 640, "stop_at": 10})
    assert "stop_at (10) must fall in the middle of an epoch" in info.value.evalue
