"""Devices: choosing one, and model, optimizer state and loaded tensors ending up on one.

CI has no GPU, so placement is checked with PyTorch's ``meta`` device: a device
other than the CPU that every machine has. Code that leaves a model on the CPU
while the file's tensors go elsewhere fails these tests as it would fail on a
GPU runtime.
"""

import nbformat
import pytest
import torch
from torch import nn, optim

import fc_model
from conftest import REPO, load_checkpoint
from saveload_lessons import checkpoint_io, devices

META = torch.device("meta")


# --------------------------------------------------------------------------- choosing a device

def test_auto_picks_the_first_available_device():
    assert devices.get_device("auto") == torch.device(devices.available_devices()[0])
    assert devices.available_devices()[-1] == "cpu"


@pytest.mark.parametrize("name", ["cpu", "CPU", " cpu ", torch.device("cpu")])
def test_cpu_is_always_there(name):
    assert devices.get_device(name) == torch.device("cpu")


@pytest.mark.parametrize("name", ["tpu", "gpu", "", "cuda:x", "meta"])
def test_unknown_device_names_list_what_is_available(name):
    with pytest.raises(ValueError, match="unknown device") as info:
        devices.get_device(name)
    assert "cpu" in str(info.value)


def test_non_string_device_is_refused():
    with pytest.raises(ValueError, match="must be a string"):
        devices.get_device(0)


@pytest.mark.parametrize("kind", ["cuda", "mps"])
def test_missing_accelerator_is_a_clear_error(kind):
    if kind in devices.available_devices():
        assert devices.get_device(kind).type == kind
    else:
        with pytest.raises(ValueError, match="not available on this machine"):
            devices.get_device(kind)


def test_cuda_index_beyond_the_machine_is_refused():
    with pytest.raises(ValueError, match="does not exist|not available"):
        devices.get_device("cuda:99")


def test_meta_is_a_place_for_files_not_for_training():
    assert devices.check_device("meta") == META
    with pytest.raises(ValueError, match="unknown device 'meta'"):
        devices.check_device("meta", allow_meta=False)


# --------------------------------------------------------------------------- moving a model

@pytest.fixture
def parameters_moved_in_place():
    """Make ``model.to("meta")`` keep its Parameter objects, as ``model.to("cuda")`` does.

    Moving to CUDA changes a parameter's data in place, so an optimizer built on
    it still holds the same object; moving to meta would otherwise make new ones.
    """
    before = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)
    yield
    torch.__future__.set_swap_module_params_on_conversion(before)


def stepped(optimizer_class=optim.Adam, **options):
    """A small network and its optimizer after one step on the CPU, so the optimizer has state."""
    torch.manual_seed(0)
    model = fc_model.Network(784, 10, [32, 16])
    optimizer = optimizer_class(model.parameters(), lr=0.01, **options)
    nn.NLLLoss()(model(torch.randn(8, 784)), torch.randint(0, 10, (8,))).backward()
    optimizer.step()
    return model, optimizer


def state_devices(optimizer):
    """The devices of the optimizer's per-parameter state, Adam's step counter excepted
    (PyTorch keeps it on the CPU on purpose)."""
    return {value.device for state in optimizer.state.values()
            for name, value in state.items() if torch.is_tensor(value) and name != "step"}


def assert_all_on(model, device):
    places = {tensor.device for tensor in [*model.parameters(), *model.buffers()]}
    assert places == {device}, f"model tensors on {places}, expected {device}"


@pytest.mark.parametrize("optimizer_class, options", [(optim.Adam, {}),
                                                      (optim.SGD, {"momentum": 0.9})])
def test_move_to_takes_the_optimizer_state_along(parameters_moved_in_place, optimizer_class,
                                                 options):
    model, optimizer = stepped(optimizer_class, **options)
    assert state_devices(optimizer) == {torch.device("cpu")}

    devices.move_to("meta", model, optimizer)

    assert_all_on(model, META)
    assert state_devices(optimizer) == {META}
    assert all(p is q for p, q in zip(optimizer.param_groups[0]["params"], model.parameters()))


@pytest.mark.filterwarnings("ignore:.*copying from a non-meta parameter")
def test_a_cpu_checkpoint_restored_into_a_model_elsewhere_puts_the_optimizer_state_there(
        parameters_moved_in_place, tmp_path):
    model, optimizer = stepped()
    path = tmp_path / "cpu.pt"
    checkpoint_io.save_checkpoint(path, model, optimizer)
    checkpoint = checkpoint_io.load_checkpoint(path, fc_model.NETWORK)  # tensors on the CPU
    target = fc_model.Network(**checkpoint["architecture"]).to("meta")
    target_optimizer = optim.Adam(target.parameters(), lr=0.01)

    checkpoint_io.restore(checkpoint, target, target_optimizer, path=path)

    assert_all_on(target, META)
    assert state_devices(target_optimizer) == {META}


# --------------------------------------------------------------------------- loading onto a device

@pytest.fixture
def files(tmp_path):
    """Every kind of file the loaders accept, from one small trained network."""
    model, optimizer = stepped()
    paths = {"general": tmp_path / "general.pt", "classic": tmp_path / "classic.pth",
             "state_dict": tmp_path / "state_dict.pth", "safetensors": tmp_path / "model.safetensors"}
    checkpoint_io.save_checkpoint(paths["general"], model, optimizer)
    torch.save({**{k: v for k, v in model.architecture.items()}, "state_dict": model.state_dict()},
               paths["classic"])
    torch.save(model.state_dict(), paths["state_dict"])
    checkpoint_io.save_safetensors(paths["safetensors"], model)
    return paths


@pytest.mark.parametrize("kind", ["general", "classic", "state_dict", "safetensors"])
def test_load_network_puts_the_model_where_map_location_says(files, kind):
    network = fc_model.load_network(files[kind], map_location="meta")
    assert_all_on(network, META)
    assert not network.training


def test_load_checkpoint_puts_the_tensors_where_map_location_says(files):
    checkpoint = checkpoint_io.load_checkpoint(files["general"], fc_model.NETWORK, map_location="meta")
    assert {t.device for t in checkpoint["model_state_dict"].values()} == {META}


@pytest.mark.parametrize("loader", [load_checkpoint, fc_model.load_network])
def test_a_device_this_machine_lacks_is_named_not_blamed_on_the_file(files, loader):
    missing = next((kind for kind in ("cuda", "mps") if kind not in devices.available_devices()),
                   None)
    if missing is None:
        pytest.skip("this machine has both CUDA and MPS")
    with pytest.raises(ValueError, match=f"device '{missing}' is not available on this machine"):
        loader(files["general"], map_location=missing)
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        loader(files["general"], map_location="tpu")


def test_train_refuses_a_device_it_cannot_compute_on(files):
    model, optimizer = stepped()
    with pytest.raises(ValueError, match="unknown device 'meta'"):
        fc_model.train(model, [], [], nn.NLLLoss(), optimizer, device="meta")


# --------------------------------------------------------------------------- the lessons' own code

def lesson_function(notebook, name):
    """Define the function ``name`` as a lesson notebook defines it, and return it."""
    nb = nbformat.read(REPO / "notebooks" / "en" / notebook, as_version=4)
    cells = [c.source for c in nb.cells if c.cell_type == "code" and f"def {name}(" in c.source]
    assert len(cells) == 1, f"{notebook} should define {name} in one cell"
    namespace = {"torch": torch, "fc_model": fc_model}
    exec(cells[0], namespace)
    return namespace[name]


def test_lesson_1_load_checkpoint_puts_the_model_on_the_device(tmp_path):
    load_checkpoint = lesson_function("01-saving-and-loading-models.ipynb", "load_checkpoint")
    model, _ = stepped()
    path = tmp_path / "checkpoint.pth"
    torch.save({**model.architecture, "state_dict": model.state_dict()}, path)

    loaded = load_checkpoint(path, "meta")

    assert_all_on(loaded, META)
    assert not loaded.training
    on_cpu = load_checkpoint(path, "cpu")
    assert all(torch.equal(a, b) for a, b in zip(on_cpu.state_dict().values(),
                                                 model.state_dict().values()))
