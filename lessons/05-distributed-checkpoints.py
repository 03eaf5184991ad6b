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
#       en: 5. Distributed checkpoints
#       zh-CN: 5. 分布式检查点
#     summary:
#       en: training on several processes with `torchrun` and FSDP2, a sharded checkpoint saved with
#         `torch.distributed.checkpoint`, a kill while saving, an exact resume, loading on another number
#         of processes, and one ordinary file at the end.
#       zh-CN: 用 `torchrun` 和 FSDP2 在多个进程上训练，用 `torch.distributed.checkpoint` 保存分片检查点，在保存过程中杀掉进程，精确地恢复训练，用不同的进程数加载，最后转换成一个普通文件。
#     teaching_minutes: 90
#     quick_run:
#       epochs: 1
# ---

# %% [markdown] lang="en"
# # Distributed Checkpoints
#
# When training outgrows one process, one `torch.save` file of the whole state stops being a good way to checkpoint it. With sharded training (FSDP), no process holds the whole model: each one keeps only its own piece of every parameter. You *can* still gather everything on rank 0 and `torch.save` it (`get_state_dict` with `StateDictOptions(full_state_dict=True, cpu_offload=True)`; this lesson's `gather` command does exactly that), but rank 0 then needs memory for the whole model and optimizer state, writing it through a single process is slow, and the file has to be split up again to train on any number of processes.
#
# PyTorch's answer is `torch.distributed.checkpoint` (DCP): every process (every *rank*) writes the pieces it holds, in parallel, into one checkpoint *folder*, and the folder can later be loaded by a *different* number of processes. In this lesson you will, on the CPU, with real processes:
#
# 1. start a training script on 2 processes with `torchrun`, the model sharded with FSDP2;
# 2. look at a sharded checkpoint folder, and at what one rank holds;
# 3. kill a process while it saves, and see that the previous checkpoint survives;
# 4. resume the run and check that it continues exactly;
# 5. load the checkpoint with 1 and with 3 processes;
# 6. turn it into one ordinary file that lesson 1's tools load, and back.

# %% [markdown] lang="zh-CN"
# # 分布式检查点
#
# 当训练的规模大到一个进程容纳不下时，把全部状态用 `torch.save` 存成一个文件就不再是保存检查点的好办法了。在分片训练（FSDP）中，没有哪个进程持有完整的模型：每个进程只持有每个参数中属于自己的那一片。当然，仍然*可以*把所有内容收集到 rank 0 上再用 `torch.save` 保存（调用 `get_state_dict` 时传入 `StateDictOptions(full_state_dict=True, cpu_offload=True)`，本课脚本的 `gather` 命令正是这样做的），但这样一来，rank 0 需要能装下整个模型和优化器状态的内存，由单个进程写出也很慢，而且不管之后用多少个进程接着训练，都得先把这个文件重新切分。
#
# PyTorch 给出的解决办法是 `torch.distributed.checkpoint`（DCP）：每个进程（每个 *rank*）并行地把自己持有的分片写进同一个检查点*目录*，之后还可以用*不同*数量的进程加载这个目录。本课将在 CPU 上用真实的进程完成以下几件事：
#
# 1. 用 `torchrun` 在 2 个进程上启动训练脚本，模型用 FSDP2 分片；
# 2. 查看一个分片检查点的目录，以及某个 rank 持有的内容；
# 3. 在保存过程中杀掉一个进程，并确认上一个检查点依然完好；
# 4. 恢复训练，并检查它是否精确地从中断处继续；
# 5. 分别用 1 个和 3 个进程加载这个检查点；
# 6. 把它转换成第 1 课的工具就能加载的普通文件，再转换回来。

# %% [markdown] lang="en"
# ## Imports and parameters
#
# `world_size` is the number of processes that train. On the CPU they talk through the `gloo` backend. With `device = "cuda"` they use `nccl`, which needs one GPU per process.

# %% [markdown] lang="zh-CN"
# ## 导入模块和参数
#
# `world_size` 是参与训练的进程数。在 CPU 上，进程之间通过 `gloo` 后端通信；设置 `device = "cuda"` 时使用 `nccl`，它要求每个进程有一块自己的 GPU。

# %%
import inspect
import pickle
import shutil
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch import nn

import fc_model
import helper
from saveload_lessons import (
    checkpoint_io,
    devices,
    distributed_checkpoints,
    fsdp_training,
    launching,
    messages,
)
from saveload_lessons.checkpoint_io import CheckpointError

# %% tags=["parameters"]
epochs = 2                             # passes over the training images
                                       # zh-CN: 遍历训练图像的轮数
device = "cpu"                         # "cpu" (gloo backend) or "cuda" (nccl, one GPU per process)
                                       # zh-CN: "cpu"（gloo 后端）或 "cuda"（nccl，每个进程一块 GPU）
data_dir = "~/.pytorch/F_MNIST_data/"  # where torchvision keeps Fashion-MNIST
                                       # zh-CN: torchvision 存放 Fashion-MNIST 的目录
seed = 5                               # fixes the initial weights, the data order and dropout
                                       # zh-CN: 固定初始权重、数据顺序和 dropout
world_size = 2                         # processes that train
                                       # zh-CN: 参与训练的进程数
train_size = 3200                      # training images used (a small slice keeps the lesson quick)
                                       # zh-CN: 使用的训练图像数（只取一小部分，让本课运行得快）
save_every = 10                        # optimizer steps between checkpoints
                                       # zh-CN: 两次保存检查点之间的优化器步数
keep = 2                               # checkpoints to keep
                                       # zh-CN: 保留的检查点个数
checkpoint_dir = "distributed"         # where this notebook writes its files
                                       # zh-CN: 本 notebook 写入文件的目录

# %% tags=["nbval-ignore-output"]
# The companion modules speak the notebook's language
# zh-CN: 配套模块使用本 notebook 的语言
messages.set_language("en")
# zh-CN: messages.set_language("zh-CN")
fc_model.check_positive_int(epochs=epochs, world_size=world_size, train_size=train_size,
                            save_every=save_every, keep=keep)
device = fsdp_training.distributed_device(devices.get_device(device), world_size)
helper.prepare_fashion_mnist(data_dir)
if train_size > 60000:
    raise ValueError(f"train_size can be at most 60000, the number of training images; got {train_size}")
    # zh-CN: raise ValueError(f"train_size 最多为 60000，即训练图像的总数；实际为 {train_size}")
total_steps = epochs * fsdp_training.steps_per_epoch(train_size, world_size)
kill_step = 2 * save_every  # the run below is killed while it saves its second checkpoint
                            # zh-CN: 下面有一次训练会在保存第二个检查点时被杀掉
if kill_step >= total_steps:
    raise ValueError(f"{epochs} epoch(s) of {train_size} images on {world_size} processes are "
    # zh-CN: raise ValueError(f"{epochs} 轮、每轮 {train_size} 张图像、{world_size} 个进程，一共是 "
                     f"{total_steps} steps; this lesson needs more than 2 * save_every = {kill_step}: "
                     # zh-CN: f"{total_steps} 步；本课需要多于 2 * save_every = {kill_step} 步："
                     "raise epochs or train_size, or lower save_every")
                     # zh-CN: "请增大 epochs 或 train_size，或者减小 save_every")
checkpoint_dir = Path(checkpoint_dir)
uninterrupted_dir = checkpoint_dir / "uninterrupted"
resumed_dir = checkpoint_dir / "killed-and-resumed"
back_dir = checkpoint_dir / "from-one-file"
for folder in (uninterrupted_dir, resumed_dir, back_dir):
    shutil.rmtree(folder, ignore_errors=True)  # so that the runs below start from empty folders
                                               # zh-CN: 让下面的几次训练都从空目录开始
checkpoint_dir.mkdir(parents=True, exist_ok=True)
torch.manual_seed(seed)
print(f"{world_size} processes on {device}, {total_steps} steps, a checkpoint every {save_every}")
# zh-CN: print(f"{world_size} 个进程，设备：{device}，共 {total_steps} 步，每 {save_every} 步保存一个检查点")

# %% [markdown] lang="en"
# ## 1. The training script
#
# Processes cannot run the cells of this notebook, so the training code lives in a script of the companion package, `saveload_lessons/fsdp_training.py`. Every process runs the whole script. Three parts of it matter for checkpoints.
#
# First, every rank builds the same network (the same seed), then `fully_shard` splits each parameter along its first dimension, so that every rank keeps only its own rows. `sharded_model` seeds the generator, builds lesson 1's network, makes each linear layer an FSDP unit with `fully_shard`, then the whole model, and returns the sharded model:

# %% [markdown] lang="zh-CN"
# ## 1. 训练脚本
#
# 其他进程无法运行本 notebook 的单元格，所以训练代码放在配套包的脚本 `saveload_lessons/fsdp_training.py` 中。每个进程都运行整个脚本，其中有三部分与检查点有关。下面用 `inspect.getsource` 显示这几部分的源代码，其中的文档字符串和注释是英文的，所以每段代码之前都先用中文说明它做了什么。
#
# 首先，每个 rank 用同一个随机种子构建同一个网络，然后 `fully_shard` 沿着第一个维度切分每个参数，让每个 rank 只持有属于自己的那几行。具体来说，`sharded_model` 依次做了以下几件事：
#
# - `torch.manual_seed(seed)` 固定随机种子，所以每个 rank 上的初始权重都相同；
# - 按 `ARCHITECTURE` 构建第 1 课的网络 `fc_model.Network`（784 个输入、隐藏层 [512, 256, 128]、10 个输出）；参数 `hidden_layers` 可以换成别的隐藏层大小，基准测试就用了更大的网络；
# - 对每个线性层调用 `fully_shard`，让它成为一个 FSDP 单元：它的权重只在这一层运行之前才收集起来；
# - 最后对整个模型再调用一次 `fully_shard`，并返回分片后的模型：

# %%
print(inspect.getsource(fsdp_training.sharded_model))

# %% [markdown] lang="en"
# Second, what a checkpoint holds. DCP saves whatever implements `state_dict` and `load_state_dict` (the `Stateful` protocol). `get_state_dict` returns the model's and the optimizer's state with the keys of an unwrapped model (`hidden_layers.0.weight`), but as the sharded tensors each rank holds. Beside them go the training progress and each rank's random-number-generator state, under that rank's own key. Every rank draws its own dropout masks, and when several ranks save a value under the same key, DCP keeps only one of them (it removes duplicates when it plans the save), so values that differ from rank to rank need keys of their own.
#
# `AppState` is such an object. `__init__` holds the model, the optimizer, the progress and the rank's own values (`gather` passes neither of the last two). `state_dict`, which DCP calls when it saves, returns the sharded model and optimizer state and, when training, the progress and, under `ranks.rank0`, `ranks.rank1`, ..., each rank's own values and generator state. `load_state_dict`, which DCP calls when it loads, checks the loaded values, then puts each back in its place:

# %% [markdown] lang="zh-CN"
# 其次是检查点里包含什么。凡是实现了 `state_dict` 和 `load_state_dict`（即 `Stateful` 协议）的对象，DCP 都可以保存。`get_state_dict` 返回模型和优化器的状态，键名与未经包装的模型相同（`hidden_layers.0.weight`），值则是各个 rank 持有的分片张量。和它们一起保存的还有训练进度，以及每个 rank 的随机数生成器状态，后者放在各个 rank 自己的键下。这是因为每个 rank 随机生成的 dropout 掩码各不相同，而几个 rank 在同一个键下保存值时，DCP 只保留其中一个（它在规划保存时会去掉重复的条目），所以因 rank 而异的值必须各有各的键。
#
# 下面的 `AppState` 类就是这样一个对象：
#
# - `__init__` 让对象持有模型、优化器和两个字典：`progress` 是训练进度，在所有 rank 上都相同；`own` 是本 rank 独有的值，即当前这一轮的训练损失之和。`gather` 命令用不到这两个字典，传入的是 `None`；
# - DCP 保存时调用 `state_dict`：它用 `get_state_dict` 取得模型和优化器的分片状态，放在 `model` 和 `optim` 两个键下；训练时还会加上 `progress`，并在 `ranks` 下以 `rank0`、`rank1`……为键，放入本 rank 的 `own` 和随机数生成器状态（`checkpoint_io.rng_state()`）；
# - DCP 加载时先调用 `state_dict` 得到要填充的结构，把读出的值填进去，再调用 `load_state_dict`。`load_state_dict` 取出本 rank 自己的那一项，用 `_check_training_state` 检查训练进度和这些值是否符合训练时保存的格式，然后用 `set_state_dict` 把模型和优化器的状态放回去，最后恢复训练进度、随机数生成器状态（`checkpoint_io.set_rng_state`）和 `own` 中的损失之和：

# %%
print(inspect.getsource(fsdp_training.AppState))

# %% [markdown] lang="en"
# Third, saving. Every rank calls `dcp.save` with its own state into the same new folder, `step-000010`. Only when the save has returned on every rank does rank 0 point the small file `latest` at the new folder, with an atomic rename (`distributed_checkpoints.mark_latest`), and delete all but the last `keep` folders. `Saver.save` first waits for an asynchronous save still under way (`finish`), has rank 0 remove a folder of the same step left by a save that never finished, picks the writer (`_KilledWhileSaving`, which kills its process once its shards are written, only for section 4), then saves: with `dcp.async_save` it holds the future until the write is done; with `dcp.save`, `_completed` then marks the folder as the latest and prunes the old ones on rank 0:

# %% [markdown] lang="zh-CN"
# 最后是保存。每个 rank 都用自己的状态调用 `dcp.save`，写进同一个新目录 `step-000010`。只有在所有 rank 上的保存都返回之后，rank 0 才通过一次原子重命名（`distributed_checkpoints.mark_latest`）让小文件 `latest` 指向这个新目录，并删除较早的目录，只保留最后 `keep` 个。`Saver.save` 依次做了以下几件事：
#
# - `self.finish()` 先等待上一次还没写完的异步保存（如果有的话），并把它标记为最新的检查点；
# - `step_folder` 给出这一步的目录（例如 `step-000010`）；如果这个目录已经存在，那只能是某次没有完成的保存留下的，rank 0 会把它删掉；`dist.barrier()` 让所有 rank 等到删除完成再继续；
# - 只有在 `--kill-while-saving` 指定的那一步、并且只在最后一个 rank 上，`killed` 才为真：这时改用 `_KilledWhileSaving`，这个写入器写完分片后就杀掉自己所在的进程（第 4 节）；其他情况下都用普通的 `FileSystemWriter`；
# - 异步保存时调用 `dcp.async_save`，由 `self.pending` 持有返回的 future 和目录，等写完之后（下一次保存时，或者在 `finish` 中）再标记；同步保存时调用 `dcp.save`，所有 rank 都写完它才返回，随后 `_completed` 在 rank 0 上调用 `mark_latest` 和 `prune`（删除较早的目录），并打印一行“已保存 …”：

# %%
print(inspect.getsource(fsdp_training.Saver.save))

# %% [markdown] lang="en"
# ## 2. Training on several processes
#
# `torchrun` starts one process per rank, gives each the variables that `init_process_group` reads (`RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`) and `LOCAL_RANK`, which the script reads itself to pick its GPU (section 10), watches them, and stops them all if one fails. `launching.torchrun` runs it with this notebook's own Python, without shell commands:

# %% [markdown] lang="zh-CN"
# ## 2. 在多个进程上训练
#
# `torchrun` 为每个 rank 启动一个进程，并为每个进程设置环境变量：`init_process_group` 要读取的 `RANK`、`WORLD_SIZE`、`MASTER_ADDR` 和 `MASTER_PORT`，以及 `LOCAL_RANK`（脚本自己读取它来选择 GPU，见第 10 节）。之后 `torchrun` 监视这些进程，只要其中一个失败，就把它们全部停掉。`launching.torchrun` 用本 notebook 自己的 Python 解释器运行 `torchrun`，不需要 shell 命令：

# %%
common = ["--data-dir", data_dir, "--device", device, "--seed", seed, "--epochs", epochs,
          "--train-size", train_size, "--save-every", save_every, "--keep", keep]
print("python", *launching.torchrun_command(
    "saveload_lessons.fsdp_training", ["train", "--checkpoint-dir", uninterrupted_dir, *common], world_size)[1:])

# %% tags=["nbval-ignore-output"]
run = launching.torchrun("saveload_lessons.fsdp_training", ["train", "--checkpoint-dir", uninterrupted_dir, *common],
                         nproc=world_size)
print(run.stdout)

# %% [markdown] lang="en"
# `hidden_layers.0.weight` is a `DTensor`: its shape is the full (512, 784), but each rank stores only its own rows, `Shard(dim=0)`, and gathers the rest just when a layer runs.
#
# ## 3. What is in a checkpoint folder
#
# With `FileSystemWriter`'s defaults (`single_file_per_rank=True`, `thread_count=1`), each rank writes one file, `__0_0.distcp` and `__1_0.distcp`, with the pieces it saved; with `thread_count=4` each rank would write 4 files, and with `single_file_per_rank=False` one file per tensor. There is no single file with the whole model. The `.metadata` file, written by rank 0 once every rank has finished, is the table of contents: for every tensor, its full shape, and which rows are where.

# %% [markdown] lang="zh-CN"
# 以 `Epoch:` 开头的进度行和第 1 课一样，依次是轮次、训练损失、测试集上的损失和测试准确率。
#
# `hidden_layers.0.weight` 是一个 `DTensor`：它的形状是完整的 (512, 784)，但每个 rank 只持有属于自己的几行（`Shard(dim=0)`），其余部分只在这一层运行时才临时收集过来。
#
# ## 3. 检查点目录里有什么
#
# 在 `FileSystemWriter` 的默认设置下（`single_file_per_rank=True`、`thread_count=1`），每个 rank 写出一个文件（`__0_0.distcp` 和 `__1_0.distcp`），里面是这个 rank 保存的分片；如果设 `thread_count=4`，每个 rank 会写出 4 个文件；设 `single_file_per_rank=False`，则每个张量一个文件。没有哪个文件包含完整的模型。`.metadata` 文件由 rank 0 在所有 rank 都写完之后写出，相当于一份索引：它记录了每个张量的完整形状，以及哪几行存放在哪个文件中。

# %% tags=["nbval-ignore-output"]
latest = distributed_checkpoints.latest_checkpoint(uninterrupted_dir)
print("latest ->", (uninterrupted_dir / "latest").read_text().strip())
print(f"step folders kept: {[p.name for p in distributed_checkpoints.step_folders(uninterrupted_dir)]}")
# zh-CN: print(f"保留的步骤目录：{[p.name for p in distributed_checkpoints.step_folders(uninterrupted_dir)]}")
for path in sorted(latest.iterdir()):
    print(f"  {path.name:14} {path.stat().st_size:>10,} bytes")
    # zh-CN: print(f"  {path.name:14} {path.stat().st_size:>10,} 字节")
assert sorted(path.name for path in latest.iterdir()) == \
    [".metadata", *(f"__{rank}_0.distcp" for rank in range(world_size))]

# %% [markdown] lang="en"
# `check_metadata` reads the table of contents. Here is where the pieces of the first layer's weight are:

# %% [markdown] lang="zh-CN"
# `check_metadata` 读取这份索引。下面是第一层权重的各个分片所在的位置：

# %%
metadata = distributed_checkpoints.check_metadata(latest)
entry = metadata.state_dict_metadata["app.model.hidden_layers.0.weight"]
print(f"full size: {tuple(entry.size)}")
# zh-CN: print(f"完整形状：{tuple(entry.size)}")
for chunk in entry.chunks:
    location = metadata.storage_data[
        next(index for index in metadata.storage_data
             if index.fqn == "app.model.hidden_layers.0.weight" and index.offset == chunk.offsets)]
    print(f"  rows {chunk.offsets[0]}-{chunk.offsets[0] + chunk.sizes[0] - 1} in {location.relative_path}")
    # zh-CN: print(f"  第 {chunk.offsets[0]}-{chunk.offsets[0] + chunk.sizes[0] - 1} 行在 {location.relative_path} 中")
assert len(entry.chunks) == world_size

# %% [markdown] lang="en"
# ## 4. Killed while saving
#
# A process can die at any moment: a crash, the out-of-memory killer, a preempted cloud machine. The worst moment is in the middle of a save. We run the same training again in a new folder, and the script's `--kill-while-saving` option makes the last rank kill itself (`SIGKILL`, which cannot be caught) right after writing its shards of checkpoint 20, before the checkpoint is complete. `torchrun` then stops the other rank, and the run fails. Windows has no `SIGKILL`: there the script sends `SIGTERM` with `os.kill`, which on Windows ends the process at once with `TerminateProcess`, just as impossible to catch (`fsdp_training.kill_signal`).

# %% [markdown] lang="zh-CN"
# ## 4. 在保存时被杀掉
#
# 进程随时可能意外终止：程序崩溃、内存耗尽时被系统杀掉、云上的机器被抢占。最糟糕的时机是正在保存的时候。我们在一个新目录中把同样的训练再运行一次，并加上脚本的 `--kill-while-saving` 选项：保存第 20 步的检查点时，最后一个 rank 一写完自己的分片，就用 `SIGKILL` 把自己杀掉（这个信号无法被捕获），这时检查点还没有完成。随后 `torchrun` 停掉另一个 rank，这次训练以失败告终。Windows 没有 `SIGKILL`：在 Windows 上，脚本用 `os.kill` 发送 `SIGTERM`，而这时 `os.kill` 会调用 `TerminateProcess` 立即结束进程，同样无法被捕获（见 `fsdp_training.kill_signal`）。

# %%
killed = launching.torchrun(
    "saveload_lessons.fsdp_training", ["train", "--checkpoint-dir", resumed_dir, "--kill-while-saving", kill_step, *common],
    nproc=world_size, check=False)
print("the last line the killed run printed:")
# zh-CN: print("被杀掉的那次训练输出的最后一行：")
print(killed.stdout.splitlines()[-1])
print(f"exit status: {killed.returncode}")
# zh-CN: print(f"退出状态：{killed.returncode}")
assert killed.returncode != 0

# %% [markdown] lang="en"
# The folder of step 20 exists, with the shards written before the kill (the killed rank's; rank 0's too if it finished writing before `torchrun` stopped it), but without `.metadata`: rank 0 was waiting for the killed rank before writing it. `latest` still names the previous checkpoint, so nothing points to the broken folder, and loading it directly fails with a clear message:

# %% [markdown] lang="zh-CN"
# 第 20 步的目录已经存在，里面有进程被杀掉之前写出的分片：被杀掉的那个 rank 的分片一定在，rank 0 的分片则要看它是否赶在 `torchrun` 停掉它之前写完。但目录里没有 `.metadata`，因为 rank 0 要等被杀掉的那个 rank 写完才会写它。`latest` 仍然指向上一个检查点，而不是这个不完整的目录；如果直接加载这个目录，会得到一条清楚的错误信息：

# %%
broken = distributed_checkpoints.step_folder(resumed_dir, kill_step)
files = sorted(path.name for path in broken.iterdir())  # rank 0's shards only if it finished in time
                                                         # zh-CN: 只有 rank 0 及时写完，才会有它的分片
killed_shards = f"__{world_size - 1}_0.distcp"
print(f"{broken.name} holds the killed rank's shards: {killed_shards in files} | .metadata: {'.metadata' in files}")
# zh-CN: print(f"{broken.name} 中有被杀掉的 rank 的分片：{killed_shards in files} | 有 .metadata：{'.metadata' in files}")
assert killed_shards in files and ".metadata" not in files
print("latest ->", distributed_checkpoints.latest_checkpoint(resumed_dir).name)
try:
    distributed_checkpoints.check_metadata(broken)
except CheckpointError as error:
    print("check_metadata refused the incomplete folder:")
    # zh-CN: print("check_metadata 拒绝了这个不完整的目录：")
    print("CheckpointError:", error)
assert distributed_checkpoints.latest_checkpoint(resumed_dir).name == f"step-{save_every:06d}"

# %% [markdown] lang="en"
# ## 5. Resuming exactly
#
# Now we start the run again with `--resume`: every rank loads its own shards of the latest checkpoint, its generator state and the progress, and training goes on from step 10. This time the script saves with `dcp.async_save` (section 7), to show that the way of saving changes nothing in the result.

# %% [markdown] lang="zh-CN"
# ## 5. 精确地恢复训练
#
# 现在加上 `--resume` 重新启动训练：每个 rank 加载最新检查点中属于自己的分片、自己的随机数生成器状态和训练进度，训练从第 10 步继续。这一次脚本用 `dcp.async_save` 保存（见第 7 节），以表明保存方式不影响结果。

# %% tags=["nbval-ignore-output"]
resumed = launching.torchrun(
    "saveload_lessons.fsdp_training", ["train", "--checkpoint-dir", resumed_dir, "--resume", "--async-save", *common],
    nproc=world_size)
print(resumed.stdout)

# %% [markdown] lang="en"
# Is the result the same as the run that was never interrupted? We compare every tensor and value of both final checkpoints: weights, Adam's running averages, progress, per-rank losses and generator states. On the CPU the same operations in the same order give the same bits, so they must be identical; on GPUs some kernels are not deterministic, and tiny differences are expected.

# %% [markdown] lang="zh-CN"
# 从脚本的输出可以看到：那个没有完成的目录会被替换，训练从 `latest` 指向的检查点恢复。
#
# 结果和从未中断的那次训练一样吗？我们比较两个最终检查点中的每一个张量和值：权重、Adam 的移动平均、训练进度、各个 rank 的损失以及随机数生成器状态。在 CPU 上，按相同的顺序做相同的计算，结果逐位相同，所以这两个检查点必须完全一致；在 GPU 上，有些算子不是确定性的，出现极小的差异在意料之中。

# %%
def flatten(value, prefix=""):
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return {prefix: value}
    return {key: leaf for name, item in items for key, leaf in flatten(item, f"{prefix}{name}.").items()}


def differences(a, b):
    a, b = flatten(a), flatten(b)
    if a.keys() != b.keys():
        return sorted(a.keys() ^ b.keys())
    return [key for key in a
            if not (torch.equal(a[key], b[key]) if isinstance(a[key], torch.Tensor) else a[key] == b[key])]


final_step = f"step-{total_steps:06d}"
uninterrupted = distributed_checkpoints.to_single_file(uninterrupted_dir / final_step,
                                                       checkpoint_dir / "uninterrupted.pt")
after_resume = distributed_checkpoints.to_single_file(resumed_dir / final_step,
                                                      checkpoint_dir / "resumed.pt")
different = differences(uninterrupted, after_resume)
print(f"{len(flatten(uninterrupted))} values compared, {len(different)} differ")
# zh-CN: print(f"比较了 {len(flatten(uninterrupted))} 个值，其中 {len(different)} 个不同")
if device == "cpu":
    assert not different, different

# %% [markdown] lang="en"
# Exact resumption needs the same number of processes: each rank's share of the data and its generator state belong to that rank. The script refuses to resume training on another number, and says so (it also refuses to start a new run in a folder that holds another run's checkpoints). The *weights*, however, load anywhere.
#
# ## 6. Loading on another number of processes
#
# One process, without any process group, can load the checkpoint into an ordinary network: DCP reads from each rank's file the rows it needs and assembles whole tensors. We ask only for the model, so the optimizer's state is not read at all.

# %% [markdown] lang="zh-CN"
# 精确地恢复训练需要相同的进程数：每个 rank 分到的那部分数据和它的随机数生成器状态都只属于这个 rank。脚本会拒绝用不同的进程数恢复训练，并给出明确的提示（如果某个目录里已经有另一次训练的检查点，它同样会拒绝在其中开始新的训练）。不过，*权重*可以用任意数量的进程加载。
#
# ## 6. 用不同的进程数加载
#
# 单个进程不需要任何进程组，就能把检查点加载进一个普通的网络：DCP 从每个 rank 的文件中读出所需的行，拼成完整的张量。我们只请求加载模型，所以优化器的状态根本不会被读取。

# %%
single = fc_model.Network(**fsdp_training.ARCHITECTURE)
wanted = {"app": {"model": single.state_dict()}}
distributed_checkpoints.load(wanted, latest)
single.load_state_dict(wanted["app"]["model"])
print(f"1 process: {not differences(single.state_dict(), uninterrupted['app']['model'])}")
# zh-CN: print(f"1 个进程加载，权重相同：{not differences(single.state_dict(), uninterrupted['app']['model'])}")
assert not differences(single.state_dict(), uninterrupted["app"]["model"])

# %% [markdown] lang="en"
# And `world_size + 1` processes, each with an FSDP model of its own: DCP *reshards* on load, every rank reading the rows that its new, smaller piece needs. The script's `gather` command loads the latest checkpoint, shows the new shards, and writes the full state from rank 0.

# %% [markdown] lang="zh-CN"
# 再用 `world_size + 1` 个进程加载，每个进程都有自己的 FSDP 模型：DCP 在加载时*重新分片*，每个 rank 只读取它那块更小的新分片所需的行。脚本的 `gather` 命令加载最新的检查点，显示新的分片，并由 rank 0 写出完整的状态。

# %% tags=["nbval-ignore-output"]
gathered_path = checkpoint_dir / "gathered.pt"
more = launching.torchrun("saveload_lessons.fsdp_training", ["gather", "--checkpoint-dir", uninterrupted_dir,
                                            "--output", gathered_path], nproc=world_size + 1)
print(more.stdout)

# %%
gathered = torch.load(gathered_path, weights_only=True)
same = not differences(gathered, {key: uninterrupted["app"][key] for key in ("model", "optim")})
print(f"{world_size + 1} processes: model and optimizer identical: {same}")
# zh-CN: print(f"{world_size + 1} 个进程加载，模型和优化器状态完全相同：{same}")
assert same

# %% [markdown] lang="en"
# ## 7. Saving without stopping: `async_save`
#
# `dcp.save` blocks training until every file is written. `dcp.async_save`, which PyTorch documents as experimental and subject to change, only blocks while it copies the state into memory, then writes the files in a background thread while training goes on; its future says when the checkpoint is complete, and only then may it become the latest (`Saver.finish`). It needs memory for that copy. It coordinates the ranks over the process group it is given (the default one otherwise); the script gives it a `gloo` group of its own (`Saver.__init__`), so that the background thread's messages never mix with the training's, and because `async_save` needs a CPU backend, which an `nccl` group does not have. `benchmarks/dcp_save_blocking.py` measures how long training is blocked with each, for a larger model; the README gives the figures.
#
# ## 8. One ordinary file
#
# To use the trained model for inference, or in code that knows nothing of distributed training, gather the folder into one `torch.save` file. PyTorch's `dcp_to_torch_save` does this; `distributed_checkpoints.to_single_file` does the same but reads the folder safely (below) and writes the file atomically. The file holds only tensors and plain values, so `torch.load(..., weights_only=True)` reads it, and lesson 1's network takes its weights:

# %% [markdown] lang="zh-CN"
# ## 7. 保存时不停下训练：`async_save`
#
# `dcp.save` 会阻塞训练，直到所有文件都写完。`dcp.async_save`（PyTorch 的文档称它为实验性功能，今后可能改变）只在把状态复制到内存中时阻塞训练，然后在后台线程中写文件，训练同时继续进行；通过它返回的 future 可以知道检查点何时完成，只有到那时，这个检查点才能成为最新的检查点（`Saver.finish`）。复制状态需要额外的内存。`async_save` 通过传给它的进程组协调各个 rank（没有传入时使用默认进程组）；本课脚本专门给它一个单独的 `gloo` 进程组（见 `Saver.__init__`），一是让后台线程的通信不会和训练的通信交错在一起，二是 `async_save` 需要 CPU 后端，而 `nccl` 进程组没有。`benchmarks/dcp_save_blocking.py` 用一个更大的模型测量了两种保存方式分别让训练阻塞多久，具体数字见 README。
#
# ## 8. 一个普通文件
#
# 如果要用训练好的模型做推理，或者在对分布式训练一无所知的代码中使用它，就把目录中的分片收集到一个 `torch.save` 文件中。PyTorch 的 `dcp_to_torch_save` 可以做到这一点；`distributed_checkpoints.to_single_file` 做的是同一件事，但会安全地读取目录（见下文），并以原子方式写出文件。这个文件只包含张量和普通的值，所以 `torch.load(..., weights_only=True)` 可以读取它，第 1 课的网络也可以直接使用其中的权重：

# %% tags=["nbval-ignore-output"]
one_file = torch.load(checkpoint_dir / "uninterrupted.pt", weights_only=True)
print(f"progress: {one_file['app']['progress']}")
# zh-CN: print(f"训练进度：{one_file['app']['progress']}")
network = fc_model.Network(**fsdp_training.ARCHITECTURE)
network.load_state_dict(one_file["app"]["model"])
_, testloader = helper.fashion_mnist_loaders(data_dir)
_, accuracy = fc_model.validation(network, testloader, nn.NLLLoss())
print(f"test accuracy of the single-file model: {accuracy:.4f}")
# zh-CN: print(f"单文件模型的测试准确率：{accuracy:.4f}")

# %% [markdown] lang="en"
# From there it is an ordinary checkpoint, for example lesson 2's general checkpoint, which `fc_model.load_network` rebuilds from the file alone:

# %% [markdown] lang="zh-CN"
# 从这里开始，它就是一个普通的检查点了。例如，可以把它保存成第 2 课的通用检查点，`fc_model.load_network` 仅凭这个文件就能重建网络：

# %%
checkpoint_io.save_checkpoint(checkpoint_dir / "for-inference.pth", network)
rebuilt = fc_model.load_network(checkpoint_dir / "for-inference.pth")
assert not differences(rebuilt.state_dict(), network.state_dict())
print(rebuilt.architecture)

# %% [markdown] lang="en"
# The reverse, `from_single_file`, turns a `torch.save` file into a DCP folder, for example to start distributed training from a single-process model. Loading it back gives the same tensors:

# %% [markdown] lang="zh-CN"
# 反过来，`from_single_file` 把一个 `torch.save` 文件转换成 DCP 目录，例如要在单进程训练出的模型的基础上开始分布式训练时，就会用到它。再把这个目录加载回来，得到的是相同的张量：

# %%
distributed_checkpoints.from_single_file(checkpoint_dir / "uninterrupted.pt", back_dir)
round_trip = distributed_checkpoints.to_single_file(back_dir, checkpoint_dir / "round-trip.pt")
print(f"round trip identical: {not differences(round_trip, uninterrupted)}")
# zh-CN: print(f"往返转换后完全相同：{not differences(round_trip, uninterrupted)}")
assert not differences(round_trip, uninterrupted)

# %% [markdown] lang="en"
# ## 9. A checkpoint folder is code, unless you check it
#
# Lesson 3 showed that unpickling runs code. DCP reads `.metadata` with plain `pickle.load`, and every value that is not a tensor (a learning rate, an epoch number) with `torch.load(weights_only=False)`; `torch_save_to_dcp` also reads its file with `weights_only=False`. So loading a folder with DCP's own functions trusts whoever made it. Here is a folder whose `.metadata` runs a command as soon as DCP opens it (only a harmless `print`, since we wrote it ourselves):

# %% [markdown] lang="zh-CN"
# ## 9. 不经检查，检查点目录就等于代码
#
# 第 3 课讲过，反序列化会执行代码。DCP 用普通的 `pickle.load` 读取 `.metadata`，并用 `torch.load(weights_only=False)` 读取所有非张量的值（学习率、轮数等）；`torch_save_to_dcp` 读取文件时也用了 `weights_only=False`。所以用 DCP 自带的函数加载一个目录，就等于完全信任制作它的人。下面这个目录的 `.metadata` 一被 DCP 打开就会执行一条命令（因为是我们自己写的，所以只是一个无害的 `print`）：

# %%
class Payload:
    def __reduce__(self):
        return (print, ("this line was printed by the checkpoint's .metadata",))
        # zh-CN: return (print, ("这一行是检查点的 .metadata 打印的",))


hostile = checkpoint_dir / "hostile"
hostile.mkdir(exist_ok=True)
(hostile / ".metadata").write_bytes(pickle.dumps(Payload()))
try:
    dcp.FileSystemReader(hostile).read_metadata()  # the first thing dcp.load does
                                                   # zh-CN: 这是 dcp.load 做的第一件事
except AttributeError:
    pass  # too late: the payload has run, and returned None instead of metadata
          # zh-CN: 为时已晚：载荷已经执行，返回的是 None 而不是元数据

# %% [markdown] lang="en"
# `distributed_checkpoints.check_metadata` unpickles `.metadata` allowing only DCP's own record classes, and `distributed_checkpoints.load` reads the other values with `weights_only=True`, so the payload never runs:

# %% [markdown] lang="zh-CN"
# `distributed_checkpoints.check_metadata` 在反序列化 `.metadata` 时只放行 DCP 自己的记录类，`distributed_checkpoints.load` 则用 `weights_only=True` 读取其他的值，所以载荷永远不会被执行：

# %%
try:
    distributed_checkpoints.check_metadata(hostile)
except CheckpointError as error:
    print("check_metadata refused the hostile folder:")
    # zh-CN: print("check_metadata 拒绝了这个恶意目录：")
    print("CheckpointError:", error)

# %% [markdown] lang="en"
# The allowlist holds exact names (`torch.distributed.checkpoint.metadata` and `Metadata`, ...), never a whole module: with pickle protocol 4 a name may contain dots, and a module that imports `os` would otherwise hand out `os.system`. But a `.metadata` that runs no code can still lie: it says which file, offset and length hold each piece, and DCP believes it. So `check_metadata` also checks that every piece lies in a shard file *inside* the folder, that the pieces of each tensor cover it exactly, and that no tensor is larger than the bytes that hold it; `distributed_checkpoints.load` reads through `CheckedReader`, which loads nothing else. Here is our own checkpoint, copied, with one piece pointed at a file outside the folder:

# %% [markdown] lang="zh-CN"
# 放行清单中列的是确切的名字（`torch.distributed.checkpoint.metadata` 和 `Metadata` 等），从不放行整个模块：在 pickle 协议 4 中，名字可以带点号，如果放行整个模块，通过一个导入了 `os` 的模块就能拿到 `os.system`。不过，一个不执行任何代码的 `.metadata` 仍然可能说谎：它写明了每个分片存放在哪个文件中、从哪个偏移量开始、有多长，而 DCP 对此深信不疑。所以 `check_metadata` 还要检查：每个分片都位于目录*之内*的某个分片文件中，每个张量的各个分片恰好把它完整覆盖，而且没有哪个张量比存放它的字节还大；`distributed_checkpoints.load` 通过 `CheckedReader` 读取数据，而 `CheckedReader` 只加载经过这些检查的内容。下面把我们自己的检查点复制一份，并让其中一个分片指向目录之外的文件：

# %%
forged = checkpoint_dir / "forged"
shutil.copytree(latest, forged, dirs_exist_ok=True)
lying = distributed_checkpoints.check_metadata(forged)  # our own folder, checked
                                                         # zh-CN: 先检查我们自己的目录，取得它的元数据
next(iter(lying.storage_data.values())).relative_path = "../outside.distcp"
(forged / ".metadata").write_bytes(pickle.dumps(lying))
try:
    distributed_checkpoints.check_metadata(forged)
except CheckpointError as error:
    print("check_metadata refused the forged folder:")
    # zh-CN: print("check_metadata 拒绝了这个伪造的目录：")
    print("CheckpointError:", error)

# %% [markdown] lang="en"
# ## 10. On GPUs
#
# With `device = "cuda"`, each rank takes the GPU of its `LOCAL_RANK` and the processes talk through `nccl`; the checkpoint folder is the same, and the `gather` command loads it on CPU processes (`gloo`), so a checkpoint saved by GPUs can be inspected and converted on any machine. NCCL needs one GPU per process: on a machine with a single GPU (Colab, a laptop), use `world_size = 1`, which still shows saving, killing and resuming but shards nothing, or keep `device = "cpu"` to see real shards. On GPUs the resumed run is very close to, but not always bit-identical with, the uninterrupted one (section 5).
#
# ## Summary
#
# - With sharded training no process holds the whole model: `dcp.save` has every rank write its own pieces into one folder, and `.metadata`, written last, says where each piece is. Gathering everything into one `torch.save` file on rank 0 also works, at the cost of rank 0's memory and time.
# - Save into a new step folder and point `latest` at it only when the save is complete; a process killed while saving then costs only the steps since the previous checkpoint. Keep the last few folders.
# - Save each rank's generator state under its own key beside the model, the optimizer and the progress: resuming with the same number of processes then continues exactly, on the CPU bit for bit.
# - DCP reshards on load: the same folder loads on 1 process, on 3, or into an ordinary model.
# - `dcp_to_torch_save` (here `to_single_file`) turns the folder into one file for `torch.load(weights_only=True)`; `torch_save_to_dcp` (here `from_single_file`) goes back.
# - DCP's own loaders unpickle without restriction and believe what `.metadata` says about files and sizes: load only folders you trust, or read them through checks such as `check_metadata` and `CheckedReader`.

# %% [markdown] lang="zh-CN"
# ## 10. 在 GPU 上
#
# 设置 `device = "cuda"` 时，每个 rank 使用编号等于自己 `LOCAL_RANK` 的那块 GPU，进程之间通过 `nccl` 通信；检查点目录的格式完全相同，而 `gather` 命令在 CPU 进程上（`gloo`）加载它，所以 GPU 保存的检查点可以在任何机器上查看和转换。NCCL 要求每个进程有一块自己的 GPU：在只有一块 GPU 的机器上（Colab、笔记本电脑），可以设 `world_size = 1`，这样仍然能演示保存、杀掉进程和恢复训练，只是不会分片；也可以保持 `device = "cpu"`，以便看到真正的分片。在 GPU 上，恢复后的训练与从未中断的训练结果非常接近，但不一定逐位相同（见第 5 节）。
#
# ## 小结
#
# - 在分片训练中，没有哪个进程持有完整的模型：`dcp.save` 让每个 rank 把自己的分片写进同一个目录，最后写出的 `.metadata` 记录每个分片的位置。把所有内容收集到 rank 0 上存成一个 `torch.save` 文件也可以，代价是 rank 0 的内存和时间。
# - 每次保存到一个新的步骤目录，只有在保存完成后才让 `latest` 指向它；这样，即使进程在保存时被杀掉，损失的也只是上一个检查点之后的那些步骤。只保留最近的几个目录。
# - 把每个 rank 的随机数生成器状态放在它自己的键下，与模型、优化器和训练进度一起保存：这样，用相同的进程数恢复后，训练会精确地继续下去，在 CPU 上结果逐位相同。
# - DCP 在加载时重新分片：同一个目录可以用 1 个进程、3 个进程加载，也可以加载进普通的模型。
# - `dcp_to_torch_save`（本课对应的是 `to_single_file`）把目录转换成一个文件，供 `torch.load(weights_only=True)` 读取；`torch_save_to_dcp`（本课对应的是 `from_single_file`）则反过来转换。
# - DCP 自带的加载函数会不加限制地反序列化，并且相信 `.metadata` 关于文件和大小的一切说法：只加载你信任的目录，或者通过 `check_metadata` 和 `CheckedReader` 这样的检查来读取它们。

# %% [markdown] lang="en"
# ## Exercises
#
# Each exercise asks you to write a function; the check cell right after it runs your function on small folders of its own and tells you what is missing or wrong. Run the next cell first: it imports what the exercises need, so they work even after a kernel restart, without the cells above. In the student edition each answer is `raise NotImplementedError()`: replace it with your code, run that cell, then run the check cell after it.

# %% [markdown] lang="zh-CN"
# ## 练习
#
# 每道练习都要求你写一个函数；紧跟在它后面的检查单元格会用自己创建的小目录运行你的函数，并告诉你缺了什么或错在哪里。请先运行下面这个单元格：它导入练习需要的一切，所以即使重启了内核、没有运行上面的单元格，也能做练习。在学生版中，每个答案都是 `raise NotImplementedError()`：把它换成你的代码，运行这个单元格，再运行它后面的检查单元格。

# %%
from pathlib import Path

from saveload_lessons import distributed_checkpoints, exercise_checks

check = exercise_checks.for_lesson(5, language="en")
# zh-CN: check = exercise_checks.for_lesson(5, language="zh-CN")

# %% [markdown] lang="en"
# **Exercise 5.1: where to resume when there is no pointer.** A run was killed and its `latest` file is gone. Write `newest_complete(root)`, which returns the path of the newest step folder (`step-000020`, …) under `root` whose save finished, or `None` when there is none. `distributed_checkpoints` has what you need to tell a finished folder and read a folder's step. The cell after it checks your function.

# %% [markdown] lang="zh-CN"
# **练习 5.1：没有指针时从哪里恢复。** 一次训练被杀掉了，`latest` 文件也不见了。编写 `newest_complete(root)`：在 `root` 下的步骤目录（`step-000020` 等）中找出已经保存完成、步数最大的那个，返回它的路径；如果没有这样的目录，就返回 `None`。判断一个目录是否保存完成、读出目录对应的步数，都可以用 `distributed_checkpoints` 中现成的函数。后面的单元格会检查你的函数。

# %%
def newest_complete(root):
    ### BEGIN SOLUTION
    finished = [folder for folder in Path(root).iterdir()
                if distributed_checkpoints.folder_step(folder) is not None
                and distributed_checkpoints.is_complete(folder)]
    return max(finished, key=distributed_checkpoints.folder_step, default=None)
    ### END SOLUTION


# %%
check.exercise_1(newest_complete)

# %% [markdown] lang="en"
# **Exercise 5.2: load a DCP folder, safely, in one process.** The check saves a small network with `dcp.save({"model": model.state_dict()}, ...)`. Write `load_dcp(model, folder)`, which loads that folder into `model` in this plain process, and refuses a folder whose `.metadata` would run code (plain `dcp.load` unpickles it).

# %% [markdown] lang="zh-CN"
# **练习 5.2：在一个进程中安全地加载 DCP 目录。** 检查单元格会用 `dcp.save({"model": model.state_dict()}, ...)` 保存一个小网络。编写 `load_dcp(model, folder)`：在当前这个普通进程中把该目录加载到 `model` 里；如果目录的 `.metadata` 会执行代码，就拒绝加载（直接调用 `dcp.load` 会反序列化它）。

# %%
def load_dcp(model, folder):
    ### BEGIN SOLUTION
    state_dict = {"model": model.state_dict()}
    distributed_checkpoints.load(state_dict, folder)
    model.load_state_dict(state_dict["model"])
    ### END SOLUTION


# %%
check.exercise_2(load_dcp)

# %% [markdown] lang="en"
# ## Further reading
#
# - PyTorch: [Distributed Checkpoint (DCP)](https://pytorch.org/docs/stable/distributed.checkpoint.html), and the recipes [Getting started with DCP](https://pytorch.org/tutorials/recipes/distributed_checkpoint_recipe.html) and [Asynchronous saving with DCP](https://pytorch.org/tutorials/recipes/distributed_async_checkpoint_recipe.html).
# - [FSDP2 `fully_shard`](https://pytorch.org/docs/stable/distributed.fsdp.fully_shard.html) and the [FSDP2 tutorial](https://pytorch.org/tutorials/intermediate/FSDP_tutorial.html).
# - [`torchrun`](https://pytorch.org/docs/stable/elastic/run.html) and [`torch.distributed`](https://pytorch.org/docs/stable/distributed.html), with the `gloo` and `nccl` backends.
# - PyTorch notes: [Serialization semantics](https://pytorch.org/docs/stable/notes/serialization.html), for the single files this lesson converts to and from.

# %% [markdown] lang="zh-CN"
# ## 延伸阅读
#
# - PyTorch 文档：[Distributed Checkpoint (DCP)](https://pytorch.org/docs/stable/distributed.checkpoint.html)（分布式检查点），以及两个实用示例 [Getting started with DCP](https://pytorch.org/tutorials/recipes/distributed_checkpoint_recipe.html)（DCP 入门）和 [Asynchronous saving with DCP](https://pytorch.org/tutorials/recipes/distributed_async_checkpoint_recipe.html)（异步保存）。
# - [FSDP2 `fully_shard`](https://pytorch.org/docs/stable/distributed.fsdp.fully_shard.html) 和 [FSDP2 教程](https://pytorch.org/tutorials/intermediate/FSDP_tutorial.html)。
# - [`torchrun`](https://pytorch.org/docs/stable/elastic/run.html) 和 [`torch.distributed`](https://pytorch.org/docs/stable/distributed.html)，包括 `gloo` 和 `nccl` 两种后端。
# - PyTorch 说明文档：[Serialization semantics](https://pytorch.org/docs/stable/notes/serialization.html)（序列化语义），讲的是本课从目录转换出来、又转换回去的那种单个文件。
