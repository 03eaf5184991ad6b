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
#       en: 4. Checkpoints from elsewhere
#       zh-CN: 4. 来自别处的检查点
#     summary:
#       en: a file saved on a GPU loaded on a CPU (`map_location`), partial loading and warm-starting a
#         new head, the `module.` and `_orig_mod.` prefixes, half-precision files, several objects in
#         one checkpoint, and converting a legacy file that `weights_only=True` refuses.
#       zh-CN: 在 CPU 上加载 GPU 上保存的文件（`map_location`）、只加载状态字典的一部分、用已有权重初始化网络并换上新的输出层、处理 `module.` 和
#         `_orig_mod.` 前缀、以半精度保存、在一个检查点中保存多个对象，并把被 `weights_only=True` 拒绝的旧文件转换成干净的文件。
#     teaching_minutes: 90
#     quick_run:
#       epochs: 1
#       finetune_steps: 20
#       train_size: 12800
# ---

# %% [markdown] lang="en"
# # Checkpoints from Elsewhere
#
# Lessons 1–3 loaded files that the notebook had just written. In real work a checkpoint comes from somewhere else: a GPU server, a run that wrapped the model in `DataParallel` or `torch.compile`, a model with another output layer, an older training script. Each of these fails in its own way. In this lesson you will meet each error for real, understand it, and fix it with the tool PyTorch provides:
#
# 1. load a file saved on a GPU on a machine without one (`map_location`), with its optimizer;
# 2. load only part of a state dict, and warm-start a network for a new task from a trained one;
# 3. remove the `module.` and `_orig_mod.` prefixes that wrappers add, and avoid them;
# 4. save in half precision, and measure what it costs;
# 5. keep several objects in one checkpoint;
# 6. inspect a legacy file that `weights_only=True` refuses, load it once, and convert it into a clean one.

# %% [markdown] lang="zh-CN"
# # 来自别处的检查点
#
# 第 1–3 课加载的都是 notebook 刚刚写出的文件。而在实际工作中，检查点往往来自别处：一台 GPU 服务器、一次用 `DataParallel` 或 `torch.compile` 包装了模型的训练、一个输出层不同的模型、一个旧的训练脚本。每一种来源都有自己的出错方式。本课会逐一真实地重现这些错误，先弄清每个错误的原因，再用 PyTorch 提供的相应工具解决它：
#
# 1. 把 GPU 上保存的模型及其优化器加载到没有 GPU 的机器上（`map_location`）；
# 2. 只加载状态字典的一部分，并用一个训练好的网络的权重初始化新任务的网络；
# 3. 去掉包装器添加的 `module.` 和 `_orig_mod.` 前缀，并从一开始就避免写入它们；
# 4. 以半精度保存，并测量这样做的代价；
# 5. 在一个检查点中保存多个对象；
# 6. 查看一个被 `weights_only=True` 拒绝的旧文件引用了什么，只加载它一次，再把它转换成干净的文件。

# %% [markdown] lang="en"
# ## Imports and parameters

# %% [markdown] lang="zh-CN"
# ## 导入模块和参数

# %%
import argparse
import copy
import importlib
import itertools
import os
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import nn, optim
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

import fc_model
import helper
from saveload_lessons import checkpoint_io, devices, messages

# %% tags=["parameters"]
epochs = 1                             # passes over the training images for the trained network
                                       # zh-CN: 训练网络时遍历训练图像的轮数
device = "auto"                        # "auto", "cpu", "cuda" or "mps"
                                       # zh-CN: "auto"、"cpu"、"cuda" 或 "mps"
data_dir = "~/.pytorch/F_MNIST_data/"  # where torchvision keeps Fashion-MNIST
                                       # zh-CN: torchvision 存放 Fashion-MNIST 的目录
checkpoint_dir = "elsewhere"           # where this notebook writes its files
                                       # zh-CN: 本 notebook 写入文件的目录
finetune_steps = 150                   # training steps for the new task, warm-started and from scratch
                                       # zh-CN: 新任务的训练步数（用已有权重初始化和从零开始各训练这么多步）
train_size = 60000                     # training images for the trained network; fewer make a quicker run
                                       # zh-CN: 训练好的网络所用的训练图像数量；越少运行越快
seed = 4                               # fixes the initial weights, the data order and dropout
                                       # zh-CN: 固定初始权重、数据顺序和 dropout

# %% tags=["nbval-ignore-output"]
# The companion modules speak the notebook's language
# zh-CN: 配套模块使用本 notebook 的语言
messages.set_language("en")
# zh-CN: messages.set_language("zh-CN")
fc_model.check_positive_int(epochs=epochs, finetune_steps=finetune_steps, train_size=train_size)
if train_size > 60000:
    raise ValueError(f"train_size can be at most 60000 (the training set), got {train_size}")
    # zh-CN: raise ValueError(f"train_size 最多为 60000（训练集的大小），实际为 {train_size}")
device = devices.get_device(device)
helper.prepare_fashion_mnist(data_dir)
checkpoint_dir = Path(checkpoint_dir)
checkpoint_dir.mkdir(parents=True, exist_ok=True)
torch.manual_seed(seed)
print(f"Training for {epochs} epoch(s) on {device}, then {finetune_steps} steps on a new task")
# zh-CN: print(f"训练 {epochs} 轮，设备：{device}；然后在新任务上训练 {finetune_steps} 步")

# %% [markdown] lang="en"
# ## A trained network
#
# The lesson-1 network, trained on the fast loaders of lesson 1 (on the first `train_size` training images). Its state dict is what the other machines and scripts below have saved.

# %% [markdown] lang="zh-CN"
# ## 训练好的网络
#
# 还是第 1 课的网络，用第 1 课的快速数据加载器（只取前 `train_size` 张训练图像）训练。下文中其他机器和脚本保存的，就是它的状态字典。

# %% tags=["nbval-ignore-output"]
trainloader, testloader = helper.fashion_mnist_loaders(data_dir, train_size=train_size)
criterion = nn.NLLLoss()
model = fc_model.Network(784, 10, [512, 256, 128])
optimizer = optim.Adam(model.parameters(), lr=0.001)
print_every = min(300, len(trainloader))  # a progress line at least once an epoch
                                          # zh-CN: 每轮至少输出一行训练进度
history = fc_model.train(model, trainloader, testloader, criterion, optimizer,
                         epochs=epochs, print_every=print_every, device=device)
model.eval()
_, trained_accuracy = fc_model.validation(model, testloader, criterion)
test_images, _ = next(iter(testloader))
test_images = test_images.to(device)
with torch.no_grad():
    expected = model(test_images)


# %% [markdown] lang="en"
# `same_predictions` compares another network with this one on a batch of test images; the fixes below must pass it.

# %% [markdown] lang="zh-CN"
# `same_predictions` 在一批测试图像上比较另一个网络与这个网络的输出；下面的每种解决办法都必须通过这项检查。

# %%
def same_predictions(other):
    other.eval()
    with torch.no_grad():
        return torch.equal(other(test_images), expected)


# %% [markdown] lang="en"
# ## 1. A file saved on a GPU
#
# `torch.save` records, for every tensor, the device it lived on. A file written on a GPU says `cuda:0`, and `torch.load` puts the tensors back there, which fails on a machine without CUDA.
#
# This notebook may run without a GPU, so it makes such a file with PyTorch's own machinery: `torch.serialization.register_package` lets a library tell `torch.save` which location to record for a storage. The small function below records `cuda:0` while `recording_cuda` is true, which is exactly what a GPU machine writes; everything else in the file is unchanged.

# %% [markdown] lang="zh-CN"
# ## 1. GPU 上保存的文件
#
# `torch.save` 会为每个张量记录它所在的设备。在 GPU 上写出的文件记录的是 `cuda:0`，`torch.load` 会把张量放回那里；在没有 CUDA 的机器上，这就会失败。
#
# 本 notebook 可能在没有 GPU 的机器上运行，所以我们用 PyTorch 自己的机制来制作这样一个文件：库可以通过 `torch.serialization.register_package` 告诉 `torch.save`，为某块存储记录什么位置。下面这个小函数在 `recording_cuda` 为真时记录 `cuda:0`，和 GPU 机器写出的内容完全一样；文件的其余部分不受影响。

# %%
recording_cuda = False

def record_as_cuda(storage):
    return "cuda:0" if recording_cuda and storage.device.type == "cpu" else None

torch.serialization.register_package(0, record_as_cuda, lambda storage, location: None)

gpu_path = checkpoint_dir / "saved_on_gpu.pth"
recording_cuda = True
torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, gpu_path)
recording_cuda = False

# %% [markdown] lang="en"
# Loading it as it is gives the error that people meet when they copy a checkpoint from a GPU server to a laptop (on a machine with CUDA, it simply loads onto the GPU):

# %% [markdown] lang="zh-CN"
# 直接加载它，就会遇到把检查点从 GPU 服务器复制到笔记本电脑上时常见的那个错误（在有 CUDA 的机器上，它会直接加载到 GPU 上）：

# %%
try:
    loaded = torch.load(gpu_path, weights_only=True)
    print("loaded onto", loaded["model"]["output.weight"].device)
    # zh-CN: print("已加载到", loaded["model"]["output.weight"].device)
except RuntimeError as error:
    print("torch.load could not put the tensors back on the GPU:")
    # zh-CN: print("torch.load 无法把张量放回 GPU：")
    print(error)

# %% [markdown] lang="en"
# `map_location` says where the loaded tensors go instead. It accepts a device name, a `torch.device`, a dict that maps recorded locations to new ones, or a function of `(storage, location)`; all four put every tensor on the CPU here:

# %% [markdown] lang="zh-CN"
# 上面这条英文错误信息（只在没有 CUDA 的机器上出现）的意思是：试图在 CUDA 设备上反序列化对象，但 `torch.cuda.is_available()` 为 False；如果机器只有 CPU，请给 `torch.load` 传入 `map_location=torch.device('cpu')`，把存储映射到 CPU 上。
#
# `map_location` 指定把加载出来的张量改放到哪里。它可以是设备名、`torch.device`、把记录的位置映射到新位置的字典，或者以 `(storage, location)` 为参数的函数；下面这四种写法都把所有张量放到 CPU 上：

# %%
for map_location in ["cpu", torch.device("cpu"), {"cuda:0": "cpu"}, lambda storage, location: storage]:
    loaded = torch.load(gpu_path, map_location=map_location, weights_only=True)
    print(f"{type(map_location).__name__:>8}: {loaded['model']['output.weight'].device}")

# %% [markdown] lang="en"
# A model *and* its optimizer take one more step. `map_location` only places the loaded tensors; `load_state_dict` copies the model's tensors into its parameters wherever those live. So build the model, move it with `.to(device)` first, then create the optimizer on its parameters and load the optimizer's state: `Optimizer.load_state_dict` moves each state tensor (Adam's moving averages) to the device of its parameter, and casts floating-point ones to its dtype. One exception: the step count `step` stays where it was loaded, unless the optimizer was created with `fused=True` or `capturable=True`.

# %% [markdown] lang="zh-CN"
# 同时加载模型*和*它的优化器还要多做一步。`map_location` 只决定加载出来的张量放在哪里；`load_state_dict` 则把这些张量的值复制到模型的参数中，参数原来在哪个设备上，就仍然留在哪个设备上。所以应当先构建模型，用 `.to(device)` 把它移到目标设备上，再用它的参数创建优化器，最后加载优化器的状态：`Optimizer.load_state_dict` 会把每个状态张量（Adam 的移动平均）移到对应参数所在的设备上，并把浮点类型的状态张量转换成参数的 dtype。只有一个例外：除非创建优化器时指定了 `fused=True` 或 `capturable=True`，步数 `step` 会留在加载时所在的设备上。

# %%
checkpoint = torch.load(gpu_path, map_location=device, weights_only=True)
restored = fc_model.Network(784, 10, [512, 256, 128]).to(device)
restored.load_state_dict(checkpoint["model"])
restored_optimizer = optim.Adam(restored.parameters(), lr=0.001)
restored_optimizer.load_state_dict(checkpoint["optimizer"])

state_devices = {t.device for s in restored_optimizer.state.values() for t in s.values()
                 if torch.is_tensor(t) and t.dim() > 0}
print(f"optimizer state on: {state_devices} | parameters on: {devices.model_device(restored)}")
# zh-CN: print(f"优化器状态所在设备：{state_devices} | 参数所在设备：{devices.model_device(restored)}")
assert state_devices == {devices.model_device(restored)}
print(f"same predictions: {same_predictions(restored)}")
# zh-CN: print(f"预测相同：{same_predictions(restored)}")

# %% [markdown] lang="en"
# On a machine without a GPU, the state above was on the CPU from the start, so that check proves little there. To watch `load_state_dict` move the state, load it from the CPU into an optimizer whose model lives on the `meta` device (tensors with a shape but no data):

# %% [markdown] lang="zh-CN"
# 在没有 GPU 的机器上，上面的状态从一开始就在 CPU 上，所以这项检查在这里说明不了什么。为了看清 `load_state_dict` 确实会移动状态，我们把一个模型放到 `meta` 设备上（这个设备上的张量只有形状，没有数据），再把状态从 CPU 加载到这个模型的优化器中：

# %%
on_meta = fc_model.Network(784, 10, [512, 256, 128]).to("meta")
meta_optimizer = optim.Adam(on_meta.parameters(), lr=0.001)
meta_optimizer.load_state_dict(torch.load(gpu_path, map_location="cpu", weights_only=True)["optimizer"])
placement = {name: value.device.type for name, value in meta_optimizer.state[on_meta.output.weight].items()}
print(placement)
assert placement == {"step": "cpu", "exp_avg": "meta", "exp_avg_sq": "meta"}

# %% [markdown] lang="en"
# ## 2. Loading part of a state dict
#
# `load_state_dict` is strict by default: every key of the model must be in the file, and nothing else. With `strict=False` it loads what matches and returns the names it could not use, `missing_keys` (in the model, not in the file) and `unexpected_keys` (in the file, not in the model). Here the file lacks the output layer and has an extra entry:

# %% [markdown] lang="zh-CN"
# ## 2. 只加载状态字典的一部分
#
# `load_state_dict` 默认是严格的：模型的每个键都必须出现在文件中，而且文件中不能有多余的键。使用 `strict=False` 时，它只加载能匹配的部分，并返回没能用上的键名：`missing_keys`（模型中有、文件中没有）和 `unexpected_keys`（文件中有、模型中没有）。下面这个文件缺少输出层，还多了一项：

# %%
partial = {name: tensor for name, tensor in model.state_dict().items() if not name.startswith("output.")}
partial["temperature"] = torch.tensor(1.5)
fresh = fc_model.Network(784, 10, [512, 256, 128]).to(device)
result = fresh.load_state_dict(partial, strict=False)
print(f"missing:    {result.missing_keys}")
# zh-CN: print(f"缺失的键：{result.missing_keys}")
print(f"unexpected: {result.unexpected_keys}")
# zh-CN: print(f"多余的键：{result.unexpected_keys}")
assert result.missing_keys == ["output.weight", "output.bias"] and result.unexpected_keys == ["temperature"]

# %% [markdown] lang="en"
# ### Warm-starting a network for a new task
#
# A new task: tell apart the five classes of Fashion-MNIST that are easiest to confuse: T-shirt/top, pullover, dress, coat and shirt. The new network has the same hidden layers but 5 outputs instead of 10. `strict=False` does not help with that difference: it still raises when a tensor has the wrong shape.

# %% [markdown] lang="zh-CN"
# ### 用已有权重初始化新任务的网络
#
# 新任务是区分 Fashion-MNIST 中最容易混淆的五个类别：T恤/上衣（T-shirt/top）、套头衫（Pullover）、连衣裙（Dress）、外套（Coat）和衬衫（Shirt）。新网络的隐藏层与原来相同，但只有 5 个输出，而不是 10 个。`strict=False` 解决不了这种差别：张量的形状不对时，它仍然会报错。

# %%
garments = torch.tensor([0, 2, 3, 4, 6])
new_label = torch.full((10,), -1, dtype=torch.long)
new_label[garments] = torch.arange(len(garments))

def garments_loader(train, shuffle):
    images, labels = helper.fashion_mnist_tensors(data_dir, train=train)
    keep = torch.isin(labels, garments)
    return helper.tensor_loader(images[keep], new_label[labels[keep]], batch_size=64, shuffle=shuffle)

garments_train, garments_test = garments_loader(train=True, shuffle=True), garments_loader(train=False, shuffle=False)
torch.manual_seed(seed)
warm = fc_model.Network(784, len(garments), [512, 256, 128]).to(device)
torch.manual_seed(seed)
scratch = fc_model.Network(784, len(garments), [512, 256, 128]).to(device)
try:
    warm.load_state_dict(model.state_dict(), strict=False)
except RuntimeError as error:
    print("even with strict=False, tensors of the wrong shape are refused:")
    # zh-CN: print("即使 strict=False，形状不对的张量也会被拒绝：")
    print(error)

# %% [markdown] lang="en"
# So keep only the tensors whose name and shape match, load those, and check what was skipped. The network `scratch` above, to be trained from scratch for comparison, was built from the same seed: it starts with the very same output layer, and only its hidden layers differ (random instead of trained).

# %% [markdown] lang="zh-CN"
# 错误信息列出了两处尺寸不匹配（`size mismatch`）：输出层的权重和偏置在检查点中的形状是 [10, 128] 和 [10]，在新网络中则是 [5, 128] 和 [5]。
#
# 因此，我们只挑出名字和形状都匹配的张量加载进来，再检查有哪些张量被跳过了。上面的 `scratch` 网络用来对比，它将从零开始训练。它和 `warm` 是用同一个随机种子构建的，所以两者一开始的输出层完全相同，只有隐藏层不同：`scratch` 的隐藏层是随机的，`warm` 的则是训练过的。

# %%
own = warm.state_dict()
compatible = {name: tensor for name, tensor in model.state_dict().items()
              if name in own and own[name].shape == tensor.shape}
result = warm.load_state_dict(compatible, strict=False)
assert result.missing_keys == ["output.weight", "output.bias"] and not result.unexpected_keys
print(f"skipped: {sorted(set(model.state_dict()) - set(compatible))}")
# zh-CN: print(f"跳过的键：{sorted(set(model.state_dict()) - set(compatible))}")
assert torch.equal(warm.output.weight, scratch.output.weight)

# %% [markdown] lang="en"
# Now both networks get the same training: `finetune_steps` steps of Adam with learning rate 0.001 (the value this lesson uses for every network) on all their parameters, on the same batches in the same order, with the same dropout masks. Only their initial weights differ. Then we compare their accuracy on the test images of the five classes.

# %% [markdown] lang="zh-CN"
# 现在让两个网络接受完全相同的训练：都用 Adam 更新全部参数，学习率都是 0.001（本课的每个网络都用这个学习率），都训练 `finetune_steps` 步，所用的批次、批次的顺序和 dropout 掩码也都相同。两者唯一的不同是初始权重。最后比较它们在这五个类别的测试图像上的准确率。

# %% tags=["nbval-ignore-output"]
def train_steps(network, steps):
    trainable = [p for p in network.parameters() if p.requires_grad]
    step_optimizer = optim.Adam(trainable, lr=0.001)
    network.train()
    batches = itertools.chain.from_iterable(itertools.repeat(garments_train))
    for images, labels in itertools.islice(batches, steps):
        images, labels = images.to(device), labels.to(device)
        step_optimizer.zero_grad()
        criterion(network(images), labels).backward()
        step_optimizer.step()
    return fc_model.validation(network, garments_test, criterion)[1]

torch.manual_seed(seed)
warm_accuracy = train_steps(warm, finetune_steps)
torch.manual_seed(seed)
scratch_accuracy = train_steps(scratch, finetune_steps)
print(f"after {finetune_steps} steps: warm start {warm_accuracy:.3f}, from scratch {scratch_accuracy:.3f}")
# zh-CN: print(f"训练 {finetune_steps} 步后的准确率：用已有权重初始化 {warm_accuracy:.3f}，从零开始 {scratch_accuracy:.3f}")
assert warm_accuracy > scratch_accuracy

# %% [markdown] lang="en"
# In the runs made for this lesson (seeds 1 to 4; 20 and 150 steps; the first network trained on 12,800 or on all 60,000 images) the warm-started network was ahead every time, by 1 to 19 points, by the least with few steps and a first network trained on fewer images: its hidden layers already tell garments apart. That is what these runs show, not a law: with enough steps and data, a network trained from scratch catches up.
#
# You can also freeze the copied hidden layers (`requires_grad_(False)`): the optimizer then gets only the new output layer, 645 numbers, and the copied layers stay exactly as they were. Whether that is more or less accurate than training everything depends on the data and on the number of steps; the cell prints it for this run.

# %% [markdown] lang="zh-CN"
# 在为本课所做的多次运行中（随机种子 1 到 4；训练 20 步和 150 步；第一个网络用 12,800 张或全部 60,000 张图像训练），用已有权重初始化的网络每次都领先，幅度在 1 到 19 个百分点之间；训练步数少、第一个网络所用的图像也少时，领先得最少。它领先是因为它的隐藏层已经能区分各种服装。不过这只是这几次运行的结果，并非普遍规律：只要训练步数和数据足够多，从零开始训练的网络也会追上来。
#
# 也可以冻结复制过来的隐藏层（`requires_grad_(False)`）：这样优化器只更新新的输出层，一共 645 个参数，复制过来的层则原封不动。冻结之后的准确率比训练全部参数时高还是低，取决于数据和训练步数；下面的单元格会打印这次运行的结果。

# %% tags=["nbval-ignore-output"]
torch.manual_seed(seed)
frozen = fc_model.Network(784, len(garments), [512, 256, 128]).to(device)
frozen.load_state_dict(compatible, strict=False)
frozen.hidden_layers.requires_grad_(False)
print(f"trainable numbers: {sum(p.numel() for p in frozen.parameters() if p.requires_grad)}")
# zh-CN: print(f"可训练的参数个数：{sum(p.numel() for p in frozen.parameters() if p.requires_grad)}")
torch.manual_seed(seed)
frozen_accuracy = train_steps(frozen, finetune_steps)
print(f"hidden layers frozen: {frozen_accuracy:.3f}")
# zh-CN: print(f"冻结隐藏层后的准确率：{frozen_accuracy:.3f}")
assert torch.equal(frozen.hidden_layers[0].weight, model.hidden_layers[0].weight)

# %% [markdown] lang="en"
# ## 3. The `module.` and `_orig_mod.` prefixes
#
# Wrappers keep the model as an attribute, so their state dicts name every tensor through it: `nn.DataParallel` and `DistributedDataParallel` add `module.`, and the module returned by `torch.compile` adds `_orig_mod.`. Both wrap the model here for real (on a CPU, `DataParallel` simply runs the model; the `eager` backend skips code generation but wraps the same way):

# %% [markdown] lang="zh-CN"
# ## 3. `module.` 和 `_orig_mod.` 前缀
#
# 包装器把模型作为自己的一个属性持有，所以在包装器的状态字典中，每个张量的名字前面都多了这个属性的名字：`nn.DataParallel` 和 `DistributedDataParallel` 会加上 `module.`，`torch.compile` 返回的模块会加上 `_orig_mod.`。下面的代码真正用这两种包装器包装模型（在 CPU 上，`DataParallel` 只是直接运行模型；`eager` 后端不生成代码，但包装方式相同）：

# %%
parallel_state = nn.DataParallel(model).state_dict()
compiled_state = torch.compile(model, backend="eager").state_dict()
print(list(parallel_state)[:2])
print(list(compiled_state)[:2])

plain = fc_model.Network(784, 10, [512, 256, 128]).to(device)
for state in [parallel_state, compiled_state]:
    try:
        plain.load_state_dict(state)
    except RuntimeError as error:
        print("load_state_dict refused the prefixed names:")
        # zh-CN: print("load_state_dict 拒绝了带前缀的名字：")
        print(str(error).splitlines()[2].strip()[:100], "...")

# %% [markdown] lang="en"
# `torch.nn.modules.utils.consume_prefix_in_state_dict_if_present` removes the prefix, in place, from every key that starts with it, and leaves the other keys as they are; it does not require all keys to have the prefix (it works on a copy here, so the original keeps its keys):

# %% [markdown] lang="zh-CN"
# 错误信息（`Unexpected key(s) in state_dict`）说明，状态字典中有模型不认识的键，也就是这些带前缀的名字。
#
# `torch.nn.modules.utils.consume_prefix_in_state_dict_if_present` 会就地修改字典：凡是以该前缀开头的键都去掉前缀，其他键保持不变；它并不要求每个键都带这个前缀（这里先复制一份再处理，所以原来那个字典中的键不会改变）：

# %%
for state, prefix in [(parallel_state, "module."), (compiled_state, "_orig_mod.")]:
    state = dict(state)
    consume_prefix_in_state_dict_if_present(state, prefix)
    plain.load_state_dict(state)
    print(f"{prefix:<11} removed; same predictions: {same_predictions(plain)}")
    # zh-CN: print(f"{prefix:<11} 已去掉；预测相同：{same_predictions(plain)}")

# %% [markdown] lang="en"
# The companion module knows these prefixes too: `fc_model.load_network` refuses such a file with a message that names the prefix and the fix.

# %% [markdown] lang="zh-CN"
# 配套模块也认识这些前缀：`fc_model.load_network` 会拒绝这样的文件，并在错误信息中指出是哪个前缀、该怎样解决。

# %%
torch.save(parallel_state, checkpoint_dir / "data_parallel.pth")
try:
    fc_model.load_network(checkpoint_dir / "data_parallel.pth")
except checkpoint_io.CheckpointError as error:
    print("fc_model.load_network refused the file:")
    # zh-CN: print("fc_model.load_network 拒绝了这个文件：")
    print(error)

# %% [markdown] lang="en"
# Better still, never write the prefix. For `DataParallel`, save the inner model's state dict (`wrapper.module.state_dict()`). For `torch.compile`, keep a reference to the model you compiled: `compiled = torch.compile(model)` trains the very same parameters, so `model.state_dict()` has them without a prefix. Or compile in place with `model.compile()`, which compiles the model's forward call without wrapping it, so its state dict keeps the model's own names.

# %% [markdown] lang="zh-CN"
# 更好的办法是根本不写入前缀。使用 `DataParallel` 时，保存内部模型的状态字典（`wrapper.module.state_dict()`）。使用 `torch.compile` 时，继续持有被编译的原模型的引用：`compiled = torch.compile(model)` 训练的正是同一组参数，所以 `model.state_dict()` 中就有这些参数，而且不带前缀。也可以用 `model.compile()` 就地编译：它只编译模型的前向调用，并不包装模型，所以状态字典中仍是模型原来的名字。

# %%
compiled = torch.compile(model, backend="eager")
assert all(a is b for a, b in zip(compiled.parameters(), model.parameters()))
in_place = copy.deepcopy(model)
in_place.compile(backend="eager")
for state in [nn.DataParallel(model).module.state_dict(), in_place.state_dict()]:
    assert list(state) == list(model.state_dict())
print(f"no prefixes: {list(in_place.state_dict())[:2]}")
# zh-CN: print(f"没有前缀：{list(in_place.state_dict())[:2]}")

# %% [markdown] lang="en"
# ## 4. Half precision
#
# The weights are `float32`, 4 bytes per number. Saved as `bfloat16` or `float16` they take 2 bytes, so the file is half the size. `load_state_dict` copies them into the `float32` parameters, converting back; the precision lost on the way shows in the accuracy, which we measure. (`bfloat16` keeps the range of `float32` with fewer digits; `float16` keeps more digits in a smaller range.)

# %% [markdown] lang="zh-CN"
# ## 4. 半精度
#
# 权重是 `float32` 类型，每个数占 4 个字节。以 `bfloat16` 或 `float16` 保存时每个数只占 2 个字节，所以文件大小减半。`load_state_dict` 把它们复制到 `float32` 参数中时会再转换回来；这一来一回丢掉的精度会让准确率有所变化，下面就来测量。（`bfloat16` 保留了 `float32` 的数值范围，但有效数字更少；`float16` 的有效数字更多，但范围更小。）

# %% tags=["nbval-ignore-output"]
full_path = checkpoint_dir / "float32.pth"
torch.save(model.state_dict(), full_path)
print(f"float32:  {os.path.getsize(full_path) / 1e6:.2f} MB, test accuracy {trained_accuracy:.4f}")
# zh-CN: print(f"float32：{os.path.getsize(full_path) / 1e6:.2f} MB，测试准确率 {trained_accuracy:.4f}")
for dtype in [torch.bfloat16, torch.float16]:
    path = checkpoint_dir / f"{str(dtype).removeprefix('torch.')}.pth"
    torch.save({name: tensor.to(dtype) for name, tensor in model.state_dict().items()}, path)
    reloaded = fc_model.Network(784, 10, [512, 256, 128]).to(device)
    reloaded.load_state_dict(torch.load(path, map_location=device, weights_only=True))
    assert reloaded.output.weight.dtype == torch.float32
    _, accuracy = fc_model.validation(reloaded, testloader, criterion)
    size_ratio = os.path.getsize(path) / os.path.getsize(full_path)
    print(f"{str(dtype).removeprefix('torch.')}: {os.path.getsize(path) / 1e6:.2f} MB "
    # zh-CN: print(f"{str(dtype).removeprefix('torch.')}：{os.path.getsize(path) / 1e6:.2f} MB"
          f"({size_ratio:.0%}), test accuracy {accuracy:.4f}")
          # zh-CN: f"（{size_ratio:.0%}），测试准确率 {accuracy:.4f}")
    assert size_ratio < 0.55 and abs(accuracy - trained_accuracy) < 0.01

# %% [markdown] lang="en"
# ## 5. Several objects in one checkpoint
#
# A general checkpoint holds everything that changes during training. Besides the model and the optimizer, that includes a learning-rate scheduler's `state_dict` and, when training uses a `GradScaler`, the scaler's (its loss scale and the number of steps in a row without an overflow). A setup with two networks, here a trained *teacher* and a small *student* learning from it, keeps both, each under its own key. Every object is restored into its own new object with its own `load_state_dict`.
#
# A `GradScaler` belongs to mixed precision in `float16`, where small gradients would round to zero; with `bfloat16`, which has the range of `float32`, autocast is used without a scaler. The student below takes three real steps, so that its optimizer has a state to save, with an enabled `GradScaler` (and no autocast, to keep the cell short): a disabled one (`enabled=False`) saves an empty dict, which would prove nothing.

# %% [markdown] lang="zh-CN"
# ## 5. 一个检查点中的多个对象
#
# 通用检查点包含训练过程中会变化的一切。除了模型和优化器，还包括学习率调度器的 `state_dict`；如果训练中用了 `GradScaler`，还包括缩放器的状态（损失缩放系数，以及连续没有出现溢出的步数）。如果训练中有两个网络，比如这里训练好的*教师*网络和向它学习的小*学生*网络，检查点就要包含这两个网络，每个放在自己的键下。恢复时，先为每个对象新建一个同类的对象，再调用它自己的 `load_state_dict` 载入保存的状态。
#
# `GradScaler` 用于 `float16` 的混合精度训练，因为在 `float16` 中较小的梯度会被舍入为零；`bfloat16` 的数值范围与 `float32` 相同，使用自动混合精度（autocast）时不需要缩放器。下面的学生网络真正训练了三步，好让它的优化器有状态可以保存；训练时启用了 `GradScaler`（为了让单元格简短，没有使用 autocast），因为禁用的缩放器（`enabled=False`）保存的只是一个空字典，什么也证明不了。

# %%
student = fc_model.Network(784, 10, [64]).to(device)
student_optimizer = optim.Adam(student.parameters(), lr=0.001)
scheduler = optim.lr_scheduler.StepLR(student_optimizer, step_size=2, gamma=0.5)
scaler = torch.amp.GradScaler(device.type)
for images, labels in itertools.islice(trainloader, 3):
    images, labels = images.to(device), labels.to(device)
    student_optimizer.zero_grad()
    scaler.scale(criterion(student(images), labels)).backward()
    scaler.step(student_optimizer)
    scaler.update()
    scheduler.step()

together_path = checkpoint_dir / "teacher_and_student.pth"
torch.save({"teacher": model.state_dict(), "student": student.state_dict(),
            "student_optimizer": student_optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict()}, together_path)

saved = torch.load(together_path, map_location=device, weights_only=True)
teacher_2 = fc_model.Network(784, 10, [512, 256, 128]).to(device)
student_2 = fc_model.Network(784, 10, [64]).to(device)
teacher_2.load_state_dict(saved["teacher"])
student_2.load_state_dict(saved["student"])
optimizer_2 = optim.Adam(student_2.parameters(), lr=0.001)
optimizer_2.load_state_dict(saved["student_optimizer"])
# another schedule (halving at every step) until the saved one is loaded
# zh-CN: 载入保存的状态之前，它用的是另一个调度方案（每一步都减半）
scheduler_2 = optim.lr_scheduler.StepLR(optimizer_2, step_size=1, gamma=0.5)
scheduler_2.load_state_dict(saved["scheduler"])
scaler_2 = torch.amp.GradScaler(device.type, init_scale=1.0)  # another scale, until it is loaded
                                                               # zh-CN: 加载之前是另一个缩放系数
scaler_2.load_state_dict(saved["scaler"])

print(f"teacher restored: {same_predictions(teacher_2)}")
# zh-CN: print(f"教师网络已恢复：{same_predictions(teacher_2)}")
print(f"scaler: {scaler_2.state_dict()}")
# zh-CN: print(f"缩放器：{scaler_2.state_dict()}")
print(f"learning rate: {scheduler_2.get_last_lr()} after {scheduler_2.last_epoch} scheduler steps")
# zh-CN: print(f"学习率：{scheduler_2.get_last_lr()}（调度器已执行 {scheduler_2.last_epoch} 步）")
assert scaler_2.state_dict() == scaler.state_dict() and scaler_2.get_scale() == 2.0 ** 16
assert len(optimizer_2.state) == 4 and all(
    torch.equal(optimizer_2.state[new][name], student_optimizer.state[old][name])
    for new, old in zip(student_2.parameters(), student.parameters())
    for name in ("step", "exp_avg", "exp_avg_sq"))
assert scheduler_2.last_epoch == scheduler.last_epoch == 3

# %% [markdown] lang="en"
# The learning rate alone would not prove that the scheduler was restored: `optimizer_2` already holds the learning rate it had when it was saved. What the scheduler adds is its position in the schedule, `last_epoch`: one more step must halve the learning rate now (step 4 of a schedule that halves it every 2 steps), in both runs.

# %% [markdown] lang="zh-CN"
# 仅凭学习率还不能证明调度器已经恢复：`optimizer_2` 本来就持有保存时的学习率。调度器额外保存的是它在调度方案中所处的位置 `last_epoch`：现在再走一步，学习率就必须减半（这个调度方案每 2 步把学习率减半，这一步是第 4 步），原来的调度器和恢复的调度器都应如此。

# %%
scheduler.step()
scheduler_2.step()
print(f"learning rate after one more step: {scheduler_2.get_last_lr()}")
# zh-CN: print(f"再走一步后的学习率：{scheduler_2.get_last_lr()}")
assert scheduler_2.get_last_lr() == scheduler.get_last_lr() == [0.001 * 0.5 ** 2]

# %% [markdown] lang="en"
# ## 6. A legacy checkpoint that `weights_only=True` refuses
#
# Many older training scripts saved NumPy values and the script's `argparse.Namespace` next to the weights. Here is such a file (we write it ourselves, so we know it is harmless):

# %% [markdown] lang="zh-CN"
# ## 6. 被 `weights_only=True` 拒绝的旧检查点
#
# 许多旧的训练脚本除了权重，还会保存 NumPy 的值和脚本的 `argparse.Namespace`。下面就是这样一个文件（它是我们自己写的，所以可以确定它无害）：

# %%
legacy_path = checkpoint_dir / "legacy.pth"
torch.save({"state_dict": model.state_dict(),
            "args": argparse.Namespace(lr=0.001, epochs=epochs, hidden=[512, 256, 128]),
            "best_accuracy": np.float64(trained_accuracy),
            "mean_std": np.array([0.5, 0.5])}, legacy_path)
try:
    torch.load(legacy_path, weights_only=True)
except pickle.UnpicklingError as error:
    print("torch.load(weights_only=True) refused the legacy file:")
    # zh-CN: print("torch.load(weights_only=True) 拒绝加载这个旧文件：")
    print(next(line.strip().split(". Please")[0] for line in str(error).splitlines()
               if "Unsupported global" in line))

# %% [markdown] lang="en"
# `weights_only=True` refuses every class and function beyond tensors and plain containers, because unpickling one can run code (lesson 3). Do not reach for `weights_only=False`. First list what the file refers to:

# %% [markdown] lang="zh-CN"
# 错误信息（`Unsupported global`）指出，`argparse.Namespace` 默认不在放行之列。`weights_only=True` 会拒绝张量和普通容器之外的所有类和函数，因为反序列化它们可能会执行代码（见第 3 课）。不要急着改用 `weights_only=False`，先列出这个文件引用了哪些类和函数：

# %%
names = torch.serialization.get_unsafe_globals_in_checkpoint(legacy_path)
print(sorted(names))

# %% [markdown] lang="en"
# Only NumPy's array machinery and `argparse.Namespace` (a file written with NumPy 1 names `numpy.core` where NumPy 2 writes `numpy._core`), from a file we trust. So we allow exactly these, for this one load, with `safe_globals`. A NumPy array also needs the class of its dtype (here `float64`), which the file does not name because it is created while loading; if you forget it, the error message names it.

# %% [markdown] lang="zh-CN"
# 文件引用的只有 NumPy 用来重建数组的几个类和函数（用 NumPy 1 写出的文件中是 `numpy.core`，NumPy 2 写出的则是 `numpy._core`）和 `argparse.Namespace`，而且这个文件来自我们信任的来源。所以我们用 `safe_globals` 只放行这几项，并且只在这一次加载中放行。NumPy 数组还需要它的 dtype 所属的类（这里是 `float64` 的类）：这个类是在加载过程中才创建的，所以文件中没有写出它的名字；如果忘了放行它，错误信息会指出它的名字。

# %%
assert all(name.startswith("numpy.") or name == "argparse.Namespace" for name in names)

def resolve(name):
    module, _, attribute = name.rpartition(".")
    return getattr(importlib.import_module(module), attribute)

allowed = [resolve(name) for name in names] + [type(np.dtype("float64"))]
with torch.serialization.safe_globals(allowed):
    legacy = torch.load(legacy_path, map_location=device, weights_only=True)
print({key: type(value).__name__ for key, value in legacy.items()})

# %% [markdown] lang="en"
# Then convert it, once, into a clean checkpoint: arrays become tensors, NumPy scalars Python numbers, the `Namespace` a dict. The new file loads with `weights_only=True` and no allowlist, anywhere.

# %% [markdown] lang="zh-CN"
# 然后把它一次性转换成干净的检查点：数组变成张量，NumPy 标量变成 Python 数值，`Namespace` 变成字典。新文件在任何地方都可以用 `weights_only=True` 直接加载，不需要放行任何东西。

# %%
def plain(value):
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, argparse.Namespace):
        return plain(vars(value))
    if isinstance(value, (list, tuple)):
        return type(value)(plain(item) for item in value)
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, np.generic):
        return value.item()
    return value

clean_path = checkpoint_dir / "converted.pth"
torch.save(plain(legacy), clean_path)
assert torch.serialization.get_unsafe_globals_in_checkpoint(clean_path) == []
clean = torch.load(clean_path, map_location=device, weights_only=True)
print(clean["args"], type(clean["best_accuracy"]).__name__, clean["mean_std"])

converted = fc_model.Network(784, 10, clean["args"]["hidden"]).to(device)
converted.load_state_dict(clean["state_dict"])
print(f"same predictions: {same_predictions(converted)}")
# zh-CN: print(f"预测相同：{same_predictions(converted)}")

# %% [markdown] lang="en"
# ## Summary
#
# - A file saved on a GPU loads anywhere with `map_location`; move the model with `.to(device)` before you create its optimizer and load the optimizer's state, which follows the parameters.
# - `strict=False` reports `missing_keys` and `unexpected_keys` but still refuses wrong shapes: to warm-start a new head, keep the tensors whose name and shape match, then freeze what you copied if you like.
# - Strip `module.` and `_orig_mod.` with `consume_prefix_in_state_dict_if_present` (it strips them from the keys that have them); avoid them by saving the inner model, the model you compiled, or a model compiled in place with `model.compile()`.
# - Half-precision files are half the size; measure the accuracy before you ship them.
# - One checkpoint can hold several models, optimizers, schedulers and scalers, each under its own key. A `GradScaler` is needed for `float16` mixed precision, not for `bfloat16`.
# - For a legacy file, list its globals with `get_unsafe_globals_in_checkpoint`, allow exactly those (and an array's dtype class) for a trusted file with `safe_globals`, and convert it once into tensors and plain values.

# %% [markdown] lang="zh-CN"
# ## 小结
#
# - 用 `map_location` 可以在任何地方加载 GPU 上保存的文件；先用 `.to(device)` 移动模型，再创建它的优化器并加载优化器的状态，这些状态会跟随参数所在的设备。
# - `strict=False` 会报告 `missing_keys` 和 `unexpected_keys`，但仍然拒绝形状不对的张量：要用已有权重初始化一个换了新输出层的网络，就只保留名字和形状都匹配的张量，需要的话再冻结复制过来的部分。
# - 用 `consume_prefix_in_state_dict_if_present` 去掉 `module.` 和 `_orig_mod.`（它只处理带有该前缀的键）；要避免这些前缀，就保存内部模型、被编译的原模型，或者用 `model.compile()` 就地编译的模型。
# - 半精度文件只有一半大小；发布之前先测量准确率。
# - 一个检查点可以包含多个模型、优化器、调度器和缩放器，每个放在自己的键下。`float16` 混合精度训练需要 `GradScaler`，`bfloat16` 则不需要。
# - 对于旧文件，先用 `get_unsafe_globals_in_checkpoint` 列出它引用的全局对象，对可信的文件用 `safe_globals` 只放行这些对象（外加数组 dtype 所属的类），再把它一次性转换成张量和普通的值。

# %% [markdown] lang="en"
# ## Exercises
#
# Each exercise asks you to write a function; the check cell right after it runs your function on small networks of its own and tells you what is missing or wrong. Run the next cell first: it imports what the exercises need, so they work even after a kernel restart, without the cells above. In the student edition each answer is `raise NotImplementedError()`: replace it with your code, run that cell, then run the check cell after it.

# %% [markdown] lang="zh-CN"
# ## 练习
#
# 每道练习都要求你写一个函数；紧跟在它后面的检查单元格会用自己创建的小网络运行你的函数，并告诉你缺了什么或错在哪里。请先运行下面这个单元格：它导入练习需要的一切，所以即使重启了内核、没有运行上面的单元格，也能做练习。在学生版中，每个答案都是 `raise NotImplementedError()`：把它换成你的代码，运行这个单元格，再运行它后面的检查单元格。

# %%
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from saveload_lessons import exercise_checks

check = exercise_checks.for_lesson(4, language="en")
# zh-CN: check = exercise_checks.for_lesson(4, language="zh-CN")

# %% [markdown] lang="en"
# **Exercise 4.1: whatever the prefix.** Write `load_any_prefix(model, state_dict)`, which loads into `model` a state dict saved from the plain model, from `nn.DataParallel` (`module.`), from `torch.compile` (`_orig_mod.`), or from a compiled `DataParallel` (`_orig_mod.module.`), strictly. The cell after it checks your function.

# %% [markdown] lang="zh-CN"
# **练习 4.1：无论什么前缀。** 编写 `load_any_prefix(model, state_dict)`，把一个状态字典严格地加载到 `model` 中；这个状态字典可能来自普通模型、`nn.DataParallel`（`module.`）、`torch.compile`（`_orig_mod.`），或者经过编译的 `DataParallel`（`_orig_mod.module.`）。后面的单元格会检查你的函数。

# %%
def load_any_prefix(model, state_dict):
    ### BEGIN SOLUTION
    for prefix in ("_orig_mod.", "module."):
        consume_prefix_in_state_dict_if_present(state_dict, prefix)
    model.load_state_dict(state_dict)
    ### END SOLUTION


# %%
check.exercise_1(load_any_prefix)

# %% [markdown] lang="en"
# **Exercise 4.2: take what fits.** Write `load_matching(model, state_dict)`: it loads the tensors whose name and shape match `model`'s, leaves the others of `model` as they are, and returns the sorted names of the entries of `state_dict` it skipped. The check loads a network with one number of classes into a network with another (the numbers change from run to run).

# %% [markdown] lang="zh-CN"
# **练习 4.2：只取合适的部分。** 编写 `load_matching(model, state_dict)`：它加载名字和形状都与 `model` 相符的张量，让 `model` 的其余张量保持原样，并按名字排序，返回 `state_dict` 中被跳过的键。检查单元格会把一个网络加载到类别数不同的另一个网络中（每次运行时类别数都不一样）。

# %%
def load_matching(model, state_dict):
    ### BEGIN SOLUTION
    own = model.state_dict()
    matching = {name: tensor for name, tensor in state_dict.items()
                if name in own and own[name].shape == tensor.shape}
    model.load_state_dict(matching, strict=False)
    return sorted(set(state_dict) - set(matching))
    ### END SOLUTION


# %%
check.exercise_2(load_matching)

# %% [markdown] lang="en"
# ## Further reading
#
# - PyTorch tutorial: [Saving and loading models](https://pytorch.org/tutorials/beginner/saving_loading_models.html), sections "Saving & Loading Model Across Devices" and "Warmstarting Model Using Parameters from a Different Model".
# - PyTorch notes: [Serialization semantics](https://pytorch.org/docs/stable/notes/serialization.html), on `map_location`, `mmap` and `weights_only`.
# - API: [`torch.load`](https://pytorch.org/docs/stable/generated/torch.load.html), [`Module.load_state_dict`](https://pytorch.org/docs/stable/generated/torch.nn.Module.html#torch.nn.Module.load_state_dict) (`strict`, `assign`), [`torch.compile`](https://pytorch.org/docs/stable/generated/torch.compile.html).

# %% [markdown] lang="zh-CN"
# ## 延伸阅读
#
# - PyTorch 教程：[Saving and loading models](https://pytorch.org/tutorials/beginner/saving_loading_models.html) 中的“Saving & Loading Model Across Devices”和“Warmstarting Model Using Parameters from a Different Model”两节。
# - PyTorch 说明文档：[Serialization semantics](https://pytorch.org/docs/stable/notes/serialization.html)（序列化语义），讲解 `map_location`、`mmap` 和 `weights_only`。
# - API：[`torch.load`](https://pytorch.org/docs/stable/generated/torch.load.html)、[`Module.load_state_dict`](https://pytorch.org/docs/stable/generated/torch.nn.Module.html#torch.nn.Module.load_state_dict)（`strict`、`assign`）、[`torch.compile`](https://pytorch.org/docs/stable/generated/torch.compile.html)。
