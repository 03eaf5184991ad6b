"""The CUDA path: files saved on a GPU, loaded elsewhere, and the notebooks on a GPU.

The tests marked ``cuda`` need a GPU and are skipped, with the reason, without one:

    .venv/bin/python -m pytest -m cuda tests/test_gpu.py

The others check on any machine what can be checked without a GPU: a file that
says its tensors live on ``cuda:0`` (as one saved on a GPU does) loads on a
CPU-only machine with every loader, and an optimizer's state goes to its
parameters' device when it is loaded (shown with the ``meta`` device).
"""

from unittest import mock

import pytest
import torch
from torch import nn, optim
from torch.utils.data import DataLoader

import fc_model
from conftest import assert_identical
from saveload_lessons import checkpoint_io
from tools import run_notebooks

requires_cuda = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="needs a CUDA GPU: torch.cuda.is_available() is False on this machine"),
]
ARCHITECTURE = {"input_size": 784, "output_size": 10, "hidden_layers": [64, 32]}


def cuda_test(function):
    for mark in requires_cuda:
        function = mark(function)
    return function


def trained(device, seed=0):
    """A small network and its Adam optimizer after one step on ``device``."""
    torch.manual_seed(seed)
    model = fc_model.Network(**ARCHITECTURE).to(device)
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    images, labels = torch.randn(16, 784, device=device), torch.randint(0, 10, (16,), device=device)
    nn.NLLLoss()(model(images), labels).backward()
    optimizer.step()
    return model, optimizer


def tensors(value):
    """Every tensor in nested dicts and lists."""
    if isinstance(value, torch.Tensor):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else []
    return [tensor for item in items for tensor in tensors(item)]


def on_cpu(state):
    return {name: tensor.cpu() for name, tensor in state.items()}


def assert_loads_on_cpu_with_every_loader(checkpoint_path, safetensors_path, model):
    """Each loader of the project, and ``torch.load`` with ``map_location``, gives CPU tensors
    equal to ``model``'s weights."""
    expected = on_cpu(model.state_dict())
    for path in (checkpoint_path, safetensors_path):
        checkpoint = checkpoint_io.load_checkpoint(path, fc_model.NETWORK, map_location="cpu")
        assert {t.device.type for t in tensors(checkpoint)} == {"cpu"}, path.name
        assert_identical(dict(checkpoint["model_state_dict"]), expected, path.name)
        network = fc_model.load_network(path)
        assert {p.device.type for p in network.parameters()} == {"cpu"}, path.name
        assert_identical(dict(network.state_dict()), expected, path.name)
    raw = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    assert {t.device.type for t in tensors(raw)} == {"cpu"}
    assert_identical(dict(raw["model_state_dict"]), expected, "torch.load")


# --------------------------------------------------------------------------- without a GPU

def test_a_file_saved_on_cuda_loads_on_a_cpu_only_machine(tmp_path):
    """torch.save records each storage's device ("cuda:0" for a GPU's): pretend it was one."""
    model, optimizer = trained("cpu")
    with mock.patch.object(torch.serialization, "location_tag", lambda storage: "cuda:0"):
        checkpoint_io.save_checkpoint(tmp_path / "gpu.pt", model, optimizer, epoch=1)
    checkpoint_io.save_safetensors(tmp_path / "gpu.safetensors", model)  # records no device
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):  # what map_location is for
            torch.load(tmp_path / "gpu.pt", weights_only=True)
    assert_loads_on_cpu_with_every_loader(tmp_path / "gpu.pt", tmp_path / "gpu.safetensors", model)


def test_optimizer_state_goes_to_the_parameters_device(tmp_path):
    """What a CPU checkpoint loaded into a model on a GPU does, with ``meta`` in the GPU's place:
    ``Optimizer.load_state_dict`` puts the state beside each parameter, except ``step``, which
    stays where it was loaded unless the optimizer is fused or capturable."""
    model, optimizer = trained("cpu")
    checkpoint_io.save_checkpoint(tmp_path / "cpu.pt", model, optimizer, epoch=1)
    checkpoint = checkpoint_io.load_checkpoint(tmp_path / "cpu.pt", fc_model.NETWORK, map_location="cpu")
    with torch.device("meta"):
        elsewhere = fc_model.Network(**ARCHITECTURE)
    elsewhere_optimizer = optim.Adam(elsewhere.parameters(), lr=1e-3)
    with pytest.warns(UserWarning, match="no-op"):  # copying into meta parameters copies nothing
        checkpoint_io.restore(checkpoint, elsewhere, elsewhere_optimizer)
    states = list(elsewhere_optimizer.state.values())
    assert len(states) == len(list(elsewhere.parameters()))
    assert {state[key].device.type for state in states for key in ("exp_avg", "exp_avg_sq")} == {"meta"}
    assert {state["step"].device.type for state in states} == {"cpu"}


# --------------------------------------------------------------------------- on a GPU

@cuda_test
def test_saved_on_cuda_loads_on_cpu_with_every_loader(tmp_path):
    model, optimizer = trained("cuda")
    checkpoint_io.save_checkpoint(tmp_path / "gpu.pt", model, optimizer, epoch=1)
    checkpoint_io.save_safetensors(tmp_path / "gpu.safetensors", model)
    torch.save(model.state_dict(), tmp_path / "state-dict.pt")
    # The files do hold CUDA tensors: without map_location they come back on the GPU.
    assert {t.device.type for t in tensors(torch.load(tmp_path / "gpu.pt", weights_only=True))
            if t.numel() > 1} >= {"cuda"}
    assert_loads_on_cpu_with_every_loader(tmp_path / "gpu.pt", tmp_path / "gpu.safetensors", model)
    bare = torch.load(tmp_path / "state-dict.pt", map_location="cpu", weights_only=True)
    assert_identical(dict(bare), on_cpu(model.state_dict()), "the bare state dict")
    network = fc_model.load_network(tmp_path / "state-dict.pt")  # sizes read off the weights
    assert_identical(dict(network.state_dict()), on_cpu(model.state_dict()), "load_network")


@cuda_test
def test_cpu_checkpoint_onto_cuda_with_optimizer_state_and_one_step(tmp_path):
    model, optimizer = trained("cpu")
    checkpoint_io.save_checkpoint(tmp_path / "cpu.pt", model, optimizer, epoch=1)
    checkpoint = checkpoint_io.load_checkpoint(tmp_path / "cpu.pt", fc_model.NETWORK, map_location="cuda")
    assert {t.device.type for t in tensors(checkpoint["model_state_dict"])} == {"cuda"}
    gpu_model, gpu_optimizer = trained("cuda", seed=1)
    checkpoint_io.restore(checkpoint, gpu_model, gpu_optimizer)
    states = list(gpu_optimizer.state.values())
    assert {state[key].device.type for state in states for key in ("exp_avg", "exp_avg_sq")} == {"cuda"}
    images, labels = torch.randn(16, 784), torch.randint(0, 10, (16,))
    for net, opt, device in ((model, optimizer, "cpu"), (gpu_model, gpu_optimizer, "cuda")):
        net.eval()  # no dropout: the same step on both devices
        opt.zero_grad()
        nn.NLLLoss()(net(images.to(device)), labels.to(device)).backward()
        opt.step()
    for name, tensor in gpu_model.state_dict().items():
        torch.testing.assert_close(tensor.cpu(), model.state_dict()[name], msg=name)
    network = fc_model.load_network(tmp_path / "cpu.pt", map_location="cuda")
    assert {p.device.type for p in network.parameters()} == {"cuda"}


class Stop(Exception):
    pass


class Stopping:
    """A loader that stops the run (raises ``Stop``) before its batch number ``after``."""

    def __init__(self, loader, after):
        self.loader, self.after = loader, after

    def __iter__(self):
        for index, batch in enumerate(self.loader):
            if index == self.after:
                raise Stop
            yield batch

    def __len__(self):
        return len(self.loader)


def resume_differences(device, train, test, folder, stop_after=None):
    """Train 2 epochs on ``device`` straight through, and again stopped (at the end of epoch 1,
    or before batch ``stop_after`` of epoch 1 with a checkpoint every 5 steps) then resumed
    with ``train(resume=True)``; return how far apart the final weights are, by name."""

    def run(stop=None, epochs=2, **options):
        torch.manual_seed(0)
        model = fc_model.Network(**ARCHITECTURE)
        optimizer = optim.Adam(model.parameters(), lr=1e-3)
        trainloader = DataLoader(train, batch_size=64, shuffle=True)
        testloader = DataLoader(test, batch_size=500)
        if options.get("resume"):
            torch.manual_seed(123)  # another generator state, which resuming must replace
        try:
            fc_model.train(model, trainloader if stop is None else Stopping(trainloader, stop),
                           testloader, nn.NLLLoss(), optimizer, epochs=epochs, print_every=20,
                           device=device, **options)
        except Stop:
            pass
        return model.state_dict()

    straight = run()
    path = folder / "checkpoint.pt"
    if stop_after is None:
        run(epochs=1, checkpoint_path=path)
    else:
        run(stop_after, checkpoint_path=path, checkpoint_every=5)
    resumed = run(checkpoint_path=path, resume=True)
    return {name: (tensor - resumed[name]).abs().max().item() for name, tensor in straight.items()
            if not torch.equal(tensor, resumed[name])}


@cuda_test
@pytest.mark.parametrize("stop_after", [None, 17], ids=["epoch-boundary", "mid-epoch"])
def test_resume_on_cuda_is_bit_identical(stop_after, fashion_slices, tmp_path):
    """``train(resume=True)`` on CUDA gives the same bits as a run never stopped: the same
    kernels on the same data in the same order, and the CUDA generator state (dropout) saved
    by ``checkpoint_io.rng_state``. If a GPU ever gives other bits, the message says how far
    off (lesson 2 asserts bit-identity on the CPU only)."""
    differences = resume_differences("cuda", *fashion_slices, tmp_path, stop_after)
    assert not differences, f"max abs differences: {differences}"


@cuda_test
@pytest.mark.parametrize("path", run_notebooks.notebook_paths(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_notebook_runs_on_cuda(path, data_dir, tmp_path):
    """Every notebook, both languages, with its quick-run parameters and ``device="cuda"``;
    lesson 5 with one process per GPU."""
    given = {"device": "cuda", "data_dir": data_dir}
    if path.stem.startswith("05-"):
        gpus = torch.cuda.device_count()
        # 2 * save_every = 20 steps must fit in the quick run's one epoch
        given.update(world_size=gpus, train_size=min(60000, max(3200, 64 * 21 * gpus)))
    parameters = run_notebooks.parameters_for([path], given, quick=True)[path]
    _, _, output = run_notebooks.run_notebook(path, tmp_path / "out", parameters)
    assert output.exists()
