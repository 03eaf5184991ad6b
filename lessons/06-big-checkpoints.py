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
#       en: 6. Big checkpoints
#       zh-CN: 6. 大型检查点
#     summary:
#       en: loading a big checkpoint without a second copy in memory (`meta`, `mmap=True`, `assign=True`),
#         sharded safetensors files with an index, tied weights, a slice that saves its whole storage, and
#         reading one tensor of a file without the rest.
#       zh-CN: 加载大型检查点而不在内存中多留一份副本（`meta`、`mmap=True`、`assign=True`），带索引的分片 safetensors
#         文件，共享权重，会把整块存储都保存下来的切片，以及只读取文件中的一个张量而不读其余部分。
#     teaching_minutes: 75
#     quick_run:
#       epochs: 1
#       hidden_size: 1024
#       hidden_count: 3
#       max_shard_mb: 8
#       train_size: 64
# ---

# %% [markdown] lang="en"
# # Big Checkpoints
#
# The networks of lessons 1–5 weigh a few megabytes: any way of loading them works. A model of gigabytes is different. The usual way of loading holds its weights twice at the peak, a single file becomes unwieldy, and reading everything to use one tensor wastes minutes. Out-of-memory errors while *loading* are among the problems people bring most often to the PyTorch and Hugging Face issue trackers. This lesson makes a network of about 85 MB (`hidden_size` and `hidden_count` set its size: try a bigger one) and, on the CPU, meets each problem for real, measures it, and fixes it with the tool PyTorch or a well-kept library provides:
#
# 1. measure the two copies that the usual way of loading holds, and load with the `meta` device, `mmap=True` and `assign=True` instead;
# 2. save a state dict as several shard files with an index, read it back one shard at a time, and see what a stale index does;
# 3. keep tied weights (one tensor under two names) tied through `torch.save`, safetensors and a lean load;
# 4. avoid saving a slice's whole storage;
# 5. read one tensor, or a few rows of one, from a file without reading the rest.

# %% [markdown] lang="zh-CN"
# # 大型检查点
#
# 第 1–5 课的网络只有几 MB，用哪种方式加载都没问题。几 GB 的模型就不同了：常规的加载方式在峰值时会在内存中持有两份权重，单个文件变得难以处理，为了用一个张量而读取整个文件要白白花上几分钟。*加载*时内存不足，是 PyTorch 和 Hugging Face 的问题跟踪器上最常见的报告之一。本课构建一个大约 85 MB 的网络（它的大小由 `hidden_size` 和 `hidden_count` 决定：可以试试更大的），在 CPU 上真实地重现每个问题，测量它，再用 PyTorch 或一个维护良好的库提供的工具解决它：
#
# 1. 测量常规加载方式持有的两份副本，改用 `meta` 设备（元设备）、`mmap=True` 和 `assign=True` 加载；
# 2. 把状态字典保存成带索引的多个分片文件，一次一个分片地读回来，并看看过时的索引会造成什么后果；
# 3. 让共享权重（两个名字下的同一个张量）在 `torch.save`、safetensors 和精简加载之后依然共享；
# 4. 避免保存切片背后的整块存储；
# 5. 只从文件中读取一个张量或其中几行，而不读取其余部分。

# %% [markdown] lang="en"
# ## Imports and parameters

# %% [markdown] lang="zh-CN"
# ## 导入模块和参数

# %%
import inspect
import itertools
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import huggingface_hub
import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_file, save_model
from torch import nn, optim

import fc_model
import helper
from saveload_lessons import checkpoint_io, devices, messages, sharded_files
from saveload_lessons.checkpoint_io import CheckpointError

# %% tags=["parameters"]
epochs = 1                             # passes over the training images when fine-tuning the loaded network
                                       # zh-CN: 微调加载后的网络时遍历训练图像的轮数
device = "auto"                        # "auto", "cpu", "cuda" or "mps"
                                       # zh-CN: "auto"、"cpu"、"cuda" 或 "mps"
data_dir = "~/.pytorch/F_MNIST_data/"  # where torchvision keeps Fashion-MNIST
                                       # zh-CN: torchvision 存放 Fashion-MNIST 的目录
checkpoint_dir = "big-checkpoints"     # where this notebook writes its files
                                       # zh-CN: 本 notebook 写入文件的目录
hidden_size = 3072                     # units in each hidden layer of the big network
                                       # zh-CN: 大网络每个隐藏层的单元数
hidden_count = 3                       # hidden layers (3072 and 3: about 85 MB of weights)
                                       # zh-CN: 隐藏层的个数（3072 和 3：权重大约 85 MB）
max_shard_mb = 40                      # the most MiB of tensors in one shard file
                                       # zh-CN: 一个分片文件中张量的最大 MiB 数
train_size = 1024                      # training images for fine-tuning the loaded network
                                       # zh-CN: 微调加载后的网络所用的训练图像数量
seed = 6                               # fixes the initial weights and the data order
                                       # zh-CN: 固定初始权重和数据顺序

# %% tags=["nbval-ignore-output"]
# The companion modules speak the notebook's language
# zh-CN: 配套模块使用本 notebook 的语言
messages.set_language("en")
# zh-CN: messages.set_language("zh-CN")
fc_model.check_positive_int(epochs=epochs, hidden_size=hidden_size, hidden_count=hidden_count,
                            max_shard_mb=max_shard_mb, train_size=train_size)
if train_size > 60000:
    raise ValueError(f"train_size can be at most 60000 (the training set), got {train_size}")
    # zh-CN: raise ValueError(f"train_size 最多为 60000（训练集的大小），实际为 {train_size}")
layers = [hidden_size] * hidden_count
sizes = [784, *layers, 10]
weight_bytes = 4 * sum(n_in * n_out + n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))
max_shard_size = max_shard_mb * 2**20
if weight_bytes < 8 * 2**20:
    raise ValueError(f"hidden_size = {hidden_size} and hidden_count = {hidden_count} make {weight_bytes / 2**20:.1f} MiB "
    # zh-CN: raise ValueError(f"hidden_size = {hidden_size} 和 hidden_count = {hidden_count} 只有 {weight_bytes / 2**20:.1f} MiB "
                     "of weights: this lesson needs at least 8 MiB to measure memory")
                     # zh-CN: "的权重：本课至少需要 8 MiB 才能测量内存")
if max_shard_size >= weight_bytes:
    raise ValueError(f"max_shard_mb = {max_shard_mb} holds the whole network ({weight_bytes / 2**20:.1f} MiB): "
    # zh-CN: raise ValueError(f"max_shard_mb = {max_shard_mb} 能装下整个网络（{weight_bytes / 2**20:.1f} MiB）："
                     "choose a smaller value, so that it is saved in several shards")
                     # zh-CN: "请选一个更小的值，让网络保存成多个分片")
device = devices.get_device(device)
helper.prepare_fashion_mnist(data_dir)
checkpoint_dir = Path(checkpoint_dir)
checkpoint_dir.mkdir(parents=True, exist_ok=True)
torch.manual_seed(seed)
print(f"a network with {hidden_count} hidden layers of {hidden_size}: {weight_bytes / 2**20:.1f} MiB of weights; device: {device}")
# zh-CN: print(f"网络有 {hidden_count} 个隐藏层，每层 {hidden_size} 个单元：权重共 {weight_bytes / 2**20:.1f} MiB；设备：{device}")

# %% [markdown] lang="en"
# ## The big network
#
# Lesson 1's network, only much wider. Its weights stay random: for memory and files, a trained network weighs exactly the same, and training this one on a CPU would take longer than the whole lesson. `checkpoint_io.save_checkpoint` saves it as a general checkpoint (lesson 2), with its architecture, and writes it atomically: the file is replaced in one rename, never rewritten in place, which matters once a file is *mapped* into memory (section 1). The 64 test images saved next to it let other processes compare their predictions with `expected`.

# %% [markdown] lang="zh-CN"
# ## 大网络
#
# 还是第 1 课的网络，只是宽得多。它的权重保持随机：就内存和文件而言，训练好的网络大小完全一样；而在 CPU 上训练它，花的时间比整节课还长。`checkpoint_io.save_checkpoint` 把它连同架构保存成通用检查点（第 2 课），并以原子方式写入：文件通过一次重命名整体替换，从不就地改写；一旦文件被*映射*到内存中（第 1 节），这一点就很重要。旁边保存的 64 张测试图像，让其他进程可以把自己的预测与 `expected` 比较。

# %%
trainloader, testloader = helper.fashion_mnist_loaders(data_dir, train_size=train_size)
images, _ = next(iter(testloader))
images_path = checkpoint_dir / "images.pt"
torch.save(images, images_path)

big = fc_model.Network(784, 10, layers).eval()
checkpoint_path = checkpoint_dir / "big.pth"
checkpoint_io.save_checkpoint(checkpoint_path, big)
with torch.no_grad():
    expected = big(images)
file_bytes = checkpoint_path.stat().st_size
print(f"{checkpoint_path}: {file_bytes / 2**20:.1f} MiB, of which {weight_bytes / 2**20:.1f} MiB are weights")
# zh-CN: print(f"{checkpoint_path}：{file_bytes / 2**20:.1f} MiB，其中权重占 {weight_bytes / 2**20:.1f} MiB")
assert sum(tensor.nbytes for tensor in big.state_dict().values()) == weight_bytes
assert weight_bytes < file_bytes < 1.01 * weight_bytes + 2**16

# %% [markdown] lang="en"
# ## 1. Two copies in memory
#
# The usual way of loading (lesson 1) builds the network, which fills every weight with random numbers; `torch.load` then reads the file into a second set of tensors, and `load_state_dict` copies them into the first. At the peak, memory holds the weights twice, and the random initialisation was work thrown away. For a model of 7 billion parameters in `bfloat16`, that is 28 GB of memory for 14 GB of weights.
#
# To see the peak for real, each way of loading runs in a fresh Python process, started with `subprocess.run([sys.executable, "-c", program])` as in lesson 3: a process's peak memory never goes down by itself, so a measurement in this notebook would include everything done before. The child process imports what it needs and runs a tiny network once (PyTorch's own code is read from disk when first used, and counts as memory too), then notes its peak memory, loads the network, notes it again, runs one forward pass on the 64 images, notes it a third time, and saves its predictions for this notebook to compare.
#
# The peak memory is the most resident memory (RAM) the process has held, and the operating system keeps it. On Linux, the child reads its own high-water mark, `VmHWM` in `/proc/self/status`, after resetting it once its imports are done (writing `5` to `/proc/self/clear_refs`), so that only the load counts. The usual tool, `resource.getrusage(resource.RUSAGE_SELF).ru_maxrss`, would be wrong here: it cannot be reset, and Linux starts a new process's `ru_maxrss` at the memory of the process that launched it: here, this notebook, which holds more memory than the child ever will. Other systems (macOS, Windows) have neither `/proc/self/status` nor `/proc/self/clear_refs`: there the cells say that peak memory cannot be measured, and skip those checks.

# %% [markdown] lang="zh-CN"
# ## 1. 内存中的两份副本
#
# 常规的加载方式（第 1 课）先构建网络，把每个权重都填上随机数；接着 `torch.load` 把文件读进另一组张量，`load_state_dict` 再把它们复制到第一组中。在峰值时，内存中有两份权重，而随机初始化的工作白做了。对于 `bfloat16` 的 70 亿参数模型，这意味着 14 GB 的权重要占用 28 GB 内存。
#
# 为了真实地看到峰值，每种加载方式都在一个全新的 Python 进程中运行，和第 3 课一样用 `subprocess.run([sys.executable, "-c", program])` 启动：进程的峰值内存不会自己降下来，所以在本 notebook 中测量会把之前做过的一切都算进去。子进程导入需要的模块，先把一个很小的网络运行一次（PyTorch 自己的代码在第一次用到时才从磁盘读入，这些代码也占用内存），然后记下自己的峰值内存，加载网络后再记一次，在 64 张图像上做一次前向传播后记第三次，最后保存它的预测，供本 notebook 比较。
#
# 峰值内存（peak memory）是进程曾经持有的最多的常驻内存（RAM），由操作系统记录。在 Linux 上，子进程读取自己的最高水位，即 `/proc/self/status` 中的 `VmHWM`，并在导入完成之后先把它重置一次（向 `/proc/self/clear_refs` 写入 `5`），这样只有加载本身计入其中。常用的 `resource.getrusage(resource.RUSAGE_SELF).ru_maxrss` 在这里给不出正确的结果：它无法重置，而且 Linux 让新进程的 `ru_maxrss` 从启动它的进程的内存算起，在这里就是本 notebook 的内存，比子进程任何时候持有的都多。其他系统（macOS、Windows）既没有 `/proc/self/status`，也没有 `/proc/self/clear_refs`：在那里，单元格会说明无法测量峰值内存，并跳过相关的检查。

# %%
CHILD_START = '''\
import json, sys, time
import torch
import fc_model
import huggingface_hub
from safetensors import safe_open
from saveload_lessons import sharded_files

def peak_bytes():
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pass

images = torch.load(sys.argv[1], weights_only=True)
with torch.no_grad():
    fc_model.Network(784, 10, [16]).eval()(images).sum().item()
'''
MEASURE = '''
peaks = {}
reset_peak()
start = time.perf_counter()
peaks["start"] = peak_bytes()
'''
CHILD_END = '''
seconds = time.perf_counter() - start
torch.save(result, sys.argv[2])
print(json.dumps({"peaks": peaks, "seconds": seconds}))
'''
FORWARD = '''
peaks["loaded"] = peak_bytes()
with torch.no_grad():
    result = model.eval()(images)
peaks["forward"] = peak_bytes()
'''


def run_fresh(steps, warm_up=""):
    """Run the code `steps` in a fresh Python process, after `warm_up`. Returns how much its peak
    memory had grown during `steps`, in bytes, at each point it noted (None where it cannot be
    measured), the seconds the steps took, and the `result` they left."""
    result_path = checkpoint_dir / "child-result.pt"
    program = CHILD_START + warm_up + MEASURE + steps + CHILD_END
    finished = subprocess.run([sys.executable, "-c", program,
                               str(images_path), str(result_path)], capture_output=True, text=True)
    if finished.returncode != 0:
        raise RuntimeError(finished.stderr)
    report = json.loads(finished.stdout.splitlines()[-1])
    start = report["peaks"].pop("start")
    growth = {point: None if start is None else peak - start for point, peak in report["peaks"].items()}
    return growth, report["seconds"], torch.load(result_path, weights_only=True)


# %% [markdown] lang="en"
# Now the two ways. The usual one builds the network and copies the file's tensors into it. The lean one builds the network on the `meta` device, whose tensors have a shape and a dtype but no data (lesson 4): nothing is allocated, and nothing is initialised. `torch.load(..., mmap=True)` maps the file into memory instead of reading it: the tensors it returns point into the file, and the operating system reads a page of the file only when something touches it. `load_state_dict(..., assign=True)` then makes those tensors the network's parameters, without a copy (lesson 1).

# %% [markdown] lang="zh-CN"
# 下面比较两种方式。常规方式先构建网络，再把文件中的张量复制进去。精简方式在 `meta` 设备上构建网络：这个设备上的张量只有形状和 dtype，没有数据（第 4 课），所以既不分配内存，也不做初始化。`torch.load(..., mmap=True)` 不读取文件，而是把文件映射到内存中：它返回的张量指向文件，操作系统只在某一页被用到时才把它从文件中读进来。`load_state_dict(..., assign=True)` 再让这些张量直接成为网络的参数，不做复制（第 1 课）。

# %% tags=["nbval-ignore-output"]
ways = {
    "usual": f'''
checkpoint = torch.load({str(checkpoint_path)!r}, map_location="cpu", weights_only=True)
model = fc_model.Network(784, 10, {layers})
model.load_state_dict(checkpoint["model_state_dict"])
''',
    "lean": f'''
checkpoint = torch.load({str(checkpoint_path)!r}, map_location="cpu", mmap=True, weights_only=True)
with torch.device("meta"):
    model = fc_model.Network(784, 10, {layers})
model.load_state_dict(checkpoint["model_state_dict"], assign=True)
''',
}
measured = {way: run_fresh(steps + FORWARD) for way, steps in ways.items()}
labels = {"usual": "the usual way", "lean": "the lean way"}
# zh-CN: labels = {"usual": "常规方式", "lean": "精简方式"}

for way, (growth, seconds, predictions) in measured.items():
    assert torch.equal(predictions, expected)
    if growth["forward"] is None:
        peak = "cannot be measured here"
        # zh-CN: peak = "无法在这里测量"
    else:
        peak = f"{growth['forward'] / 2**20:.1f} MiB ({growth['forward'] / weight_bytes:.2f}x the weights)"
        # zh-CN: peak = f"{growth['forward'] / 2**20:.1f} MiB（权重的 {growth['forward'] / weight_bytes:.2f} 倍）"
    print(f"{labels[way]}: peak memory grew by {peak}, in {seconds:.2f} s; same predictions: True")
    # zh-CN: print(f"{labels[way]}：峰值内存增长 {peak}，用时 {seconds:.2f} 秒；预测相同：True")
usual, lean = measured["usual"][0], measured["lean"][0]
if usual["forward"] is None:
    print("peak memory cannot be measured on this system: the memory checks are skipped")
    # zh-CN: print("在这个系统上无法测量峰值内存：跳过与内存有关的检查")
else:
    ratio = lean["forward"] / usual["forward"]
    print(f"lean / usual: {ratio:.2f}; before the forward pass the lean way had read {lean['loaded'] / weight_bytes:.0%} of the weights")
    # zh-CN: print(f"精简 / 常规：{ratio:.2f}；在前向传播之前，精简方式只读入了权重的 {lean['loaded'] / weight_bytes:.0%}")
    assert ratio <= 0.75
    assert usual["loaded"] >= 1.5 * weight_bytes and lean["loaded"] <= 0.25 * weight_bytes

# %% [markdown] lang="en"
# The usual way's peak is about twice the weights; the lean way's about once, and before the forward pass hardly any of it was there: a mapped file is read only where it is touched. Time is saved too, on the random initialisation that the usual way throws away. Building the network on the CPU, against building it on `meta`:

# %% [markdown] lang="zh-CN"
# 常规方式的峰值大约是权重的两倍，精简方式大约是一倍，而且在前向传播之前，几乎还什么都没有读进来：映射的文件只有被用到的地方才会被读取。时间也省下了，省掉的就是常规方式白做的随机初始化。比较在 CPU 上和在 `meta` 上构建网络的用时：

# %% tags=["nbval-ignore-output"]
def seconds_to_build(where, repeats=2):
    # The fastest of a few builds of the big network on the device `where`
    # zh-CN: 在设备 `where` 上构建大网络几次，取最快的一次
    fastest = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.device(where):
            fc_model.Network(784, 10, layers)
        fastest = min(fastest, time.perf_counter() - start)
    return fastest

on_cpu, on_meta = seconds_to_build("cpu"), seconds_to_build("meta")
print(f"built on the CPU: {1000 * on_cpu:.0f} ms; on meta: {1000 * on_meta:.1f} ms")
# zh-CN: print(f"在 CPU 上构建：{1000 * on_cpu:.0f} 毫秒；在 meta 上构建：{1000 * on_meta:.1f} 毫秒")
assert on_meta < 0.25 * on_cpu

# %% [markdown] lang="en"
# ### What `assign=True` changes
#
# With `assign=True`, the tensors of the file *become* the parameters. Three things follow, and this notebook now loads the network the lean way to show each:
#
# - `map_location` decides where the network lives (copying into existing parameters leaves them where they were);
# - the dtypes come from the file: a `bfloat16` file gives a `bfloat16` network, where copying would have converted the values to the network's `float32`;
# - an optimizer created before the load holds the old parameters, the `meta` ones (lesson 1). Training with it does *nothing*: its step only updates the tensors it holds, and they have no gradients. Create the optimizer after the load.

# %% [markdown] lang="zh-CN"
# ### `assign=True` 改变了什么
#
# 使用 `assign=True` 时，文件中的张量*成为*参数本身。由此带来三点变化；本 notebook 现在用精简方式加载网络，逐一演示：
#
# - 网络在哪个设备上，由 `map_location` 决定（而复制到已有参数中时，参数留在原来的设备上）；
# - dtype 来自文件：`bfloat16` 的文件得到 `bfloat16` 的网络，而复制时这些值会被转换成网络的 `float32`；
# - 在加载之前创建的优化器持有的是旧参数，也就是 `meta` 设备上的那些（第 1 课）。用它训练*什么也不会发生*：它的每一步只更新自己持有的张量，而那些张量没有梯度。优化器要在加载之后创建。

# %%
with torch.device("meta"):
    model = fc_model.Network(784, 10, layers)
too_early = optim.Adam(model.parameters(), lr=3e-4)  # wrong: created before the load
                                                     # zh-CN: 错误：在加载之前创建
checkpoint = torch.load(checkpoint_path, map_location=device, mmap=True, weights_only=True)
model.load_state_dict(checkpoint["model_state_dict"], assign=True)
print(f"the network is on {devices.model_device(model)}")
# zh-CN: print(f"网络在 {devices.model_device(model)} 上")
assert devices.model_device(model) == device

tiny = fc_model.Network(784, 10, [64])
half_path = checkpoint_dir / "tiny-bfloat16.pth"
torch.save({name: tensor.to(torch.bfloat16) for name, tensor in tiny.state_dict().items()}, half_path)
half = torch.load(half_path, weights_only=True)
copied = fc_model.Network(784, 10, [64])
copied.load_state_dict(half)
with torch.device("meta"):
    assigned = fc_model.Network(784, 10, [64])
assigned.load_state_dict(half, assign=True)
print(f"a bfloat16 file copied: {copied.output.weight.dtype}; assigned: {assigned.output.weight.dtype}")
# zh-CN: print(f"bfloat16 文件，复制进去：{copied.output.weight.dtype}；用 assign=True 加载：{assigned.output.weight.dtype}")
assert copied.output.weight.dtype == torch.float32 and assigned.output.weight.dtype == torch.bfloat16

# %% [markdown] lang="en"
# Now one training step with the optimizer created too early, then a few with one created after the load: `epochs` passes over `train_size` training images. A few steps from random weights teach the network little (lesson 1 trained for whole epochs), so its test accuracy, printed at the end for the record, stays far from lesson 1's. What matters here is which optimizer changes the weights. Each epoch prints lesson 1's progress line.

# %% [markdown] lang="zh-CN"
# 下面先用过早创建的优化器训练一步，再用加载之后创建的优化器训练几步：遍历 `train_size` 张训练图像 `epochs` 轮。从随机权重出发只训练几步，网络学不到多少东西（第 1 课是按完整的轮训练的），所以最后输出的测试准确率仅供参考，远不及第 1 课。这里要看的是哪个优化器改变了权重。每一轮都会打印第 1 课的进度行（轮次、训练损失、测试损失、测试准确率）。

# %% tags=["nbval-ignore-output"]
criterion = nn.NLLLoss()

def fine_tune(model, optimizer, batches):
    # One pass over batches; returns the mean training loss
    # zh-CN: 遍历一次 batches；返回平均训练损失
    model.train()
    losses = []
    for batch, labels in batches:
        batch, labels = batch.to(device), labels.to(device)
        optimizer.zero_grad()
        loss = criterion(model(batch), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return sum(losses) / len(losses)

before = model.output.weight.detach().clone()
fine_tune(model, too_early, itertools.islice(trainloader, 1))
unchanged = torch.equal(model.output.weight, before)
print(f"after a step of the optimizer created too early, the weights are unchanged: {unchanged}")
# zh-CN: print(f"过早创建的优化器执行一步之后，权重没有变化：{unchanged}")
assert unchanged

test_batches = list(itertools.islice(testloader, 16))
optimizer = optim.Adam(model.parameters(), lr=3e-4)
for epoch in range(1, epochs + 1):
    train_loss = fine_tune(model, optimizer, trainloader)
    test_loss, accuracy = fc_model.validation(model, test_batches, criterion)
    print(fc_model.progress_line(epoch, epochs, train_loss, test_loss, accuracy))
on_disk = torch.load(checkpoint_path, mmap=True, weights_only=True)["model_state_dict"]
changed = not torch.equal(model.output.weight.cpu(), big.output.weight)
kept = torch.equal(on_disk["output.weight"], big.output.weight)
print(f"after {epochs} epoch(s) with the optimizer created after the load, the weights changed: {changed}; the file did not: {kept}")
# zh-CN: print(f"用加载之后创建的优化器训练 {epochs} 轮后，权重变了：{changed}；文件没有变：{kept}")
assert changed and kept
print(f"test accuracy on {sum(len(labels) for _, labels in test_batches)} test images after fine-tuning: {accuracy:.4f}")
# zh-CN: print(f"微调之后，在 {sum(len(labels) for _, labels in test_batches)} 张测试图像上的测试准确率：{accuracy:.4f}")

# %% [markdown] lang="en"
# On the CPU the network trained on the file's mapped tensors (on a GPU, on copies of them), and yet the file did not change: `torch.load` maps a file *privately* (copy-on-write), so a page that is written becomes the process's own copy, and the file stays as it was. Two more things to know about `mmap=True`:
#
# - it needs the zip format that `torch.save` has written since PyTorch 1.6; a file in the older format is refused (below);
# - the file must not change while it is mapped. The tensors read the file's pages when they are touched, so a file rewritten in place under a running model gives it wrong weights, or crashes the process when the file got shorter (on Windows the rewrite itself fails). Replace a checkpoint with a rename, as `checkpoint_io.save_checkpoint` does, never in place: the model keeps the old file until it lets it go.

# %% [markdown] lang="zh-CN"
# 在 CPU 上，网络直接在文件的映射张量上训练（在 GPU 上则是在它们的副本上训练），文件却没有变：`torch.load` 以*私有*方式（写时复制，copy-on-write）映射文件，某一页一旦被写入，就变成进程自己的副本，文件保持原样。关于 `mmap=True` 还有两点要知道：
#
# - 它需要 zip 格式，也就是 PyTorch 1.6 以来 `torch.save` 写出的格式；更早格式的文件会被拒绝（见下面的单元格）；
# - 文件在映射期间不能改变。张量在被用到时才读取文件中的页，所以如果模型还在使用时文件被就地改写，模型就会得到错误的权重；如果文件变短了，进程还会崩溃（在 Windows 上，改写本身就会失败）。替换检查点要像 `checkpoint_io.save_checkpoint` 那样用重命名，不要就地改写：在模型释放旧文件之前，它用的一直是旧文件。

# %%
old_format = checkpoint_dir / "old-format.pth"
torch.save(tiny.state_dict(), old_format, _use_new_zipfile_serialization=False)
try:
    torch.load(old_format, mmap=True, weights_only=True)
    refused = False
except RuntimeError:
    refused = True
print(f"torch.load(mmap=True) refuses a file in the format before PyTorch 1.6: {refused}")
# zh-CN: print(f"torch.load(mmap=True) 拒绝 PyTorch 1.6 之前格式的文件：{refused}")
assert refused

# %% [markdown] lang="en"
# You rarely need to write these lines yourself for the lessons' network: `fc_model.load_network` builds it on `meta` and assigns the file's tensors, after `checkpoint_io` has checked the file. It reads the file instead of mapping it, for the reason its docstring gives:

# %% [markdown] lang="zh-CN"
# 对于本课程的网络，很少需要自己写这几行：`fc_model.load_network` 在 `checkpoint_io` 检查过文件之后，就在 `meta` 上构建网络，并用 `assign=True` 放入文件中的张量。它读取文件而不做映射，原因写在下面打印出的文档字符串（docstring）里：一旦每个权重都被用到，映射并不比读取省内存；而映射的文件在模型存在期间不能改变，学习者却很可能覆盖模型所来自的检查点。

# %%
print(inspect.getsource(fc_model.load_network))
network = fc_model.load_network(checkpoint_path)
with torch.no_grad():
    same = torch.equal(network(images), expected)
print(f"fc_model.load_network: same predictions: {same}")
# zh-CN: print(f"fc_model.load_network：预测相同：{same}")
assert same

# %% [markdown] lang="en"
# ## 2. Sharded files with an index
#
# Big models are published as a folder of several safetensors files, the *shards*, plus a small JSON file, the *shard index* `model.safetensors.index.json`: its `weight_map` says which shard holds each tensor, and its `metadata.total_size` how many bytes the tensors take together. That is the Hugging Face convention, and `huggingface_hub` writes and reads it on a local folder, offline. `save_torch_state_dict` fills the shards in the order of the state dict, starting a new one before a tensor would take it past `max_shard_size` bytes (a tensor bigger than that gets a shard of its own):

# %% [markdown] lang="zh-CN"
# ## 2. 带索引的分片文件
#
# 大模型通常以一个文件夹的形式发布，其中有几个 safetensors 文件，即*分片*（shard），外加一个小小的 JSON 文件，即*分片索引*（shard index）`model.safetensors.index.json`。索引中的 `weight_map` 说明每个张量在哪个分片中，`metadata.total_size` 说明所有张量一共占多少字节。这是 Hugging Face 的约定，`huggingface_hub` 可以在本地文件夹上离线写入和读取这种格式。`save_torch_state_dict` 按状态字典的顺序填充分片，如果再放一个张量就会超过 `max_shard_size` 字节，就另起一个新分片（比这个值还大的张量单独占一个分片）：

# %%
shards_dir = checkpoint_dir / "sharded"
shards_dir.mkdir(exist_ok=True)
huggingface_hub.save_torch_state_dict(big.state_dict(), shards_dir, max_shard_size=max_shard_size)

index = json.loads((shards_dir / sharded_files.INDEX_FILE).read_text())
for file in sorted(shards_dir.iterdir()):
    print(f"{file.name:36}{file.stat().st_size:>14,} bytes")
    # zh-CN: print(f"{file.name:36}{file.stat().st_size:>14,} 字节")
print(f"metadata: {index['metadata']}")
print("weight_map:")
for tensor_name, file_name in itertools.islice(index["weight_map"].items(), 4):
    print(f"  {tensor_name:24} -> {file_name}")
print(f"  ... {len(index['weight_map'])} tensors in all")
# zh-CN: print(f"  …… 共 {len(index['weight_map'])} 个张量")

weight_map, state_dict = index["weight_map"], big.state_dict()
shard_names = sorted(set(weight_map.values()))
held = {shard: [name for name, file in weight_map.items() if file == shard] for shard in shard_names}
largest_shard = max(sum(state_dict[name].nbytes for name in names) for names in held.values())
assert len(shard_names) >= 2 and list(weight_map) == list(state_dict)
assert index["metadata"]["total_size"] == weight_bytes
assert all(sum(state_dict[name].nbytes for name in names) <= max_shard_size or len(names) == 1
           for names in held.values())

# %% [markdown] lang="en"
# `huggingface_hub.load_torch_model(model, folder)` reads it back into a network one shard at a time: each shard is loaded with safetensors, copied into the network with `load_state_dict(..., strict=False)`, and let go before the next. Pass `strict=True`: its default is `strict=False`, which would leave a tensor that no shard holds as it was, without a word. The companion module `sharded_files` reads the same folders: `load_sharded(folder)` returns the state dict.

# %% [markdown] lang="zh-CN"
# `huggingface_hub.load_torch_model(model, folder)` 一次一个分片地把它读回网络中：每个分片先用 safetensors 加载，再用 `load_state_dict(..., strict=False)` 复制到网络里，然后释放，再处理下一个。请传入 `strict=True`：它的默认值是 `strict=False`，那样的话，如果网络中的某个张量不在任何分片中，它会悄无声息地保持原样。配套模块 `sharded_files` 也能读取这样的文件夹：`load_sharded(folder)` 返回状态字典。

# %%
assert inspect.signature(huggingface_hub.load_torch_model).parameters["strict"].default is False
fresh = fc_model.Network(784, 10, layers).eval()
huggingface_hub.load_torch_model(fresh, shards_dir, strict=True)
with torch.no_grad():
    same = torch.equal(fresh(images), expected)
print(f"huggingface_hub.load_torch_model: same predictions: {same}")
# zh-CN: print(f"huggingface_hub.load_torch_model：预测相同：{same}")
read_back = sharded_files.load_sharded(shards_dir)
identical = read_back.keys() == state_dict.keys() and all(torch.equal(read_back[name], state_dict[name])
                                                           for name in state_dict)
print(f"sharded_files.load_sharded: the same tensors: {identical}")
# zh-CN: print(f"sharded_files.load_sharded：张量完全相同：{identical}")
assert same and identical

# %% [markdown] lang="en"
# One shard at a time, the load's peak is about the network plus the largest shard, instead of twice the network. And the two ideas combine: build on `meta`, then load the tensors that `load_sharded` returns with `assign=True`, and the peak is about the network alone. Measured as in section 1:

# %% [markdown] lang="zh-CN"
# 一次只处理一个分片，加载的峰值大约是网络本身加上最大的一个分片，而不是网络的两倍。这两种思路还可以结合起来：在 `meta` 上构建网络，再用 `assign=True` 放入 `load_sharded` 返回的张量，峰值就大约只有网络本身。和第 1 节一样测量：

# %% tags=["nbval-ignore-output"]
sharded_ways = {
    "huggingface_hub.load_torch_model": f'''
model = fc_model.Network(784, 10, {layers})
huggingface_hub.load_torch_model(model, {str(shards_dir)!r}, strict=True)
''',
    "meta + load_sharded + assign=True": f'''
with torch.device("meta"):
    model = fc_model.Network(784, 10, {layers})
model.load_state_dict(sharded_files.load_sharded({str(shards_dir)!r}), assign=True)
''',
}
for way, steps in sharded_ways.items():
    growth, seconds, predictions = run_fresh(steps + FORWARD)
    assert torch.equal(predictions, expected)
    if growth["forward"] is None:
        print(f"{way}: same predictions; peak memory cannot be measured here")
        # zh-CN: print(f"{way}：预测相同；这里无法测量峰值内存")
        continue
    print(f"{way}: peak memory grew by {growth['forward'] / 2**20:.1f} MiB, {growth['forward'] / usual['forward']:.2f}x the usual way's; same predictions")
    # zh-CN: print(f"{way}：峰值内存增长 {growth['forward'] / 2**20:.1f} MiB，是常规方式的 {growth['forward'] / usual['forward']:.2f} 倍；预测相同")
    if way.startswith("huggingface_hub"):
        assert growth["forward"] <= 1.25 * (weight_bytes + largest_shard) and growth["forward"] < usual["forward"]
    else:
        assert growth["forward"] / usual["forward"] <= 0.75

# %% [markdown] lang="en"
# ### A stale index
#
# The index and the shards are separate files, so they can disagree: a shard that was not downloaded, shards of two saves mixed in one folder, an index edited by hand or by an attacker. Here are three such folders, copies of a small network's shards (so that the copies cost little), each broken in one way:
#
# - a shard is missing;
# - the index puts a tensor in a shard other than the one that holds it, the sign of files from two saves;
# - the index names a file outside the folder (`../...`): such an index could make the loader read any file it likes.

# %% [markdown] lang="zh-CN"
# ### 过时的索引
#
# 索引和分片是各自独立的文件，所以它们可能不一致：某个分片没有下载下来，同一个文件夹里混进了两次保存的分片，或者索引被人手工修改过，甚至被攻击者改过。下面是三个这样的文件夹，都复制自一个小网络的分片（这样复制的代价很小），每个文件夹各有一处损坏：
#
# - 缺少一个分片；
# - 索引说某个张量在另一个分片中，而不是真正包含它的那个分片：这说明文件来自两次不同的保存；
# - 索引指向文件夹之外的文件（`../...`），这样的索引可以让加载程序去读任何文件。

# %%
small = fc_model.Network(784, 10, [512, 256, 128])
small_dir = checkpoint_dir / "small-sharded"
small_dir.mkdir(exist_ok=True)
huggingface_hub.save_torch_state_dict(small.state_dict(), small_dir, max_shard_size=2**20)
small_shards = sorted(set(sharded_files.read_index(small_dir).values()))


def broken_copy(name, change_index=None):
    # A copy of the small network's folder, with its index changed by change_index(weight_map)
    # zh-CN: 小网络文件夹的一个副本，用 change_index(weight_map) 修改它的索引
    folder = checkpoint_dir / name
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(small_dir, folder)
    if change_index is not None:
        index_path = folder / sharded_files.INDEX_FILE
        index = json.loads(index_path.read_text())
        change_index(index["weight_map"])
        index_path.write_text(json.dumps(index, indent=2))
    return folder


missing = broken_copy("stale-missing-shard")
(missing / small_shards[-1]).unlink()
moved = broken_copy("stale-moved-tensor", lambda weight_map: weight_map.update({"output.weight": small_shards[0]}))
outside = broken_copy("stale-outside", lambda weight_map: weight_map.update(
    {name: f"../{small_dir.name}/{file}" for name, file in weight_map.items() if file == small_shards[-1]}))
print(f"{small_dir} holds {small_shards}; output.weight is in {sharded_files.read_index(small_dir)['output.weight']}")
# zh-CN: print(f"{small_dir} 中有 {small_shards}；output.weight 在 {sharded_files.read_index(small_dir)['output.weight']} 中")

# %% [markdown] lang="en"
# `sharded_files.load_sharded` checks the index and the header of every shard before it loads a single tensor, and turns each problem into a `CheckpointError` that names the file at fault:

# %% [markdown] lang="zh-CN"
# `sharded_files.load_sharded` 在加载任何张量之前，先检查索引和每个分片的文件头，并把每个问题都变成一个指出出错文件的 `CheckpointError`：

# %%
for folder in (missing, moved, outside):
    try:
        sharded_files.load_sharded(folder)
        raise AssertionError(f"{folder} was loaded")
    except CheckpointError as error:
        print(f"{folder.name}:\n  {error}\n")

# %% [markdown] lang="en"
# What does `huggingface_hub` check? Its source, in the version installed here (`huggingface_hub/serialization/_torch.py`, in `load_torch_model` and `_load_sharded_checkpoint`; older versions check less), says: the index must be at most 10 MiB of JSON, an object whose `weight_map` maps names to strings; a shard's name may have no drive, no root and no `..`, and must have the extension of the format the index is for (`.safetensors`, so that it cannot point to a pickle file); and each shard is read with safetensors (with the default `safe=True`), never unpickled. With `strict=True`, it compares the names the shards actually held with the network's, once every shard is loaded (so a failed load may leave the network partly changed). It does not check that each tensor is in the shard the index names, nor `total_size`. So, with the version installed here, of the three folders it refuses the file outside (`ValueError`) and the missing shard (`FileNotFoundError`, when it gets to it); and with any version it loads the moved tensor without a word, from wherever it is:

# %% [markdown] lang="zh-CN"
# `huggingface_hub` 检查了什么？这里安装的版本的源代码（`huggingface_hub/serialization/_torch.py` 中的 `load_torch_model` 和 `_load_sharded_checkpoint`；更早的版本检查得更少）表明：索引最多是 10 MiB 的 JSON，必须是一个对象，其中的 `weight_map` 把名字映射到字符串；分片的文件名不能带驱动器、根目录或 `..`，扩展名必须与索引所对应的格式一致（`.safetensors`，这样索引就不能指向 pickle 文件）；每个分片都用 safetensors 读取（使用默认的 `safe=True` 时），绝不用 pickle 反序列化。使用 `strict=True` 时，它会在所有分片都加载完之后，把分片中实际存在的名字与网络的名字相比较（所以加载失败时，网络可能已经被改掉了一部分）。它不检查每个张量是否在索引所说的分片中，也不检查 `total_size`。所以对这三个文件夹，这里安装的版本会拒绝指向文件夹之外的文件（`ValueError`）和缺失的分片（读到它时报 `FileNotFoundError`）；而无论哪个版本，被挪动的张量都会被悄无声息地加载，不管它实际在哪个分片里：

# %% tags=["nbval-ignore-output"]
outcome = {}
for folder in (missing, moved, outside):
    target = fc_model.Network(784, 10, [512, 256, 128])
    try:
        huggingface_hub.load_torch_model(target, folder, strict=True)
        outcome[folder.name] = "loaded"
    except (FileNotFoundError, ValueError) as error:
        outcome[folder.name] = type(error).__name__
print(outcome)
# No version checks where a tensor is: the moved tensor always loads
# zh-CN: 没有哪个版本检查张量在哪个分片中：被挪动的张量总能加载
assert outcome["stale-moved-tensor"] == "loaded"

# %% [markdown] lang="en"
# ## 3. Shared (tied) weights
#
# Language models often use one matrix twice: the embedding that turns a token into a vector, and the output layer that turns a vector back into a score per token. The two layers *share* one parameter (the weights are *tied*): the module's `state_dict` lists it under both names, but it is one tensor, and `model.parameters()` yields it once. A small such module:

# %% [markdown] lang="zh-CN"
# ## 3. 共享权重
#
# 语言模型经常把同一个矩阵用两次：嵌入层（embedding）把词元变成向量，输出层再把向量变回每个词元的分数。这两层*共享*一个参数（这叫权重绑定，weight tying）：模块的 `state_dict` 在两个名字下列出它，但它只是一个张量，`model.parameters()` 也只给出一次。下面是一个这样的小模块：

# %%
class TiedLanguageModel(nn.Module):
    def __init__(self, vocabulary=1000, width=64):
        super().__init__()
        self.embedding = nn.Embedding(vocabulary, width)
        self.hidden = nn.Linear(width, width)
        self.output = nn.Linear(width, vocabulary, bias=False)
        self.output.weight = self.embedding.weight  # tied: one parameter, two names
                                                    # zh-CN: 绑定：一个参数，两个名字

    def forward(self, tokens):
        return self.output(torch.relu(self.hidden(self.embedding(tokens))))


tied = TiedLanguageModel()
tokens = torch.randint(0, 1000, (4, 8))
print(f"names in the state dict: {list(tied.state_dict())}; parameters: {len(list(tied.parameters()))}")
# zh-CN: print(f"状态字典中的名字：{list(tied.state_dict())}；参数个数：{len(list(tied.parameters()))}")
assert tied.output.weight is tied.embedding.weight and len(list(tied.parameters())) == 3

# %% [markdown] lang="en"
# `torch.save` keeps the sharing: it saves each storage once, however many tensors use it, and `torch.load` gives back tensors that share one storage again. The file holds the matrix once:

# %% [markdown] lang="zh-CN"
# `torch.save` 保留这种共享：不管有多少个张量使用同一块存储，它都只保存一次；`torch.load` 返回的张量也再次共享同一块存储。文件中这个矩阵只有一份：

# %%
tied_path = checkpoint_dir / "tied.pth"
torch.save(tied.state_dict(), tied_path)
loaded = torch.load(tied_path, weights_only=True)
shared = loaded["output.weight"].data_ptr() == loaded["embedding.weight"].data_ptr()
unique_bytes = sum(parameter.nbytes for parameter in tied.parameters())
print(f"one storage after loading: {shared}; file: {tied_path.stat().st_size:,} bytes for {unique_bytes:,} bytes of distinct parameters")
# zh-CN: print(f"加载后共用一块存储：{shared}；文件 {tied_path.stat().st_size:,} 字节，不重复的参数共 {unique_bytes:,} 字节")
assert shared and tied_path.stat().st_size < 1.1 * unique_bytes + 4096

# %% [markdown] lang="en"
# safetensors stores each name's tensor separately and cannot express sharing, so `save_file` refuses such a state dict rather than write the matrix twice. Its message, in English, is safetensors' own: "Some tensors share memory, this will lead to duplicate memory on disk and potential differences when loading them again", followed by the names that share, and the advice to use `save_model`.

# %% [markdown] lang="zh-CN"
# safetensors 分别保存每个名字下的张量，无法表达共享，所以 `save_file` 宁可拒绝这样的状态字典，也不把矩阵写两遍。下面的英文信息来自 safetensors 本身：“Some tensors share memory, this will lead to duplicate memory on disk and potential differences when loading them again”，意思是有些张量共享内存，这会导致磁盘上有重复的数据，再次加载时它们还可能变得不一样；后面列出共享内存的名字，并建议改用 `save_model`。

# %%
refused_path = checkpoint_dir / "tied-refused.safetensors"
try:
    save_file(tied.state_dict(), refused_path)
except RuntimeError as error:
    print(str(error).strip().split(":")[0])
    sharing = [name for name, tensor in tied.state_dict().items() if tensor.data_ptr() == tied.embedding.weight.data_ptr()]
    print(f"names that share: {sharing}")
    # zh-CN: print(f"共享内存的名字：{sharing}")
assert not refused_path.exists()

# %% [markdown] lang="en"
# `save_model(model, path)` saves each shared tensor once, under one name, and notes the other names in the file's metadata; `load_model(model, path)` loads it into a network whose layers are already tied, so after loading the two names are still one tensor. `huggingface_hub.save_torch_state_dict` of section 2 does the same, with the other names in the index's metadata:

# %% [markdown] lang="zh-CN"
# `save_model(model, path)` 只在一个名字下保存每个共享的张量，并在文件的元数据中记下其他名字；`load_model(model, path)` 把它加载到各层已经绑定好的网络中，所以加载之后，两个名字下仍然是同一个张量。第 2 节的 `huggingface_hub.save_torch_state_dict` 也是这样做的，其他名字记在索引的元数据中：

# %%
tied_safetensors = checkpoint_dir / "tied.safetensors"
save_model(tied, tied_safetensors)
with safe_open(tied_safetensors, framework="pt") as file:
    print(f"tensors in the file: {list(file.keys())}; metadata: {file.metadata()}")
    # zh-CN: print(f"文件中的张量：{list(file.keys())}；元数据：{file.metadata()}")
    assert "output.weight" not in file.keys()
restored = TiedLanguageModel()
load_model(restored, tied_safetensors)
print(f"still one tensor: {restored.output.weight is restored.embedding.weight}")
# zh-CN: print(f"仍然是同一个张量：{restored.output.weight is restored.embedding.weight}")
with torch.no_grad():
    assert torch.equal(restored(tokens), tied(tokens))
assert restored.output.weight is restored.embedding.weight

tied_sharded = checkpoint_dir / "tied-sharded"
tied_sharded.mkdir(exist_ok=True)
huggingface_hub.save_torch_state_dict(tied.state_dict(), tied_sharded, max_shard_size=2**17)
tied_index = json.loads((tied_sharded / sharded_files.INDEX_FILE).read_text())
print(f"huggingface_hub: tensors in the index: {list(tied_index['weight_map'])}; metadata: {tied_index['metadata']}")
# zh-CN: print(f"huggingface_hub：索引中的张量：{list(tied_index['weight_map'])}；元数据：{tied_index['metadata']}")
assert "output.weight" not in tied_index["weight_map"] and tied_index["metadata"]["output.weight"] == "embedding.weight"

# %% [markdown] lang="en"
# The lean load of section 1 breaks the tie. `assign=True` puts a new parameter under each name, so the two layers get two parameters (here sharing memory, since `torch.load` kept the sharing; from a file that holds the matrix twice, not even that). Training would then update them separately. After a lean load, tie the layers again, as `transformers` does with its `tie_weights()`:

# %% [markdown] lang="zh-CN"
# 第 1 节的精简加载会破坏绑定。`assign=True` 在每个名字下放入一个新参数，于是两层得到了两个参数（这里它们共享内存，因为 `torch.load` 保留了共享；如果文件中保存了两份矩阵，连这一点都没有）。这样训练时，两者会被分别更新。精简加载之后，要重新绑定这两层，就像 `transformers` 用它的 `tie_weights()` 所做的那样：

# %%
with torch.device("meta"):
    lean_tied = TiedLanguageModel()
lean_tied.load_state_dict(torch.load(tied_path, mmap=True, weights_only=True), assign=True)
print(f"after assign=True: one tensor: {lean_tied.output.weight is lean_tied.embedding.weight}, parameters: {len(list(lean_tied.parameters()))}")
# zh-CN: print(f"assign=True 之后：是同一个张量：{lean_tied.output.weight is lean_tied.embedding.weight}，参数个数：{len(list(lean_tied.parameters()))}")
assert lean_tied.output.weight is not lean_tied.embedding.weight and len(list(lean_tied.parameters())) == 4
assert lean_tied.output.weight.data_ptr() == lean_tied.embedding.weight.data_ptr()
lean_tied.output.weight = lean_tied.embedding.weight  # tie them again
                                                      # zh-CN: 重新绑定
print(f"tied again: one tensor: {lean_tied.output.weight is lean_tied.embedding.weight}, parameters: {len(list(lean_tied.parameters()))}")
# zh-CN: print(f"重新绑定后：是同一个张量：{lean_tied.output.weight is lean_tied.embedding.weight}，参数个数：{len(list(lean_tied.parameters()))}")
with torch.no_grad():
    assert torch.equal(lean_tied(tokens), tied(tokens))
assert len(list(lean_tied.parameters())) == 3

# %% [markdown] lang="en"
# ## 4. A slice saves its whole storage
#
# A tensor is a view of a *storage*, a block of memory that other tensors may view too. `torch.save` saves storages, not views, so that views stay views after loading (that is how tied weights stay tied). The other side: saving ten rows of a big matrix saves the whole matrix. Here, ten rows of one of the big network's hidden weights:

# %% [markdown] lang="zh-CN"
# ## 4. 切片会保存整块存储
#
# 张量是一块*存储*的视图（view）：存储是一块内存，其他张量也可能是它的视图。`torch.save` 保存的是存储，而不是视图，这样加载之后视图仍然是视图（共享权重正是这样保持共享的）。代价是：保存一个大矩阵中的十行，保存下来的却是整个矩阵。下面取大网络一个隐藏层权重中的十行：

# %%
weight = big.hidden_layers[1].weight.detach()
rows = weight[:10]
slice_path, clone_path = checkpoint_dir / "ten-rows-slice.pth", checkpoint_dir / "ten-rows-clone.pth"
torch.save(rows, slice_path)
torch.save(rows.clone(), clone_path)
rows_safetensors = checkpoint_dir / "ten-rows.safetensors"
save_file({"rows": rows}, rows_safetensors)
print(f"ten rows: {rows.nbytes:,} bytes, in a storage of {rows.untyped_storage().nbytes():,} bytes")
# zh-CN: print(f"十行：{rows.nbytes:,} 字节，所在的存储有 {rows.untyped_storage().nbytes():,} 字节")
for path in (slice_path, clone_path, rows_safetensors):
    print(f"{path.name:28}{path.stat().st_size:>12,} bytes")
    # zh-CN: print(f"{path.name:28}{path.stat().st_size:>12,} 字节")
assert slice_path.stat().st_size >= weight.nbytes > 10 * clone_path.stat().st_size
assert clone_path.stat().st_size < rows.nbytes + 4096 and rows_safetensors.stat().st_size < rows.nbytes + 1024

# %% [markdown] lang="en"
# `.clone()` copies the rows into a storage of their own, and the file holds just them. safetensors writes only the elements of each tensor, even of a view (a contiguous one: it refuses the others), which is also why it cannot keep views, or sharing. The same trap hides in a state dict you build by hand from pieces of tensors: `clone()` each piece before `torch.save`.
#
# ## 5. Reading part of a file
#
# Sometimes you need one tensor of a big file, or a few rows of one: to inspect a layer, or to let each process read only its part. `safe_open` reads a safetensors file's header (every tensor's name, dtype, shape and place in the file) and nothing else; `get_tensor(name)` then gives one tensor, and `get_slice(name)[a:b]` a part of one, without the rest of the file. Here with the big network saved as safetensors by `checkpoint_io.save_safetensors` (lesson 3):

# %% [markdown] lang="zh-CN"
# `.clone()` 把这十行复制到一块属于它们自己的存储中，文件里就只有它们。safetensors 只写出每个张量自身的元素，即使它是视图（必须是连续的视图，不连续的它会拒绝），这也是它无法保留视图或共享关系的原因。自己用张量的一部分拼出来的状态字典里也藏着同样的陷阱：`torch.save` 之前，对每一部分都调用 `clone()`。
#
# ## 5. 只读取文件的一部分
#
# 有时只需要大文件中的一个张量，或者一个张量中的几行：比如查看某一层，或者让每个进程只读取属于自己的那部分。`safe_open` 只读取 safetensors 文件的文件头（每个张量的名字、dtype、形状以及在文件中的位置），别的什么都不读；随后 `get_tensor(name)` 给出一个张量，`get_slice(name)[a:b]` 给出一个张量的一部分，都不读取文件的其余部分。下面用 `checkpoint_io.save_safetensors`（第 3 课）把大网络保存成 safetensors 文件来演示：

# %%
safetensors_path = checkpoint_dir / "big.safetensors"
checkpoint_io.save_safetensors(safetensors_path, big)
name = "hidden_layers.0.weight"
with safe_open(safetensors_path, framework="pt") as file:
    names = list(file.keys())
    piece = file.get_slice(name)
    shape = piece.get_shape()
    first_rows = piece[:16]
    whole = file.get_tensor(name)
print(f"{len(names)} tensors in the file; {name} has the shape {shape}; the slice [:16] has the shape {list(first_rows.shape)}")
# zh-CN: print(f"文件中有 {len(names)} 个张量；{name} 的形状是 {shape}；切片 [:16] 的形状是 {list(first_rows.shape)}")
assert torch.equal(whole, state_dict[name]) and torch.equal(first_rows, state_dict[name][:16])
assert first_rows.clone().untyped_storage().nbytes() == first_rows.nbytes

# %% [markdown] lang="en"
# Depending on the safetensors version, such a slice may be a view of a larger storage: `clone()` it before you `torch.save` it, as in section 4. What do these reads cost? A fresh process notes its peak memory after reading the header, then after using 16 rows of one weight, then the whole weight, then every tensor of the file:

# %% [markdown] lang="zh-CN"
# 取决于 safetensors 的版本，这样的切片可能是某块更大存储的视图：要 `torch.save` 它，先 `clone()`，就像第 4 节那样。这些读取各要花多少内存？一个全新的进程依次在读取文件头之后、用到一个权重的 16 行之后、用到整个权重之后，以及用到文件中每个张量之后，记下自己的峰值内存：

# %% tags=["nbval-ignore-output"]
def reads(path, tensor):
    # Read a safetensors file in steps, noting the peak memory after each
    # zh-CN: 分几步读取一个 safetensors 文件，每一步之后记下峰值内存
    return f'''
with safe_open({str(path)!r}, framework="pt") as file:
    names = list(file.keys())
    peaks["header"] = peak_bytes()
    rows = file.get_slice({tensor!r})[:16]
    rows.sum().item()
    peaks["16 rows"] = peak_bytes()
    one = file.get_tensor({tensor!r})
    one.sum().item()
    peaks["one tensor"] = peak_bytes()
    everything = [file.get_tensor(name) for name in names]
    sum(tensor.sum().item() for tensor in everything)
    peaks["every tensor"] = peak_bytes()
'''

# The same reads of a small file first, so that the code they run is not counted
# zh-CN: 先对一个小文件做同样的读取，这样读取所运行的代码就不会算进去
warm_up = "peaks = {}" + reads(tied_safetensors, "embedding.weight")
growth, seconds, _ = run_fresh(reads(safetensors_path, name) + "result = None", warm_up)
if growth["every tensor"] is None:
    print("peak memory cannot be measured on this system: the memory checks are skipped")
    # zh-CN: print("在这个系统上无法测量峰值内存：跳过与内存有关的检查")
else:
    points = {"header": "after the header", "16 rows": "after 16 rows", "one tensor": "after one tensor",
    # zh-CN: points = {"header": "读取文件头之后", "16 rows": "用到 16 行之后", "one tensor": "用到一个张量之后",
              "every tensor": "after every tensor"}
              # zh-CN: "every tensor": "用到每个张量之后"}
    for point, grown in growth.items():
        print(f"{points[point]}: {grown / 2**20:.2f} MiB ({grown / weight_bytes:.1%} of the file's tensors)")
        # zh-CN: print(f"{points[point]}：{grown / 2**20:.2f} MiB（文件中张量的 {grown / weight_bytes:.1%}）")
    tensor_bytes = state_dict[name].nbytes
    assert growth["header"] <= 0.25 * weight_bytes
    assert growth["16 rows"] - growth["header"] <= 0.25 * tensor_bytes
    assert 0.5 * tensor_bytes <= growth["one tensor"] - growth["16 rows"] <= 2.5 * tensor_bytes
    assert growth["every tensor"] >= 0.8 * weight_bytes

# %% [markdown] lang="en"
# Memory grows with what is used, not with the size of the file: the header costs a little (the operating system reads and maps a file in pieces of a few pages, often more), 16 rows hardly more, one tensor about its own size, and only every tensor costs the whole file. `torch.load(..., mmap=True)` behaves the same with a `torch.save` file (section 1: before the forward pass, the lean load had read almost nothing); without `mmap=True`, `torch.load` reads the whole file whatever you use.

# %% [markdown] lang="zh-CN"
# 内存随用到的内容增长，而不是随文件大小增长：文件头只花一点内存（操作系统读取和映射文件时，每次至少处理几页，往往更多），16 行几乎没有多花，一个张量花的大约就是它自身的大小，只有用到每个张量时才花掉整个文件的大小。对于 `torch.save` 写出的文件，`torch.load(..., mmap=True)` 的表现也一样（第 1 节：在前向传播之前，精简加载几乎什么都还没读）；不用 `mmap=True` 时，不管你用到什么，`torch.load` 都会读取整个文件。

# %% [markdown] lang="en"
# ## Summary
#
# - The usual way of loading holds the weights twice at the peak and initialises weights it overwrites. Build the network on the `meta` device, load with `torch.load(..., mmap=True, weights_only=True)`, and hand the tensors over with `load_state_dict(..., assign=True)`: the peak is about the weights once. `fc_model.load_network` does this (reading, not mapping) for the lessons' network.
# - With `assign=True`, `map_location` decides the device and the file decides the dtypes; create the optimizer after the load. `mmap=True` needs the zip format and a file that does not change while it is mapped: replace checkpoints with a rename.
# - Big models come as shard files and a shard index (`weight_map`, `metadata.total_size`). `huggingface_hub.save_torch_state_dict(..., max_shard_size=...)` writes them; `huggingface_hub.load_torch_model(..., strict=True)` reads them one shard at a time (it does not check where each tensor is, nor `total_size`); `sharded_files.load_sharded` checks everything first and names the file at fault.
# - Tied weights survive `torch.save` and safetensors' `save_model`/`load_model`; `save_file` refuses them, and a lean load with `assign=True` unties them: tie them again.
# - `torch.save` of a slice writes its whole storage: `clone()` first.
# - `safe_open` with `get_tensor` or `get_slice` reads one tensor or part of one; memory grows with what you use, not with the file.

# %% [markdown] lang="zh-CN"
# ## 小结
#
# - 常规的加载方式在峰值时持有两份权重，还会初始化那些随后就被覆盖的权重。应当在 `meta` 设备上构建网络，用 `torch.load(..., mmap=True, weights_only=True)` 加载，再用 `load_state_dict(..., assign=True)` 把张量交给网络：峰值大约只有一份权重。对于本课程的网络，`fc_model.load_network` 就是这样做的（读取文件，不做映射）。
# - 使用 `assign=True` 时，设备由 `map_location` 决定，dtype 由文件决定；优化器要在加载之后创建。`mmap=True` 需要 zip 格式，而且文件在映射期间不能改变：替换检查点要用重命名。
# - 大模型以分片文件加分片索引（`weight_map`、`metadata.total_size`）的形式提供。`huggingface_hub.save_torch_state_dict(..., max_shard_size=...)` 写出它们；`huggingface_hub.load_torch_model(..., strict=True)` 一次一个分片地读取它们（它不检查每个张量在哪个分片中，也不检查 `total_size`）；`sharded_files.load_sharded` 先检查一切，并指出出错的文件。
# - 共享权重在 `torch.save` 以及 safetensors 的 `save_model`/`load_model` 之后依然共享；`save_file` 拒绝保存它们，而用 `assign=True` 的精简加载会解除绑定：加载后要重新绑定。
# - 对切片调用 `torch.save` 会写出它的整块存储：先 `clone()`。
# - 用 `safe_open` 的 `get_tensor` 或 `get_slice` 可以只读取一个张量或它的一部分；内存随用到的内容增长，而不是随文件大小增长。

# %% [markdown] lang="en"
# ## Exercises
#
# Each exercise asks you to write a function; the check cell right after it runs your function on small networks and folders of its own and tells you what is missing or wrong. Run the next cell first: it imports what the exercises need, so they work even after a kernel restart, without the cells above. In the student edition each answer is `raise NotImplementedError()`: replace it with your code, run that cell, then run the check cell after it.

# %% [markdown] lang="zh-CN"
# ## 练习
#
# 每道练习都要求你写一个函数；紧跟在它后面的检查单元格会用自己创建的小网络和文件夹运行你的函数，并告诉你缺了什么或错在哪里。请先运行下面这个单元格：它导入练习需要的一切，所以即使重启了内核、没有运行上面的单元格，也能做练习。在学生版中，每个答案都是 `raise NotImplementedError()`：把它换成你的代码，运行这个单元格，再运行它后面的检查单元格。

# %%
import huggingface_hub
import torch

import fc_model
from saveload_lessons import checkpoint_io, exercise_checks

check = exercise_checks.for_lesson(6, language="en")
# zh-CN: check = exercise_checks.for_lesson(6, language="zh-CN")

# %% [markdown] lang="en"
# **Exercise 6.1: a lean load.** Write `load_lean(path)`, which rebuilds the `fc_model.Network` that `checkpoint_io.save_checkpoint` saved at `path` (its architecture is in the file), without a second copy of its weights: build it on the `meta` device, map the file with `mmap=True`, make the file's tensors the parameters with `assign=True`, and return the network in evaluation mode. The check saves a small network of its own, and verifies that yours holds the same weights, that no tensor is left on `meta`, that no random initialisation ran, and that the parameters *are* the tensors of the mapped file, not copies of them.

# %% [markdown] lang="zh-CN"
# **练习 6.1：精简加载。** 编写 `load_lean(path)`，重建 `checkpoint_io.save_checkpoint` 保存在 `path` 中的 `fc_model.Network`（它的架构就在文件中），而且不在内存中多留一份权重：在 `meta` 设备上构建网络，用 `mmap=True` 映射文件，用 `assign=True` 让文件中的张量成为参数，最后返回处于评估模式的网络。检查单元格会保存一个自己的小网络，然后验证：你的网络持有与它相同的权重，没有张量留在 `meta` 上，没有执行随机初始化，而且参数*就是*映射的文件中的张量，而不是它们的副本。

# %%
def load_lean(path):
    ### BEGIN SOLUTION
    checkpoint = checkpoint_io.load_checkpoint(path, fc_model.NETWORK, map_location="cpu", mmap=True)
    with torch.device("meta"):
        model = fc_model.Network(**checkpoint["architecture"])
    model.load_state_dict(checkpoint["model_state_dict"], assign=True)
    return model.eval()
    ### END SOLUTION


# %%
check.exercise_1(load_lean)

# %% [markdown] lang="en"
# **Exercise 6.2: shards and an index.** Write `save_shards(state_dict, folder, max_shard_size)`, which saves `state_dict` in the existing folder `folder` as safetensors shard files holding at most `max_shard_size` bytes of tensors each, with the shard index `model.safetensors.index.json` (its `weight_map` and `metadata.total_size`). The check hands you a state dict and a size that need several shards, then reads the index and every shard and compares them with what it gave.

# %% [markdown] lang="zh-CN"
# **练习 6.2：分片和索引。** 编写 `save_shards(state_dict, folder, max_shard_size)`，把 `state_dict` 以若干个 safetensors 分片文件的形式保存到已经存在的文件夹 `folder` 中，每个分片中的张量最多 `max_shard_size` 字节，并附上分片索引 `model.safetensors.index.json`（包括 `weight_map` 和 `metadata.total_size`）。检查单元格会给你一个状态字典和一个大小，按这个大小必须分成几个分片；然后读取索引和每个分片，与它给出的内容相比较。

# %%
def save_shards(state_dict, folder, max_shard_size):
    ### BEGIN SOLUTION
    huggingface_hub.save_torch_state_dict(state_dict, folder, max_shard_size=max_shard_size)
    ### END SOLUTION


# %%
check.exercise_2(save_shards)

# %% [markdown] lang="en"
# ## Further reading
#
# - PyTorch recipe: [Tips for loading an `nn.Module` from a checkpoint](https://pytorch.org/tutorials/recipes/recipes/module_load_state_dict_tips.html), on `mmap=True`, the `meta` device and `assign=True`.
# - PyTorch notes: [Serialization semantics](https://pytorch.org/docs/stable/notes/serialization.html), on saving storages and views; [the meta device](https://pytorch.org/docs/stable/meta.html).
# - `huggingface_hub`: [serialization](https://huggingface.co/docs/huggingface_hub/package_reference/serialization) (`save_torch_state_dict`, `load_torch_model`, shard indexes).
# - safetensors: [torch shared tensors](https://huggingface.co/docs/safetensors/torch_shared_tensors), on why `save_file` refuses shared tensors and what `save_model` does instead.

# %% [markdown] lang="zh-CN"
# ## 延伸阅读
#
# - PyTorch 实践指南：[Tips for loading an `nn.Module` from a checkpoint](https://pytorch.org/tutorials/recipes/recipes/module_load_state_dict_tips.html)（从检查点加载 `nn.Module` 的技巧），讲解 `mmap=True`、`meta` 设备和 `assign=True`。
# - PyTorch 说明文档：[Serialization semantics](https://pytorch.org/docs/stable/notes/serialization.html)（序列化语义），讲解存储和视图的保存；[`meta` 设备](https://pytorch.org/docs/stable/meta.html)。
# - `huggingface_hub`：[serialization](https://huggingface.co/docs/huggingface_hub/package_reference/serialization)（序列化：`save_torch_state_dict`、`load_torch_model` 和分片索引）。
# - safetensors：[torch shared tensors](https://huggingface.co/docs/safetensors/torch_shared_tensors)（torch 的共享张量），说明 `save_file` 为什么拒绝共享的张量，以及 `save_model` 是怎么做的。
