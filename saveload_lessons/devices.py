"""Devices: which ones this machine has, and putting a model and its optimizer on one of them.

Three facts decide where a computation runs, and they are easy to mix up:

- ``torch.load(..., map_location=...)`` decides where the *loaded tensors* go;
- ``model.load_state_dict(...)`` copies those tensors into the model's
  parameters, *wherever the parameters already live* (the default,
  ``assign=False``); with ``assign=True`` the loaded tensors *become* the
  parameters, so ``map_location`` decides where the model ends up, and an
  optimizer must be built after the load;
- the model itself goes where ``model.to(device)`` puts it, and an optimizer's
  state (Adam's averages, SGD's momentum) follows its parameters only when it
  is loaded or moved (``move_to``).

Model, optimizer state and inputs must all end up on one device. The errors
of ``get_device``, which the lessons call in their first cells, come in the
notebook's language (``messages``).
"""

import torch

from saveload_lessons.messages import say

# The device types the lessons can compute on. ``meta`` (tensors with a shape
# but no data) is also accepted where files are loaded, to check placement
# without a GPU or to look at a file without allocating its tensors.
COMPUTE_DEVICE_TYPES = ("cpu", "cuda", "mps")


def available_devices():
    """Names of the device types this machine can compute on, best first, for example ['cuda', 'cpu']."""
    names = []
    if torch.cuda.is_available():
        names.append("cuda")
    if torch.backends.mps.is_available():
        names.append("mps")
    names.append("cpu")
    return names


def check_device(device, allow_meta=True):
    """Return ``torch.device(device)`` after checking that this machine has it.

    ``device`` is a name such as ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or
    ``"mps"``, or a ``torch.device``; ``"meta"`` is accepted unless
    ``allow_meta`` is false. An unknown name, or a device this machine lacks,
    raises ``ValueError`` naming the devices that are available.
    """
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise ValueError(say(f"a device is a name such as 'cpu' or 'cuda', got {device!r}",
                             f"设备应当是 'cpu' 或 'cuda' 这样的名称，实际为 {device!r}"))
    known = (*COMPUTE_DEVICE_TYPES, "meta") if allow_meta else COMPUTE_DEVICE_TYPES
    available = available_devices()
    try:
        checked = torch.device(device.strip().lower())
    except RuntimeError:
        checked = None
    if checked is None or checked.type not in known:
        raise ValueError(say(
            f"unknown device {device!r}: use one of {available} "
            "(the ones available on this machine)",
            f"未知的设备 {device!r}：请使用 {available} 中的一个（本机可用的设备）"))
    if checked.type == "meta":
        return checked
    if checked.type not in available:
        raise ValueError(say(
            f"device {device!r} is not available on this machine; available: {available}. "
            "A file saved on a GPU loads on any machine with map_location='cpu'.",
            f"本机没有设备 {device!r}；可用的设备：{available}。"
            "在 GPU 上保存的文件，用 map_location='cpu' 就能在任何机器上加载。"))
    if checked.type == "cuda" and checked.index is not None \
            and checked.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ValueError(say(
            f"device {device!r} does not exist: this machine has {count} CUDA device(s), "
            f"cuda:0 to cuda:{count - 1}",
            f"设备 {device!r} 不存在：本机有 {count} 个 CUDA 设备，从 cuda:0 到 cuda:{count - 1}"))
    return checked


def get_device(name="auto"):
    """The device to compute on: ``"auto"`` picks CUDA, then Apple MPS, then the CPU.

    Any other name is checked by ``check_device`` (``"cpu"``, ``"cuda"``,
    ``"cuda:1"``, ``"mps"``); an unknown or missing device raises
    ``ValueError`` naming what is available.
    """
    if isinstance(name, str) and name.strip().lower() == "auto":
        return torch.device(available_devices()[0])
    if not isinstance(name, (str, torch.device)):
        raise ValueError(say(f"device must be a string such as 'auto' or 'cpu', got {name!r}",
                             f"device 必须是 'auto' 或 'cpu' 这样的字符串，实际为 {name!r}"))
    return check_device(name, allow_meta=False)


def move_to(device, model, optimizer=None):
    """Put ``model`` and the state of its ``optimizer`` on ``device``; return the model.

    ``model.to(device)`` moves the parameters in place, so an optimizer built
    on them keeps working, but the state the optimizer has gathered so far
    stays where it was, and the next ``optimizer.step()`` would mix devices.
    Loading the optimizer's own state dict back lets PyTorch put every state
    tensor beside its parameter, exactly as when loading from a file.
    """
    model.to(device)
    if optimizer is not None and optimizer.state:
        optimizer.load_state_dict(optimizer.state_dict())
    return model


def model_device(model):
    """The device holding the model's parameters."""
    return next(model.parameters()).device
