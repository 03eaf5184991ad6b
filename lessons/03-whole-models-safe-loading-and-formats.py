# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: lang,tags
#     notebook_metadata_filter: lesson
#     text_representation:
#       extension: .py
#       format_name: percent
#   lesson:
#     title:
#       en: 3. Whole models, safe loading and file formats
#       zh-CN: 3. 完整模型、安全加载与文件格式
#     summary:
#       en: what `torch.save(model)` stores and why it breaks, `safe_globals`, a planted payload that
#         `weights_only=True` refuses, safetensors with the architecture in its metadata, size and load
#         time, and `torch.export` for deployment.
#       zh-CN: '`torch.save(model)` 保存了什么、为什么会失效、`safe_globals`、被 `weights_only=True` 拒绝的恶意载荷、把架构写入元数据的
#         safetensors、文件大小与加载时间，以及用于部署的 `torch.export`。'
#     teaching_minutes: 75
#     quick_run:
#       epochs: 2
# ---

# %% [markdown] lang="en"
# # Whole Models, Safe Loading and File Formats
#
# Lessons 1 and 2 saved `state_dict`s: tensors and plain values. People also save, share and download other things. In this lesson you will
#
# 1. save a *whole model* with `torch.save(model, path)`, see what the file really contains, and why `torch.load` refuses it by default;
# 2. load it anyway, safely, by allowing exactly the classes it needs;
# 3. see why this matters: a checkpoint file can run code when it is unpickled, and `weights_only=True` stops a planted payload;
# 4. store the weights as **safetensors**, with the architecture in the file's metadata, and compare size and load time with `torch.save`;
# 5. export the trained network with `torch.export` to a `.pt2` file that PyTorch runs without the `fc_model` source code.

# %% [markdown] lang="zh-CN"
# # 完整模型、安全加载与文件格式
#
# 第 1、2 课保存的都是 `state_dict`：张量和普通的值。但人们保存、分享和下载的还不止这些。在这节课里，你将：
#
# 1. 用 `torch.save(model, path)` 保存*完整模型*，看看文件里究竟存了什么，以及 `torch.load` 为什么默认拒绝加载它；
# 2. 只放行它需要的那几个类，安全地把它加载进来；
# 3. 理解这为什么重要：检查点文件在反序列化时可以执行代码，而 `weights_only=True` 能挡住植入的恶意载荷；
# 4. 把权重保存为 **safetensors** 格式，并把架构写入文件的元数据，再与 `torch.save` 比较文件大小和加载时间；
# 5. 用 `torch.export` 把训练好的网络导出为 `.pt2` 文件，PyTorch 不需要 `fc_model` 的源代码也能运行它。

# %% [markdown] lang="en"
# ## Imports and parameters

# %% [markdown] lang="zh-CN"
# ## 导入模块和参数

# %%
import json
import pickle
import subprocess
import sys
import time
import warnings
from pathlib import Path
from unittest import mock

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn, optim

import fc_model
import helper
from saveload_lessons import checkpoint_io, devices, messages

# %% tags=["parameters"]
epochs = 1                             # passes over the training images
                                       # zh-CN: 遍历训练图像的轮数
device = "auto"                        # "auto", "cpu", "cuda" or "mps"
                                       # zh-CN: "auto"、"cpu"、"cuda" 或 "mps"
data_dir = "~/.pytorch/F_MNIST_data/"  # where torchvision keeps Fashion-MNIST
                                       # zh-CN: torchvision 存放 Fashion-MNIST 的目录
model_dir = "saved_models"             # where this notebook writes its files
                                       # zh-CN: 本 notebook 写入文件的目录
seed = 7                               # fixes the initial weights, the data order and dropout
                                       # zh-CN: 固定初始权重、数据顺序和 dropout

# %% tags=["nbval-ignore-output"]
# The companion modules speak the notebook's language
# zh-CN: 配套模块使用本 notebook 的语言
messages.set_language("en")
# zh-CN: messages.set_language("zh-CN")
fc_model.check_positive_int(epochs=epochs)
device = devices.get_device(device)
helper.prepare_fashion_mnist(data_dir)
model_dir = Path(model_dir)
model_dir.mkdir(parents=True, exist_ok=True)
torch.manual_seed(seed)
print(f"Training for {epochs} epoch(s) on {device}")
# zh-CN: print(f"训练 {epochs} 轮，设备：{device}")

# %% [markdown] lang="en"
# ## A trained network
#
# The lesson-1 network again, trained briefly: what matters here is how it is stored.

# %% [markdown] lang="zh-CN"
# ## 训练好的网络
#
# 还是第 1 课的网络，简单训练一下：这里关心的是如何保存它。

# %% tags=["nbval-ignore-output"]
trainloader, testloader = helper.fashion_mnist_loaders(data_dir)
criterion = nn.NLLLoss()

model = fc_model.Network(784, 10, [512, 256, 128])
optimizer = optim.Adam(model.parameters(), lr=0.001)
history = fc_model.train(model, trainloader, testloader, criterion, optimizer,
                         epochs=epochs, print_every=200, device=device)
model.eval()
test_images, test_labels = next(iter(testloader))
test_images = test_images.to(device)

# %% [markdown] lang="en"
# ## Saving the whole model
#
# `torch.save(model, path)` pickles the model object itself, so loading it later needs no code to rebuild the network. It is tempting, but the file does not contain the network's code: pickle stores a *reference* to each class, like `fc_model.Network`, plus the object's attributes. `torch.serialization.get_unsafe_globals_in_checkpoint` lists the classes and functions a file refers to beyond tensors and plain containers:

# %% [markdown] lang="zh-CN"
# ## 保存完整模型
#
# `torch.save(model, path)` 会用 pickle 序列化模型对象本身，之后加载时就不需要编写重建网络的代码了。这很诱人，但文件里并没有网络的代码：pickle 只保存了每个类的*引用*（比如 `fc_model.Network`）以及对象的属性。`torch.serialization.get_unsafe_globals_in_checkpoint` 可以列出一个文件在张量和普通容器之外引用的类和函数：

# %%
whole_path = model_dir / 'whole_model.pth'
torch.save(model, whole_path)
print(sorted(torch.serialization.get_unsafe_globals_in_checkpoint(whole_path)))


# %% [markdown] lang="en"
# When the file is loaded, pickle imports `fc_model` and looks up `Network` by name. So a whole-model file breaks as soon as the code moves or changes: rename the module, move the class, or change its attributes, and old files no longer load (or load into something subtly different). Here is the same failure with a class defined in this notebook and then removed, as happens when you load the file in another program. We made this file ourselves a moment ago, so `weights_only=False` is acceptable *for this demonstration only*:

# %% [markdown] lang="zh-CN"
# 加载文件时，pickle 会导入 `fc_model`，再按名字查找 `Network`。因此，只要代码被移动或修改，完整模型文件就会失效：重命名模块、移动类的位置或者修改它的属性，旧文件就加载不了（或者加载出一个似是而非的对象）。下面用一个在本 notebook 中定义、随后又被删除的类来重现这种失败，就像在另一个程序中加载这个文件时那样。这个文件是我们刚刚自己生成的，所以*仅在这个演示中*可以使用 `weights_only=False`：

# %%
class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 2)

tiny_path = model_dir / 'tiny_model.pth'
torch.save(TinyNet(), tiny_path)
del TinyNet                            # the code is gone, as in another program
                                       # zh-CN: 代码没了，就像在另一个程序里
try:
    torch.load(tiny_path, weights_only=False)   # only because we made this file ourselves
                                                # zh-CN: 仅因为这个文件是我们自己生成的
except AttributeError as error:
    print("the class is gone, so the file no longer loads:")
    # zh-CN: print("类已经不存在，这个文件就加载不了：")
    print(type(error).__name__ + ":", error)

# %% [markdown] lang="en"
# Since PyTorch 2.6, `torch.load` uses `weights_only=True` by default; we write it out all the same, every time (a section below shows why). It rebuilds tensors, numbers, strings and containers, and refuses every other class unless you allow it. Our whole-model file is refused:

# %% [markdown] lang="zh-CN"
# pickle 在 `__main__` 中找不到名为 `TinyNet` 的类，于是抛出 `AttributeError`，加载失败。
#
# 从 PyTorch 2.6 起，`torch.load` 默认使用 `weights_only=True`；尽管如此，我们每次都把它写出来（下面有一节说明原因）。它只重建张量、数字、字符串和容器，除非你明确放行，否则拒绝其他任何类。我们的完整模型文件因此被拒绝：

# %%
try:
    torch.load(whole_path, weights_only=True)
except pickle.UnpicklingError as error:
    print("torch.load refused the whole-model file:")
    # zh-CN: print("torch.load 拒绝加载这个完整模型文件：")
    print(next(line.strip() for line in str(error).splitlines() if 'Unsupported global' in line))

# %% [markdown] lang="en"
# ## Loading it anyway, safely
#
# The safe way is to allow exactly the classes the file needs, no more, with the `torch.serialization.safe_globals` context manager. We take the list from `get_unsafe_globals_in_checkpoint`, check that every entry is a class we know, and pass those classes (the objects, not their names). Anything else in the file is still refused.

# %% [markdown] lang="zh-CN"
# 这条英文错误信息（`Unsupported global`）说明，`fc_model.Network` 默认不在放行之列，并建议用 `torch.serialization.add_safe_globals` 或 `safe_globals` 上下文管理器放行它（前提是你信任这个类）。
#
# ## 仍然要加载它：安全的做法
#
# 安全的做法是用上下文管理器 `torch.serialization.safe_globals`，只放行文件需要的那几个类，一个也不多。我们从 `get_unsafe_globals_in_checkpoint` 得到清单，确认其中每一项都是我们认识的类，再把这些类（类对象本身，而不是名字）传进去。文件中的其他任何内容仍然会被拒绝。

# %%
known_classes = {'fc_model.Network': fc_model.Network,
                 'torch.nn.modules.container.ModuleList': nn.ModuleList,
                 'torch.nn.modules.linear.Linear': nn.Linear,
                 'torch.nn.modules.dropout.Dropout': nn.Dropout}
needed = torch.serialization.get_unsafe_globals_in_checkpoint(whole_path)
unknown = set(needed) - set(known_classes)
assert not unknown, f"the file needs classes we do not trust: {unknown}"
# zh-CN: assert not unknown, f"这个文件需要我们不信任的类：{unknown}"

with torch.serialization.safe_globals([known_classes[name] for name in needed]):
    whole_model = torch.load(whole_path, map_location=device, weights_only=True)

with torch.no_grad():
    assert torch.equal(whole_model(test_images), model(test_images))
print(type(whole_model).__name__, "loaded; same predictions as the trained model")
# zh-CN: print(type(whole_model).__name__, "已加载；预测与训练好的模型相同")

# %% [markdown] lang="en"
# The error message of `torch.load` suggests a second way: `torch.serialization.add_safe_globals`. It allows the same classes, but for the whole Python process and from then on, not only inside a `with` block. That suits a script that loads many files of one known kind; in a notebook or a library it also widens what *every other* `torch.load` accepts, so prefer the scoped `safe_globals` there.
#
# Undoing `add_safe_globals` needs care. `get_safe_globals()` returns the globals *added* to PyTorch's built-in allowlist, not that built-in list (which `clear_safe_globals()` does not touch either). But it is not empty when we start: parts of PyTorch add classes of their own as they are imported. `clear_safe_globals()` alone would remove those as well, so we save the list first and put it back afterwards. The scoped `safe_globals` has its own catch: while its `with` block runs, its classes are allowed for every `torch.load` in the process, and when the block ends it removes them, even the ones that had been added before it started.

# %% [markdown] lang="zh-CN"
# `torch.load` 的错误信息还提到了第二种办法：`torch.serialization.add_safe_globals`。它放行的是同样的类，但作用于整个 Python 进程，而且从此一直有效，而不只是在一个 `with` 块内。对于要加载大量同类已知文件的脚本，这很合适；但在 notebook 或库中，它也会放宽*其他所有* `torch.load` 调用能接受的内容，所以在那些场合更应该使用作用范围有限的 `safe_globals`。
#
# 撤销 `add_safe_globals` 时要小心。`get_safe_globals()` 返回的是*额外添加*到 PyTorch 内置放行清单中的全局对象，而不是这份内置清单本身（`clear_safe_globals()` 也不会改动内置清单）。不过，在我们开始之前它就不是空的：PyTorch 的某些模块在导入时就会添加自己的类。只调用 `clear_safe_globals()` 会把这些也一并删掉，所以我们先记下这份清单，用完后再恢复。作用范围有限的 `safe_globals` 也有需要注意的地方：在它的 `with` 块执行期间，它放行的类对进程中的每一次 `torch.load` 都有效；`with` 块结束时，它会删除这些类，即使其中有些类在它开始之前就已经被添加过。

# %%
allowed_before = torch.serialization.get_safe_globals()
print(f"the list was not empty before we added anything: {len(allowed_before) > 0}")
# zh-CN: print(f"在我们添加任何东西之前，清单就不是空的：{len(allowed_before) > 0}")
torch.serialization.add_safe_globals([known_classes[name] for name in needed])
whole_again = torch.load(whole_path, map_location=device, weights_only=True)   # no with block
                                                                              # zh-CN: 没有 with 块
print(f"Network allowed everywhere: {fc_model.Network in torch.serialization.get_safe_globals()}")
# zh-CN: print(f"Network 在整个进程中都被放行：{fc_model.Network in torch.serialization.get_safe_globals()}")

torch.serialization.clear_safe_globals()                     # back to the list we started with
                                                             # zh-CN: 恢复到最初的清单
torch.serialization.add_safe_globals(allowed_before)
assert set(torch.serialization.get_safe_globals()) == set(allowed_before)
print(f"Network allowed everywhere: {fc_model.Network in torch.serialization.get_safe_globals()}")
# zh-CN: print(f"Network 在整个进程中都被放行：{fc_model.Network in torch.serialization.get_safe_globals()}")

# %% [markdown] lang="en"
# `torch.load(path, weights_only=False)` would also load it, by running the full unpickler. That is acceptable only for a file you made yourself and that nobody could have changed since. For anything downloaded, shared or received, use `weights_only=True` (with `safe_globals` for classes you trust), or better a format that cannot hold code at all. The section *Why it matters* below shows why.

# %% [markdown] lang="zh-CN"
# `torch.load(path, weights_only=False)` 也能加载它，因为它会运行完整的反序列化器。但这只适用于你自己生成、而且之后不可能被他人改动过的文件。对于任何下载、分享或收到的文件，都应该使用 `weights_only=True`（对信任的类配合 `safe_globals`），更好的办法是使用根本无法包含代码的格式。后面“为什么这很重要”一节会说明原因。

# %% [markdown] lang="en"
# ### Write `weights_only` out, every time
#
# A default can be changed behind your back. When the environment variable `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD` is set to `1` (a quick fix that some answers online suggest for old files), every `torch.load` that *leaves out* `weights_only` runs the full unpickler, with nothing but a warning; a call that writes `weights_only=True` is not affected. We show it on our own whole-model file, with the variable set only inside the `with` block:

# %% [markdown] lang="zh-CN"
# ### 每次都写出 `weights_only`
#
# 默认值可能在你不知情时被改掉。如果环境变量 `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD` 被设为 `1`（网上有些回答把它当作加载旧文件的快捷办法），那么每一次*省略*了 `weights_only` 的 `torch.load` 调用都会运行完整的反序列化器，只给出一条警告；而写明 `weights_only=True` 的调用不受影响。下面用我们自己生成的完整模型文件来演示，这个环境变量只在 `with` 块内有效。打印出的英文警告说的是：检测到这个环境变量，而调用时没有显式传入 `weights_only`，因此强制使用 `weights_only=False`。

# %%
with mock.patch.dict('os.environ', {'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD': '1'}):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        omitted = torch.load(whole_path, map_location=device)   # our own file: safe to try
                                                                # zh-CN: 我们自己的文件：可以放心尝试
    try:
        torch.load(whole_path, map_location=device, weights_only=True)
        refused = False
    except pickle.UnpicklingError:
        refused = True
assert isinstance(omitted, fc_model.Network) and refused
print("weights_only left out:", type(omitted).__name__, "loaded by the full unpickler, with a warning:")
# zh-CN: print("省略 weights_only：完整的反序列化器加载了", type(omitted).__name__, "并给出了警告：")
print(" ", next(w.message for w in caught if 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD' in str(w.message)))
print("weights_only=True written out: refused, as it should be")
# zh-CN: print("写明 weights_only=True：被拒绝，理应如此")

# %% [markdown] lang="en"
# ## Why it matters: a file that runs code
#
# Unpickling is not just reading data: a pickle can tell the loader to *call a function* with arguments of its choice, through an object's `__reduce__` method. An attacker can publish a "checkpoint" that deletes files or installs malware the moment someone loads it with the full unpickler.
#
# Below we plant a harmless payload: an object whose unpickling would run a line of Python through `exec`, here one that creates a marker file. Saving the file does not run it. We then load the file the safe ways, with `torch.load(..., weights_only=True)` and with `checkpoint_io.load_checkpoint`: both refuse it, and the marker never appears. The notebook never runs the payload.

# %% [markdown] lang="zh-CN"
# ## 为什么这很重要：会执行代码的文件
#
# 反序列化不只是读取数据：pickle 可以通过对象的 `__reduce__` 方法，让加载程序用它指定的参数*调用一个函数*。攻击者可以发布一个“检查点”，只要有人用完整的反序列化器加载它，就会删除文件或安装恶意软件。
#
# 下面我们植入一个无害的载荷：一个在反序列化时会通过 `exec` 执行一行 Python 代码的对象，这行代码会创建一个标记文件。保存文件时它不会执行。然后我们用两种安全的方式加载这个文件：`torch.load(..., weights_only=True)` 和 `checkpoint_io.load_checkpoint`。两者都拒绝加载，标记文件也始终没有出现。本 notebook 自始至终没有执行这个载荷。

# %%
marker = model_dir / 'payload_ran.txt'
marker.unlink(missing_ok=True)

class Payload:
    # Unpickling this object would call exec(code): any Python code, here creating the marker file
    # zh-CN: 反序列化这个对象会调用 exec(code)：可以是任意 Python 代码，这里是创建标记文件
    def __reduce__(self):
        return (exec, (f"open({str(marker)!r}, 'w').close()",))

evil_path = model_dir / 'evil_checkpoint.pth'
torch.save({'state_dict': model.state_dict(), 'extra': Payload()}, evil_path)
print(f"the file asks for: {torch.serialization.get_unsafe_globals_in_checkpoint(evil_path)}")
# zh-CN: print(f"这个文件引用的类和函数：{torch.serialization.get_unsafe_globals_in_checkpoint(evil_path)}")

refusals = []
try:
    torch.load(evil_path, weights_only=True)
except pickle.UnpicklingError:
    refusals.append('torch.load')
    print("torch.load(weights_only=True) refused the file")
    # zh-CN: print("torch.load(weights_only=True) 拒绝加载这个文件")
try:
    checkpoint_io.load_checkpoint(evil_path, fc_model.NETWORK)
except checkpoint_io.CheckpointError as error:
    refusals.append('checkpoint_io')
    print("checkpoint_io.load_checkpoint refused the file as well:")
    # zh-CN: print("checkpoint_io.load_checkpoint 同样拒绝了这个文件：")
    print(error)

assert refusals == ['torch.load', 'checkpoint_io'], f"only these refused the file: {refusals}"
# zh-CN: assert refusals == ['torch.load', 'checkpoint_io'], f"只有这些拒绝了这个文件：{refusals}"
assert not marker.exists(), "the payload ran!"
# zh-CN: assert not marker.exists(), "载荷被执行了！"
print(f"marker file exists: {marker.exists()}")
# zh-CN: print(f"标记文件是否存在：{marker.exists()}")

# %% [markdown] lang="en"
# `get_unsafe_globals_in_checkpoint` reads the file without unpickling it, so it is a safe way to look inside a suspicious file. Had we passed `weights_only=False`, `exec` would have run the code and created the marker; a real attacker's code would do something far worse. (`weights_only=True` is a restricted unpickler, not a sandbox, and it has had security bugs of its own: lesson 1 names the two advisories and why these lessons need PyTorch 2.10 or newer. Keep PyTorch up to date, and prefer formats that hold no code.)

# %% [markdown] lang="zh-CN"
# `get_unsafe_globals_in_checkpoint` 读取文件时不会进行反序列化，因此用它检查可疑文件是安全的。如果我们传入了 `weights_only=False`，`exec` 就会执行这段代码并创建标记文件；真正的攻击者执行的代码会危险得多。（`weights_only=True` 是一个受限的反序列化器，而不是沙箱，它本身也出现过安全漏洞：第 1 课列出了这两份安全公告，并说明了本系列课程为什么需要 PyTorch 2.10 或更新的版本。要及时更新 PyTorch，并优先使用不包含代码的格式。）

# %% [markdown] lang="en"
# ## safetensors: weights with nothing to execute
#
# [safetensors](https://huggingface.co/docs/safetensors) is a file format that holds only tensors and a small JSON header with string metadata. Loading it parses that header and copies bytes; there is no code path that could run anything. It is the usual format for sharing weights, for example on the Hugging Face Hub.
#
# `checkpoint_io.save_safetensors` stores the weights with the architecture as JSON in the metadata (written atomically, like the checkpoints of lesson 2). Here is what the file says about itself:

# %% [markdown] lang="zh-CN"
# ## safetensors：没有任何可执行内容的权重文件
#
# [safetensors](https://huggingface.co/docs/safetensors) 是一种只保存张量和一个小型 JSON 文件头（含字符串元数据）的文件格式。加载时只解析文件头并复制字节，没有任何可能执行代码的路径。在 Hugging Face Hub 等地方分享权重，通常用的就是这种格式。
#
# `checkpoint_io.save_safetensors` 保存权重，并把架构以 JSON 形式写入元数据（和第 2 课的检查点一样采用原子写入）。来看看这个文件里记录了什么：

# %%
safetensors_path = model_dir / 'model.safetensors'
checkpoint_io.save_safetensors(safetensors_path, model)
with safe_open(safetensors_path, framework='pt') as file:
    print(f"metadata: {dict(sorted(file.metadata().items()))}")
    # zh-CN: print(f"元数据：{dict(sorted(file.metadata().items()))}")
    print(f"tensors:  {sorted(file.keys())}")
    # zh-CN: print(f"张量名：{sorted(file.keys())}")

# %% [markdown] lang="en"
# The metadata is enough to rebuild the network without any other information: read the architecture, build `fc_model.Network(**architecture)` and load the tensors. That is what `fc_model.load_network` does with such a file (it also checks every step and names the file when something is wrong):

# %% [markdown] lang="zh-CN"
# 仅凭元数据就能重建网络，不需要任何其他信息：读出架构，构建 `fc_model.Network(**architecture)`，再载入张量。`fc_model.load_network` 处理这样的文件时正是这样做的（它还会检查每一步，出错时会指明是哪个文件）：

# %%
with safe_open(safetensors_path, framework='pt') as file:
    architecture = json.loads(file.metadata()['architecture'])
rebuilt = fc_model.Network(**architecture)
rebuilt.load_state_dict(load_file(safetensors_path))
rebuilt.to(device).eval()

loaded = fc_model.load_network(safetensors_path, map_location=device)
with torch.no_grad():
    assert torch.equal(rebuilt(test_images), model(test_images))
    assert torch.equal(loaded(test_images), model(test_images))
print(f"rebuilt from the metadata alone: {architecture}")
# zh-CN: print(f"仅凭元数据重建：{architecture}")

# %% [markdown] lang="en"
# ### Size and speed
#
# How do the formats compare on this network? We save the same `state_dict` with `torch.save` and as safetensors, and time three ways of loading it: `torch.load`, `torch.load(..., mmap=True)` (which maps the file into memory and reads tensor data only when it is used), and safetensors' `load_file` (which builds every tensor of the file; to read only some tensors, or parts of one, open the file with `safe_open` and call `get_tensor` or `get_slice`). Each is the best of several runs; the figures depend on your machine and disk cache.

# %% [markdown] lang="zh-CN"
# ### 大小与速度
#
# 在这个网络上，各种格式的表现如何？我们把同一个 `state_dict` 分别用 `torch.save` 和 safetensors 保存，再比较三种加载方式的用时：`torch.load`、`torch.load(..., mmap=True)`（把文件映射到内存中，只有用到张量数据时才读取）以及 safetensors 的 `load_file`（它会构建文件中的每一个张量；如果只想读取其中一部分张量，或者一个张量的一部分，就用 `safe_open` 打开文件，再调用 `get_tensor` 或 `get_slice`）。每项结果都取多次运行中的最好成绩；具体数字取决于你的机器和磁盘缓存。

# %% tags=["nbval-ignore-output"]
state_dict_path = model_dir / 'state_dict.pth'
torch.save(model.state_dict(), state_dict_path)

def best_time(load, repeats=20):
    # The fastest of several loads, in milliseconds
    # zh-CN: 多次加载中最快的一次，单位为毫秒
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        load()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)

loaders = {
    'torch.load': lambda: torch.load(state_dict_path, map_location='cpu', weights_only=True),
    'torch.load(mmap=True)': lambda: torch.load(state_dict_path, map_location='cpu',
                                                weights_only=True, mmap=True),
    'safetensors load_file': lambda: load_file(safetensors_path),
}
sizes = {'torch.load': state_dict_path, 'torch.load(mmap=True)': state_dict_path,
         'safetensors load_file': safetensors_path}
print(f"{'how':24}{'file size':>12}{'load time':>12}")
# zh-CN: print(f"{'加载方式':20}{'文件大小':>8}{'加载时间':>8}")
for name, load in loaders.items():
    print(f"{name:24}{sizes[name].stat().st_size / 1e6:>9.2f} MB{best_time(load):>9.2f} ms")

# %% [markdown] lang="en"
# Both files are essentially the raw float32 weights (567,434 parameters of 4 bytes, 2.27 MB); the formats differ in safety and in what they can hold, far more than in size. For a network this small every way of loading takes milliseconds. `mmap=True` and safetensors' `safe_open` pay off with models of gigabytes, where they avoid reading everything into memory first.
#
# What safetensors **cannot** hold: nesting, and values that are not tensors. A file is one flat mapping from names to tensors, plus metadata whose keys and values are strings. Adam's state from lesson 2 is made of tensors, so it could be flattened into names such as `state.0.exp_avg`; but its nesting, its hyper-parameters, the epoch, the loss and the random-number-generator states would all have to be encoded by hand (as 0-d tensors, or as strings in the metadata) and decoded again when loading. A checkpoint for resuming is simpler as a `torch.save` dictionary loaded with `weights_only=True`. So:
#
# | what you save | format |
# |---|---|
# | weights to share, publish or download | safetensors (architecture in the metadata) |
# | a checkpoint to resume training | `torch.save` of a dictionary, loaded with `weights_only=True` (lesson 2) |
# | a whole pickled model | avoid; if you must, load with `safe_globals` for known classes only |
# | a model to deploy without its source code | `torch.export` (below): loading still needs PyTorch, uses pickle (so only files you trust), and may fail on a newer PyTorch |

# %% [markdown] lang="zh-CN"
# 两个文件的内容基本上都是原始的 float32 权重（567,434 个参数，每个 4 字节，共 2.27 MB）；这些格式的差别主要在于安全性和能保存什么，而不在于大小。对这么小的网络，每种加载方式都只需几毫秒。`mmap=True` 和 safetensors 的 `safe_open` 要在几 GB 的大模型上才能体现出优势：它们不必先把所有内容读进内存。
#
# safetensors **不能**保存的是：嵌套结构，以及非张量的值。一个文件就是一个从名字到张量的扁平映射，外加键和值都是字符串的元数据。第 2 课中 Adam 的状态由张量组成，因此可以展平成 `state.0.exp_avg` 这样的名字；但它的嵌套结构、超参数，以及轮数、损失和随机数生成器状态，都得手工编码（写成 0 维张量，或者写成元数据里的字符串），加载时再解码回来。用于恢复训练的检查点，还是用 `torch.save` 保存字典、再用 `weights_only=True` 加载更简单。因此：
#
# | 要保存的内容 | 格式 |
# |---|---|
# | 用于分享、发布或下载的权重 | safetensors（架构写入元数据） |
# | 用于恢复训练的检查点 | 用 `torch.save` 保存字典，用 `weights_only=True` 加载（第 2 课） |
# | 用 pickle 保存的完整模型 | 尽量避免；如果必须使用，只对已知的类用 `safe_globals` 放行 |
# | 部署时不附带源代码的模型 | `torch.export`（见下文）：加载时仍然需要 PyTorch，会用到 pickle（所以只加载你信任的文件），而且在较新版本的 PyTorch 中可能无法加载 |

# %% [markdown] lang="en"
# ## Exporting for deployment: `torch.export`
#
# A service that only makes predictions should not need your training code. `torch.export.export` traces the network into an `ExportedProgram`: a graph of PyTorch operations together with the weights. `torch.export.save` writes it to a `.pt2` file. We mark the batch dimension as dynamic, so the exported program accepts any number of images.

# %% [markdown] lang="zh-CN"
# ## 为部署而导出：`torch.export`
#
# 一个只负责预测的服务不应该依赖你的训练代码。`torch.export.export` 会把网络追踪成一个 `ExportedProgram`：由 PyTorch 算子组成的计算图，连同权重一起。`torch.export.save` 把它写入 `.pt2` 文件。我们把批次这一维标记为动态的，这样导出的程序可以接受任意数量的图像。

# %% tags=["nbval-ignore-output"]
cpu_model = fc_model.Network(**model.architecture)
cpu_model.load_state_dict(model.state_dict())
cpu_model.eval()
example = test_images.cpu()
exported = torch.export.export(cpu_model, (example,),
                               dynamic_shapes={'x': {0: torch.export.Dim('batch')}})
export_path = model_dir / 'model.pt2'
torch.export.save(exported, export_path)
print(f"{export_path.name}: {export_path.stat().st_size / 1e6:.2f} MB")

# %% [markdown] lang="en"
# Loading a `.pt2` file still needs Python and PyTorch (`torch.export.load`); what it no longer needs is the source code of the model's classes. (Running with no Python at all is a further step, AOTInductor, beyond this lesson.) To show that the file needs no `fc_model`, we load it in a separate Python process that never imports it, predict the test batch there, and compare with the trained network here. The child process checks that `fc_model` was not imported.
#
# Two warnings come with `.pt2` files. First, `torch.export.load` unpickles parts of the file, some of them with `weights_only=False` inside PyTorch, and its documentation says never to load data from an untrusted source: a `.pt2` file from a stranger is as dangerous as any pickle, so load only files you or your team exported. Second, `torch.export.save` warns that saved files may not be usable in newer versions of PyTorch: keep the model's weights (as safetensors) and the code that exports it, so you can export again after an upgrade.

# %% [markdown] lang="zh-CN"
# 加载 `.pt2` 文件仍然需要 Python 和 PyTorch（`torch.export.load`）；它不再需要的，是模型各个类的源代码。（完全不依赖 Python 的运行方式是更进一步的 AOTInductor，不在本课范围之内。）为了证明这个文件不需要 `fc_model`，我们在一个从不导入它的独立 Python 进程中加载它，在那里对这批测试图像做预测，再与这里训练好的网络比较。子进程会检查 `fc_model` 确实没有被导入。
#
# 使用 `.pt2` 文件有两点需要警惕。第一，`torch.export.load` 会反序列化文件中的一些部分，PyTorch 内部对其中一部分使用的是 `weights_only=False`，该函数的文档也明确说明绝不要加载来源不可信的数据：来自陌生人的 `.pt2` 文件和任何 pickle 文件一样危险，所以只加载你自己或你的团队导出的文件。第二，`torch.export.save` 的文档警告，保存的文件在较新版本的 PyTorch 中可能无法使用：请保留模型的权重（保存为 safetensors）和导出它的代码，这样升级之后可以重新导出。

# %%
torch.save(example, model_dir / 'example_images.pt')
child_code = f'''
import sys, torch
program = torch.export.load({str(export_path)!r})
images = torch.load({str(model_dir / 'example_images.pt')!r}, weights_only=True)
torch.save(program.module()(images), {str(model_dir / 'exported_predictions.pt')!r})
print('fc_model' in sys.modules)
'''
result = subprocess.run([sys.executable, '-c', child_code], capture_output=True, text=True, check=True)
print("the child process reports whether it imported fc_model:")
# zh-CN: print("子进程报告它是否导入了 fc_model：")
print(f"fc_model imported by the child process: {result.stdout.strip()}")
# zh-CN: print(f"子进程是否导入了 fc_model：{result.stdout.strip()}")

exported_predictions = torch.load(model_dir / 'exported_predictions.pt', weights_only=True)
with torch.no_grad():
    expected = cpu_model(example)
assert torch.allclose(exported_predictions, expected, atol=1e-6)
assert torch.equal(exported_predictions.argmax(dim=1), expected.argmax(dim=1))
print("the exported program predicts the same classes for all", len(example), "images")
# zh-CN: print("导出的程序对全部", len(example), "张图像预测的类别都相同")

# %% [markdown] lang="en"
# ## Summary
#
# - `torch.save(model)` stores references to classes, not code: the file breaks when the code moves, and `torch.load` refuses it by default. If you must load one, allow exactly its known classes with `torch.serialization.safe_globals` (or, process-wide, `add_safe_globals`).
# - Unpickling can run arbitrary code. Never use `weights_only=False` on a file you did not make yourself, and write `weights_only=True` out, since an environment variable can turn the default off; inspect suspicious files with `get_unsafe_globals_in_checkpoint`.
# - Share weights as safetensors, with the architecture in the metadata; keep `torch.save` dictionaries for training checkpoints; use `torch.export` to deploy a model without its source code (loading the `.pt2` file still needs PyTorch, unpickles parts of the file, so only for files you trust, and may fail on a newer PyTorch).

# %% [markdown] lang="zh-CN"
# ## 小结
#
# - `torch.save(model)` 保存的是类的引用而不是代码：代码一移动，文件就会失效，而且 `torch.load` 默认拒绝加载它。如果必须加载，用 `torch.serialization.safe_globals`（或者作用于整个进程的 `add_safe_globals`）只放行它需要的已知类。
# - 反序列化可以执行任意代码。对于不是你自己生成的文件，绝不要使用 `weights_only=False`；要写明 `weights_only=True`，因为一个环境变量就能关掉默认值；可以用 `get_unsafe_globals_in_checkpoint` 检查可疑文件。
# - 用 safetensors 分享权重，并把架构写入元数据；训练检查点用 `torch.save` 保存字典；部署不附带源代码的模型时用 `torch.export`（加载 `.pt2` 文件仍然需要 PyTorch，而且会反序列化文件中的部分内容，所以只加载你信任的文件；在较新版本的 PyTorch 中它也可能无法加载）。

# %% [markdown] lang="en"
# ## Exercises
#
# Each exercise asks you to write a function; the check cell right after it runs your function on small files of its own and tells you what is missing or wrong. Run the next cell first: it imports what the exercises need, so they work even after a kernel restart, without the cells above. In the student edition each answer is `raise NotImplementedError()`: replace it with your code, run that cell, then run the check cell after it.

# %% [markdown] lang="zh-CN"
# ## 练习
#
# 每道练习都要求你写一个函数；紧跟在它后面的检查单元格会用自己创建的小文件运行你的函数，并告诉你缺了什么或错在哪里。请先运行下面这个单元格：它导入练习需要的一切，所以即使重启了内核、没有运行上面的单元格，也能做练习。在学生版中，每个答案都是 `raise NotImplementedError()`：把它换成你的代码，运行这个单元格，再运行它后面的检查单元格。

# %%
import datetime
import json

import safetensors.torch
import torch

from saveload_lessons import exercise_checks

check = exercise_checks.for_lesson(3, language="en")
# zh-CN: check = exercise_checks.for_lesson(3, language="zh-CN")

# %% [markdown] lang="en"
# **Exercise 3.1: an allowlist for one file.** The check saves a dict that holds a tensor, the date of the run (a `datetime.date`) and its duration (a `datetime.timedelta`); `torch.load(path, weights_only=True)` refuses it. Write `load_with_allowlist(path)`, which loads such a file with `weights_only=True`, allowing exactly the classes it needs and only for this one load, and returns what the file holds: the loaded dict, with its tensor, date and duration. Find them with `torch.serialization.get_unsafe_globals_in_checkpoint` on a file you save yourself. The check also hands it a hostile file, which must still be refused.

# %% [markdown] lang="zh-CN"
# **练习 3.1：只针对一个文件的放行清单。** 检查单元格会保存一个字典，其中有一个张量、运行日期（`datetime.date`）和运行时长（`datetime.timedelta`）；`torch.load(path, weights_only=True)` 会拒绝加载它。编写 `load_with_allowlist(path)`：用 `weights_only=True` 加载这样的文件，恰好放行它需要的那几个类，并且只在这一次加载中放行；最后返回文件中保存的内容，也就是加载出来的字典，其中有张量、日期和时长。可以自己保存一个这样的文件，再用 `torch.serialization.get_unsafe_globals_in_checkpoint` 找出需要放行的类。检查单元格还会交给它一个恶意文件，它必须仍然拒绝这个文件。

# %%
def load_with_allowlist(path):
    ### BEGIN SOLUTION
    with torch.serialization.safe_globals([datetime.date, datetime.timedelta]):
        return torch.load(path, weights_only=True)
    ### END SOLUTION


# %%
check.exercise_1(load_with_allowlist)

# %% [markdown] lang="en"
# **Exercise 3.2: weights to share.** Write `save_for_sharing(model, path)` with `safetensors.torch.save_file`: the file holds the model's `state_dict`, and its metadata has the entry `"architecture"`, the JSON text of `model.architecture` (metadata values must be strings). This is what `checkpoint_io.save_safetensors` did in this lesson; write it without that helper. The cell after it checks your function.

# %% [markdown] lang="zh-CN"
# **练习 3.2：用于分享的权重。** 用 `safetensors.torch.save_file` 编写 `save_for_sharing(model, path)`：文件中保存模型的 `state_dict`，元数据中有一项 `"architecture"`，它的值是 `model.architecture` 的 JSON 文本（元数据的值必须是字符串）。本课中的 `checkpoint_io.save_safetensors` 做的就是这件事；请不借助它，自己写出来。后面的单元格会检查你的函数。

# %%
def save_for_sharing(model, path):
    ### BEGIN SOLUTION
    safetensors.torch.save_file(model.state_dict(), path,
                                metadata={"architecture": json.dumps(model.architecture)})
    ### END SOLUTION


# %%
check.exercise_2(save_for_sharing)

# %% [markdown] lang="en"
# ## Further reading
#
# - PyTorch notes: [Serialization semantics](https://pytorch.org/docs/stable/notes/serialization.html), in particular `weights_only` and `safe_globals`.
# - PyTorch tutorial: [Saving and loading models](https://pytorch.org/tutorials/beginner/saving_loading_models.html), section "Save/Load Entire Model".
# - [safetensors documentation](https://huggingface.co/docs/safetensors), with the format's specification.
# - [`torch.export`](https://pytorch.org/docs/stable/export.html): exporting a model as a program, and the [`torch.export` tutorial](https://pytorch.org/tutorials/intermediate/torch_export_tutorial.html).
# - Python: [`pickle`](https://docs.python.org/3/library/pickle.html), whose documentation opens with the warning that unpickling can run arbitrary code.

# %% [markdown] lang="zh-CN"
# ## 延伸阅读
#
# - PyTorch 说明文档：[Serialization semantics](https://pytorch.org/docs/stable/notes/serialization.html)（序列化语义），特别是关于 `weights_only` 和 `safe_globals` 的部分。
# - PyTorch 教程：[Saving and loading models](https://pytorch.org/tutorials/beginner/saving_loading_models.html) 中的“Save/Load Entire Model”一节。
# - [safetensors 文档](https://huggingface.co/docs/safetensors)，其中有这种格式的规范。
# - [`torch.export`](https://pytorch.org/docs/stable/export.html)：把模型导出为程序；另见 [`torch.export` 教程](https://pytorch.org/tutorials/intermediate/torch_export_tutorial.html)。
# - Python 的 [`pickle`](https://docs.python.org/3/library/pickle.html) 文档，开篇就警告：反序列化可能执行任意代码。
