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
# 当训练规模超出一个进程的能力时，把全部状态用 `torch.save` 存成一个文件就不再是保存检查点的好办法了。在分片训练（FSDP）中，没有哪个进程持有完整的模型：每个进程只保存每个参数中属于自己的那一片。当然，仍然*可以*把所有内容收集到 rank 0 上再用 `torch.save` 保存（调用 `get_state_dict` 时传入 `StateDictOptions(full_state_dict=True, cpu_offload=True)`，本课脚本的 `gather` 命令正是这样做的），但这样一来，rank 0 需要能装下整个模型和优化器状态的内存，由单个进程写出也很慢，而且要在任意数量的进程上接着训练时，还得把这个文件重新切分。
#
# PyTorch 给出的解决办法是 `torch.distributed.checkpoint`（DCP）：每个进程（每个 *rank*）并行地把自己持有的分片写进同一个检查点*目录*，之后还可以用*不同*数量的进程加载这个目录。在这节课里，你将在 CPU 上用真实的进程完成以下几件事：
#
# 1. 用 `torchrun` 在 2 个进程上启动训练脚本，模型用 FSDP2 分片；
# 2. 查看一个分片检查点的目录，以及某个 rank 持有的内容；
# 3. 在保存过程中杀掉一个进程，并确认上一个检查点依然完好；
# 4. 恢复训练，并检查训练是否精确地从中断处继续；
# 5. 分别用 1 个和 3 个进程加载这个检查点；
# 6. 把它转换成一个第 1 课的工具能加载的普通文件，再转换回来。

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

import checkpoint_io
import devices
import distributed_checkpoints
import fc_model
import fsdp_training
import helper
import launching
from checkpoint_io import CheckpointError

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
# Processes cannot run the cells of this notebook, so the training code lives in a script of the companion package, `fsdp_training.py`. Every process runs the whole script. Three parts of it matter for checkpoints.
#
# First, every rank builds the same network (the same seed), then `fully_shard` splits each parameter along its first dimension, so that every rank keeps only its own rows:

# %% [markdown] lang="zh-CN"
# ## 1. 训练脚本
#
# 子进程无法运行这个 notebook 的单元格，所以训练代码放在配套包的脚本 `fsdp_training.py` 中。每个进程都运行整个脚本。其中有三部分和检查点有关。
#
# 首先，每个 rank 用同一个随机种子构建同一个网络，然后 `fully_shard` 沿着第一个维度切分每个参数，让每个 rank 只保存属于自己的那几行：

# %%
print(inspect.getsource(fsdp_training.sharded_model))

# %% [markdown] lang="en"
# Second, what a checkpoint holds. DCP saves whatever implements `state_dict` and `load_state_dict` (the `Stateful` protocol). `get_state_dict` returns the model's and the optimizer's state with the keys of an unwrapped model (`hidden_layers.0.weight`), but as the sharded tensors each rank holds. Beside them go the training progress and each rank's random-number-generator state, under that rank's own key. Every rank draws its own dropout masks, and when several ranks save a value under the same key, DCP keeps only one of them (it removes duplicates when it plans the save), so values that differ from rank to rank need keys of their own:

# %% [markdown] lang="zh-CN"
# 其次是检查点里保存了什么。凡是实现了 `state_dict` 和 `load_state_dict`（即 `Stateful` 协议）的对象，DCP 都可以保存。`get_state_dict` 返回模型和优化器的状态，键名与未经包装的模型相同（`hidden_layers.0.weight`），值却是各个 rank 持有的分片张量。和它们一起保存的还有训练进度，以及每个 rank 的随机数生成器状态；后者放在各个 rank 自己的键下。每个 rank 抽取的 dropout 掩码各不相同，而几个 rank 在同一个键下保存值时，DCP 只保留其中一个（它在规划保存时会去掉重复的条目），所以因 rank 而异的值必须各有各的键：

# %%
print(inspect.getsource(fsdp_training.AppState))

# %% [markdown] lang="en"
# Third, saving. Every rank calls `dcp.save` with its own state into the same new folder, `step-000010`. Only when the save has returned on every rank does rank 0 point the small file `latest` at the new folder, with an atomic rename (`distributed_checkpoints.mark_latest`), and delete all but the last `keep` folders:

# %% [markdown] lang="zh-CN"
# 最后是保存。每个 rank 都用自己的状态调用 `dcp.save`，写进同一个新目录 `step-000010`。只有在所有 rank 上的保存都返回之后，rank 0 才通过一次原子重命名（`distributed_checkpoints.mark_latest`）让小文件 `latest` 指向这个新目录，并删除较早的目录，只保留最后 `keep` 个：

# %%
print(inspect.getsource(fsdp_training.Saver.save))

# %% [markdown] lang="en"
# ## 2. Training on several processes
#
# `torchrun` starts one process per rank, gives each the variables that `init_process_group` reads (`RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`) and `LOCAL_RANK`, which the script reads itself to pick its GPU (section 10), watches them, and stops them all if one fails. `launching.torchrun` runs it with this notebook's own Python, without shell commands:

# %% [markdown] lang="zh-CN"
# ## 2. 在多个进程上训练
#
# `torchrun` 为每个 rank 启动一个进程，为每个进程设置 `init_process_group` 要读取的环境变量（`RANK`、`WORLD_SIZE`、`MASTER_ADDR`、`MASTER_PORT`），以及由脚本自己读取、用来选择 GPU 的 `LOCAL_RANK`（见第 10 节），监视这些进程，并在其中一个失败时把它们全部停掉。`launching.torchrun` 用这个 notebook 自己的 Python 解释器运行它，不需要 shell 命令：

# %%
common = ["--data-dir", data_dir, "--device", device, "--seed", seed, "--epochs", epochs,
          "--train-size", train_size, "--save-every", save_every, "--keep", keep]
print("python", *launching.torchrun_command(
    "fsdp_training", ["train", "--checkpoint-dir", uninterrupted_dir, *common], world_size)[1:])

# %% tags=["nbval-ignore-output"]
run = launching.torchrun("fsdp_training", ["train", "--checkpoint-dir", uninterrupted_dir, *common],
                         nproc=world_size)
print(run.stdout)

# %% [markdown] lang="en"
# `hidden_layers.0.weight` is a `DTensor`: its shape is the full (512, 784), but each rank stores only its own rows, `Shard(dim=0)`, and gathers the rest just when a layer runs.
#
# ## 3. What is in a checkpoint folder
#
# With `FileSystemWriter`'s defaults (`single_file_per_rank=True`, `thread_count=1`), each rank writes one file, `__0_0.distcp` and `__1_0.distcp`, with the pieces it saved; with `thread_count=4` each rank would write 4 files, and with `single_file_per_rank=False` one file per tensor. There is no single file with the whole model. The `.metadata` file, written by rank 0 once every rank has finished, is the table of contents: for every tensor, its full shape, and which rows are where.

# %% [markdown] lang="zh-CN"
# `hidden_layers.0.weight` 是一个 `DTensor`：它的形状是完整的 (512, 784)，但每个 rank 只存储属于自己的几行（`Shard(dim=0)`），其余部分只在这一层运行时才临时收集过来。
#
# ## 3. 检查点目录里有什么
#
# 在 `FileSystemWriter` 的默认设置下（`single_file_per_rank=True`、`thread_count=1`），每个 rank 写出一个文件（`__0_0.distcp` 和 `__1_0.distcp`），保存这个 rank 写出的分片；如果设 `thread_count=4`，每个 rank 会写出 4 个文件，设 `single_file_per_rank=False` 则每个张量一个文件。没有任何一个文件包含完整模型。`.metadata` 文件由 rank 0 在所有 rank 都写完之后写出，它相当于一份索引：记录了每个张量的完整形状，以及哪几行保存在哪里。

# %% tags=["nbval-ignore-output"]
latest = distributed_checkpoints.latest_checkpoint(uninterrupted_dir)
print("latest ->", (uninterrupted_dir / "latest").read_text().strip())
print("step folders kept:", [p.name for p in distributed_checkpoints.step_folders(uninterrupted_dir)])
# zh-CN: print("保留的步骤目录：", [p.name for p in distributed_checkpoints.step_folders(uninterrupted_dir)])
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
print("full size:", tuple(entry.size))
# zh-CN: print("完整形状：", tuple(entry.size))
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
# 进程随时可能死掉：程序崩溃、内存不足时被系统杀掉、云上的机器被抢占。最糟糕的时刻是在保存的过程中。我们在一个新目录中再运行一次同样的训练，脚本的 `--kill-while-saving` 选项会让最后一个 rank 刚写完第 20 步检查点中属于自己的分片、检查点还没有完成时，就把自己杀掉（`SIGKILL`，这个信号无法被捕获）。随后 `torchrun` 会停掉另一个 rank，这次训练以失败告终。Windows 没有 `SIGKILL`：在那里，脚本用 `os.kill` 发送 `SIGTERM`，而 Windows 上的 `os.kill` 会通过 `TerminateProcess` 立即结束进程，同样无法被捕获（见 `fsdp_training.kill_signal`）。

# %%
killed = launching.torchrun(
    "fsdp_training", ["train", "--checkpoint-dir", resumed_dir, "--kill-while-saving", kill_step, *common],
    nproc=world_size, check=False)
print("the last line the killed run printed:")
# zh-CN: print("被杀掉的那次训练输出的最后一行：")
print(killed.stdout.splitlines()[-1])
print("exit status:", killed.returncode)
# zh-CN: print("退出状态：", killed.returncode)
assert killed.returncode != 0

# %% [markdown] lang="en"
# The folder of step 20 exists, with the shards written before the kill (the killed rank's; rank 0's too if it finished writing before `torchrun` stopped it), but without `.metadata`: rank 0 was waiting for the killed rank before writing it. `latest` still names the previous checkpoint, so nothing points to the broken folder, and loading it directly fails with a clear message:

# %% [markdown] lang="zh-CN"
# 这一行说明，最后一个 rank 把自己的分片写进第 20 步的目录之后，在检查点完成之前被杀掉了（Linux 和 macOS 上用的是 `SIGKILL`，Windows 上是 `SIGTERM`）。
#
# 第 20 步的目录已经存在，里面有被杀掉之前写出的分片（被杀掉的那个 rank 的分片；如果 rank 0 在 `torchrun` 停掉它之前已经写完，也有它的分片），但没有 `.metadata`：rank 0 在写出它之前要等待被杀掉的那个 rank。`latest` 仍然指向上一个检查点，所以没有任何东西指向这个残缺的目录；如果直接加载它，会得到一条清楚的错误信息：

# %%
broken = distributed_checkpoints.step_folder(resumed_dir, kill_step)
files = sorted(path.name for path in broken.iterdir())  # rank 0's shards only if it finished in time
                                                         # zh-CN: 只有 rank 0 及时写完，才会有它的分片
killed_shards = f"__{world_size - 1}_0.distcp"
print(broken.name, "holds the killed rank's shards:", killed_shards in files, "| .metadata:", ".metadata" in files)
# zh-CN: print(broken.name, "中有被杀掉的 rank 的分片：", killed_shards in files, "| .metadata：", ".metadata" in files)
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
# 这条英文错误信息说明：这个目录没有 `.metadata`（DCP 最后才写它），所以不是完整的分布式检查点；某个进程在保存它的时候停止了，应当加载上一个检查点（即 `latest` 指向的那个）。
#
# ## 5. 精确地恢复训练
#
# 现在加上 `--resume` 重新启动训练：每个 rank 加载最新检查点中属于自己的分片、自己的随机数生成器状态和训练进度，训练从第 10 步继续。这一次脚本用 `dcp.async_save` 保存（见第 7 节），以说明保存方式不会改变结果。

# %% tags=["nbval-ignore-output"]
resumed = launching.torchrun(
    "fsdp_training", ["train", "--checkpoint-dir", resumed_dir, "--resume", "--async-save", *common],
    nproc=world_size)
print(resumed.stdout)

# %% [markdown] lang="en"
# Is the result the same as the run that was never interrupted? We compare every tensor and value of both final checkpoints: weights, Adam's running averages, progress, per-rank losses and generator states. On the CPU the same operations in the same order give the same bits, so they must be identical; on GPUs some kernels are not deterministic, and tiny differences are expected.

# %% [markdown] lang="zh-CN"
# 脚本的输出说明：那个没有完成的目录会被替换，训练从 `latest` 指向的检查点恢复。
#
# 结果和从未中断的那次训练一样吗？我们比较两个最终检查点中的每一个张量和值：权重、Adam 的滑动平均、训练进度、各个 rank 的损失以及随机数生成器状态。在 CPU 上，以相同的顺序执行相同的运算会得到完全相同的比特，所以两者必须逐位相同；在 GPU 上，有些算子不是确定性的，出现极小的差异在意料之中。

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
# 精确地恢复训练需要相同的进程数：每个 rank 分到的那部分数据和它的随机数生成器状态都只属于这个 rank。脚本会拒绝用不同的进程数恢复训练，并给出明确的提示（如果某个目录里已经有另一次训练的检查点，它同样会拒绝在其中开始新的训练）。不过，*权重*在哪里都能加载。
#
# ## 6. 用不同的进程数加载
#
# 单个进程无须任何进程组，就能把检查点加载进一个普通的网络：DCP 从每个 rank 的文件中读出所需的行，拼成完整的张量。我们只要求加载模型，所以优化器的状态根本不会被读取。

# %%
single = fc_model.Network(**fsdp_training.ARCHITECTURE)
wanted = {"app": {"model": single.state_dict()}}
distributed_checkpoints.load(wanted, latest)
single.load_state_dict(wanted["app"]["model"])
print("1 process:", not differences(single.state_dict(), uninterrupted["app"]["model"]))
# zh-CN: print("1 个进程加载，权重相同：", not differences(single.state_dict(), uninterrupted["app"]["model"]))
assert not differences(single.state_dict(), uninterrupted["app"]["model"])

# %% [markdown] lang="en"
# And `world_size + 1` processes, each with an FSDP model of its own: DCP *reshards* on load, every rank reading the rows that its new, smaller piece needs. The script's `gather` command loads the latest checkpoint, shows the new shards, and writes the full state from rank 0.

# %% [markdown] lang="zh-CN"
# 再用 `world_size + 1` 个进程加载，每个进程都有自己的 FSDP 模型：DCP 在加载时*重新分片*，每个 rank 读取自己那块新的、更小的分片所需的行。脚本的 `gather` 命令加载最新的检查点，显示新的分片，并由 rank 0 写出完整的状态。

# %% tags=["nbval-ignore-output"]
gathered_path = checkpoint_dir / "gathered.pt"
more = launching.torchrun("fsdp_training", ["gather", "--checkpoint-dir", uninterrupted_dir,
                                            "--output", gathered_path], nproc=world_size + 1)
print(more.stdout)

# %%
gathered = torch.load(gathered_path, weights_only=True)
same = not differences(gathered, {key: uninterrupted["app"][key] for key in ("model", "optim")})
print(f"{world_size + 1} processes: model and optimizer identical:", same)
# zh-CN: print(f"{world_size + 1} 个进程加载，模型和优化器状态完全相同：", same)
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
# `dcp.save` 会阻塞训练，直到所有文件都写完。`dcp.async_save`（PyTorch 的文档称它为实验性功能，今后可能改变）只在把状态复制到内存时阻塞训练，随后在后台线程中写文件，训练同时继续进行；它返回的 future 会告诉我们检查点何时完成，只有到那时它才能成为最新的检查点（`Saver.finish`）。这个副本需要额外的内存。它通过传给它的进程组（没有传入时用默认进程组）协调各个 rank；本课脚本专门给它一个单独的 `gloo` 进程组（见 `Saver.__init__`），一是让后台线程的通信不会和训练的通信混在一起，二是 `async_save` 需要一个 CPU 后端，而 `nccl` 进程组没有。`benchmarks/dcp_save_blocking.py` 用一个更大的模型测量了两种方式各让训练阻塞多久，具体数字见 README。
#
# ## 8. 一个普通文件
#
# 如果要用训练好的模型做推理，或者在对分布式训练一无所知的代码中使用它，就把目录合并成一个 `torch.save` 文件。PyTorch 的 `dcp_to_torch_save` 可以做到这一点；`distributed_checkpoints.to_single_file` 做的是同一件事，但会安全地读取目录（见下文），并以原子方式写出文件。这个文件只包含张量和普通的值，所以 `torch.load(..., weights_only=True)` 可以读取它，第 1 课的网络也可以直接使用其中的权重：

# %% tags=["nbval-ignore-output"]
one_file = torch.load(checkpoint_dir / "uninterrupted.pt", weights_only=True)
print("progress:", one_file["app"]["progress"])
# zh-CN: print("训练进度：", one_file["app"]["progress"])
network = fc_model.Network(**fsdp_training.ARCHITECTURE)
network.load_state_dict(one_file["app"]["model"])
_, testloader = helper.fashion_mnist_loaders(data_dir)
_, accuracy = fc_model.validation(network, testloader, nn.NLLLoss())
print(f"test accuracy of the single-file model: {accuracy:.4f}")
# zh-CN: print(f"单文件模型的测试准确率：{accuracy:.4f}")

# %% [markdown] lang="en"
# From there it is an ordinary checkpoint, for example lesson 2's general checkpoint, which `fc_model.load_network` rebuilds from the file alone:

# %% [markdown] lang="zh-CN"
# 从这里开始，它就是一个普通的检查点了，例如可以保存为第 2 课的通用检查点，`fc_model.load_network` 仅凭这个文件就能重建网络：

# %%
checkpoint_io.save_checkpoint(checkpoint_dir / "for-inference.pth", network)
rebuilt = fc_model.load_network(checkpoint_dir / "for-inference.pth")
assert not differences(rebuilt.state_dict(), network.state_dict())
print(rebuilt.architecture)

# %% [markdown] lang="en"
# The reverse, `from_single_file`, turns a `torch.save` file into a DCP folder, for example to start distributed training from a single-process model. Loading it back gives the same tensors:

# %% [markdown] lang="zh-CN"
# 反方向的 `from_single_file` 把一个 `torch.save` 文件转换成 DCP 目录，例如要从单进程训练的模型开始分布式训练时就会用到。再把它加载回来，得到的是相同的张量：

# %%
distributed_checkpoints.from_single_file(checkpoint_dir / "uninterrupted.pt", back_dir)
round_trip = distributed_checkpoints.to_single_file(back_dir, checkpoint_dir / "round-trip.pt")
print("round trip identical:", not differences(round_trip, uninterrupted))
# zh-CN: print("往返转换后完全相同：", not differences(round_trip, uninterrupted))
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
# 这条英文错误信息说明：`builtins.print` 不属于检查点的元数据，所以这个 `.metadata` 被拒绝；只应加载来自可信来源的检查点，这个目录可能试图执行代码。
#
# 放行清单中列的是确切的名字（`torch.distributed.checkpoint.metadata` 和 `Metadata` 等），而从不放行整个模块：在 pickle 协议 4 中，名字可以带点号，否则一个导入了 `os` 的模块就能交出 `os.system`。不过，一个不执行任何代码的 `.metadata` 仍然可能说谎：它写明了每个分片存放在哪个文件中、从哪个偏移量开始、有多长，而 DCP 对此深信不疑。所以 `check_metadata` 还要检查：每个分片都位于目录*之内*的某个分片文件中，每个张量的各个分片恰好把它完整覆盖，而且没有哪个张量比存放它的字节还大；`distributed_checkpoints.load` 通过 `CheckedReader` 读取，除此之外什么都不加载。下面把我们自己的检查点复制一份，并让其中一个分片指向目录之外的文件：

# %%
forged = checkpoint_dir / "forged"
shutil.copytree(latest, forged, dirs_exist_ok=True)
lying = distributed_checkpoints.check_metadata(forged)  # our own folder, checked
                                                         # zh-CN: 我们自己的目录，经过检查
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
# 这条英文错误信息说明：`.metadata` 声称某一项数据存放在 `../outside.distcp` 中，而这不是目录之内的文件名，所以这个 `.metadata` 被判定为损坏或伪造；只应加载来自可信来源的检查点。
#
# ## 10. 在 GPU 上
#
# 设置 `device = "cuda"` 时，每个 rank 使用编号等于自己 `LOCAL_RANK` 的那块 GPU，进程之间通过 `nccl` 通信；检查点目录的格式完全相同，而 `gather` 命令在 CPU 进程上（`gloo`）加载它，所以 GPU 保存的检查点可以在任何机器上查看和转换。NCCL 要求每个进程有一块自己的 GPU：在只有一块 GPU 的机器上（Colab、笔记本电脑），可以设 `world_size = 1`，这样仍然能演示保存、杀掉进程和恢复训练，只是不会分片；也可以保留 `device = "cpu"`，看到真正的分片。在 GPU 上，恢复后的训练与从未中断的训练结果非常接近，但不一定逐位相同（见第 5 节）。
#
# ## 小结
#
# - 在分片训练中，没有哪个进程持有完整的模型：`dcp.save` 让每个 rank 把自己的分片写进同一个目录，最后写出的 `.metadata` 记录每个分片的位置。把所有内容收集到 rank 0 上存成一个 `torch.save` 文件也可以，代价是 rank 0 的内存和时间。
# - 每次保存到一个新的步骤目录，只有在保存完成后才让 `latest` 指向它；这样，即使进程在保存时被杀掉，损失的也只是上一个检查点之后的那些步骤。只保留最近的几个目录。
# - 把每个 rank 的随机数生成器状态放在它自己的键下，与模型、优化器和训练进度一起保存：这样用相同的进程数恢复训练就能精确地接着训练，在 CPU 上逐位相同。
# - DCP 在加载时重新分片：同一个目录可以用 1 个进程、3 个进程加载，也可以加载进普通的模型。
# - `dcp_to_torch_save`（这里是 `to_single_file`）把目录转换成一个文件，供 `torch.load(weights_only=True)` 读取；`torch_save_to_dcp`（这里是 `from_single_file`）则反过来转换。
# - DCP 自带的加载函数会不加限制地反序列化，并且相信 `.metadata` 关于文件和大小的一切说法：只加载你信任的目录，或者通过 `check_metadata` 和 `CheckedReader` 这样的检查来读取它们。

# %% [markdown] lang="en"
# ## Exercises
#
# Each exercise asks for a function; the cell after it checks your answer on small folders of its own and says what is missing or wrong. The exercises need nothing from the cells above except the next cell, so they also work after a kernel restart, and they run in this one process, without `torchrun`. In the student edition each answer is `raise NotImplementedError()`: replace it with your code.

# %% [markdown] lang="zh-CN"
# ## 练习
#
# 每道练习要求写一个函数；紧随其后的检查单元格会用它自己创建的小目录检验你的答案，并指出缺了什么或错在哪里。这些练习只依赖紧接着的下一个单元格，不需要上面的任何单元格，所以重启内核之后也能直接做；它们都在当前这一个进程中运行，不需要 `torchrun`。在学生版中，每个答案都是 `raise NotImplementedError()`：把它换成你的代码。

# %%
from pathlib import Path

import distributed_checkpoints
import exercise_checks

check = exercise_checks.for_lesson(5, language="en")
# zh-CN: check = exercise_checks.for_lesson(5, language="zh-CN")

# %% [markdown] lang="en"
# **Exercise 5.1: where to resume when there is no pointer.** A run was killed and its `latest` file is gone. Write `newest_complete(root)`, which returns the path of the newest step folder (`step-000020`, …) under `root` whose save finished, or `None` when there is none. `distributed_checkpoints` has what you need to tell a finished folder and read a folder's step.

# %% [markdown] lang="zh-CN"
# **练习 5.1：没有指针时从哪里恢复。** 一次训练被杀掉了，`latest` 文件也不见了。编写 `newest_complete(root)`：返回 `root` 下保存已经完成的最新步骤目录（`step-000020` 等）的路径；一个都没有时返回 `None`。要判断目录是否已经保存完成、读出目录的步数，`distributed_checkpoints` 里都有现成的函数。

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
# **练习 5.2：在一个进程中安全地加载 DCP 目录。** 检查单元格会用 `dcp.save({"model": model.state_dict()}, ...)` 保存一个小网络。编写 `load_dcp(model, folder)`：在当前这个普通进程中把该目录加载到 `model` 里，并且拒绝 `.metadata` 会执行代码的目录（直接用 `dcp.load` 会反序列化它）。

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
