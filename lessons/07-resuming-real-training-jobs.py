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
#       en: 7. Resuming real training jobs
#       zh-CN: 7. 恢复真实的训练任务
#     summary:
#       en: resuming in the middle of an epoch with worker processes (`StatefulDataLoader` and the workers'
#         random state), surviving a `SIGTERM` within its grace period, saving EMA weights, and keeping the
#         best K checkpoints and the latest without ever losing a good one.
#       zh-CN: 带工作进程时在一轮的中途恢复训练（`StatefulDataLoader` 与工作进程的随机状态），在宽限期内处理 `SIGTERM`
#         并保存，保存指数移动平均（EMA）权重，以及保留最佳的 K 个检查点和最新的检查点而绝不丢失好的检查点。
#     teaching_minutes: 75
#     quick_run:
#       epochs: 2
#       train_size: 640
#       stop_at: 4
# ---

# %% [markdown] lang="en"
# # Resuming Real Training Jobs
#
# Lesson 2 resumed a loop that ran in one process and drew every random number from PyTorch's generator. Real jobs break that in ways that people keep reporting on the trackers of Transformers, Lightning and torchdata: the data loader's worker processes lose their place in the middle of an epoch; the cluster sends `SIGTERM`, waits a few seconds, and kills a job that never saved; the averaged weights that the job evaluates are not in the checkpoint; the disk fills with checkpoints. In this lesson you will, on a CPU, meet each failure and fix it with the tool that exists for it:
#
# 1. stop in the middle of an epoch with worker processes and a random augmentation, and resume with **bit-identical** weights (`torchdata`'s `StatefulDataLoader`, and the workers' random state);
# 2. preempt a real training process with `SIGTERM`, let it finish its step and save within the grace period, start it again, and get the weights of a run that never stopped;
# 3. save the exponential moving average (EMA) of the weights, and see what resuming without it evaluates;
# 4. keep the latest checkpoint and the best K, writing each completely before removing any other;
# 5. see where Lightning and Accelerate keep the same pieces.

# %% [markdown] lang="zh-CN"
# # 恢复真实的训练任务
#
# 第 2 课恢复的训练循环只在一个进程中运行，所有随机数都取自 PyTorch 的随机数生成器。真实的训练任务会以多种方式打破这些前提，Transformers、Lightning 和 torchdata 的问题跟踪器上一再有人报告：数据加载器的工作进程在一轮的中途丢失了读到的位置；集群发来 `SIGTERM`，等上几秒，就把一个从未保存过的任务杀掉；任务评估所用的平均权重不在检查点里；磁盘被检查点塞满。在本课中，你将在 CPU 上逐一遇到这些故障，并用专门应对它的现成工具解决它：
#
# 1. 在使用工作进程和随机数据增强时，在一轮的中途停下，再恢复训练，并得到**逐位相同**的权重（`torchdata` 的 `StatefulDataLoader`，以及工作进程的随机状态）；
# 2. 用 `SIGTERM` 抢占一个真实的训练进程，让它在宽限期内完成当前这一步并保存，再重新启动它，得到与从未停止的训练相同的权重；
# 3. 保存权重的指数移动平均（EMA），并看看不保存它时，恢复后的训练评估的是什么；
# 4. 保留最新的检查点和最佳的 K 个检查点，每个检查点都完整写好之后才删除别的检查点；
# 5. 看看 Lightning 和 Accelerate 把同样的这些内容保存在哪里。

# %% [markdown] lang="en"
# ## Imports and parameters
#
# Three new companion modules do the work: `resumable_data` (the data set and its workers' random state), `preemption` (turning `SIGTERM` into a request to stop) and `retention` (the latest and the best K). `resumable_job` puts them together into a training job that the notebook runs both in its own process and as a separate process.

# %% [markdown] lang="zh-CN"
# ## 导入模块和参数
#
# 本课的工作由三个新的配套模块完成：`resumable_data`（数据集及其工作进程的随机状态）、`preemption`（把 `SIGTERM` 变成一个停止请求）和 `retention`（最新的检查点与最佳的 K 个检查点）。`resumable_job` 把它们组合成一个训练任务，本 notebook 既在自己的进程中运行它，也把它作为单独的进程运行。

# %%
import inspect
import json
import math
import time
from pathlib import Path

import torch
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader

import fc_model
import helper
from saveload_lessons import devices, messages, preemption, resumable_data, resumable_job
from saveload_lessons.retention import CheckpointKeeper

# %% tags=["parameters"]
epochs = 2                             # passes over the training images
                                       # zh-CN: 遍历训练图像的轮数
stop_at = 10                           # the step after which a run is interrupted, in the middle of an epoch
                                       # zh-CN: 训练在这一步之后被中断，这一步位于一轮的中途
train_size = 1024                      # training images to use (64 per step)
                                       # zh-CN: 使用的训练图像数量（每步 64 张）
num_workers = 2                        # worker processes of the data loader
                                       # zh-CN: 数据加载器的工作进程数
ema_decay = 0.95                       # the share of the average that each step keeps
                                       # zh-CN: 每一步更新时，平均值保留旧值的比例
keep_best = 2                          # best checkpoints to keep besides the latest
                                       # zh-CN: 除最新的检查点外，保留的最佳检查点个数
device = "auto"                        # "auto", "cpu", "cuda" or "mps"
                                       # zh-CN: "auto"、"cpu"、"cuda" 或 "mps"
data_dir = "~/.pytorch/F_MNIST_data/"  # where torchvision keeps Fashion-MNIST
                                       # zh-CN: torchvision 存放 Fashion-MNIST 的目录
checkpoint_dir = "resumable-jobs"      # where this notebook writes its files
                                       # zh-CN: 本 notebook 写入文件的目录
seed = 7                               # fixes the initial weights, the data order and the workers' seeds
                                       # zh-CN: 固定初始权重、数据顺序和工作进程的种子

# %% tags=["nbval-ignore-output"]
# The companion modules speak the notebook's language
# zh-CN: 配套模块使用本 notebook 的语言
messages.set_language("en")
# zh-CN: messages.set_language("zh-CN")
fc_model.check_positive_int(epochs=epochs, stop_at=stop_at, train_size=train_size,
                            num_workers=num_workers, keep_best=keep_best)
if train_size > 60000:
    raise ValueError(f"train_size can be at most 60000 (the training set), got {train_size}")
    # zh-CN: raise ValueError(f"train_size 最多为 60000（训练集的大小），实际为 {train_size}")
if not 0 < ema_decay < 1:
    raise ValueError(f"ema_decay must lie between 0 and 1, got {ema_decay}")
    # zh-CN: raise ValueError(f"ema_decay 必须介于 0 和 1 之间，实际为 {ema_decay}")
steps_per_epoch = math.ceil(train_size / 64)
total_steps = epochs * steps_per_epoch
if stop_at >= total_steps or stop_at % steps_per_epoch == 0:
    raise ValueError(f"stop_at ({stop_at}) must fall in the middle of an epoch, before the end of the run: "
    # zh-CN: raise ValueError(f"stop_at（{stop_at}）必须落在某一轮的中途、训练结束之前："
                     f"an epoch has {steps_per_epoch} steps and the run {total_steps}")
                     # zh-CN: f"一轮有 {steps_per_epoch} 步，整个训练有 {total_steps} 步")
device = devices.get_device(device)
helper.prepare_fashion_mnist(data_dir)
checkpoint_dir = Path(checkpoint_dir)
checkpoint_dir.mkdir(parents=True, exist_ok=True)
print(f"{total_steps} steps ({epochs} epochs of {steps_per_epoch}), interrupted after step {stop_at}; "
# zh-CN: print(f"共 {total_steps} 步（{epochs} 轮，每轮 {steps_per_epoch} 步），在第 {stop_at} 步之后中断；"
      f"{num_workers} worker processes; device: {device}")
      # zh-CN: f"{num_workers} 个工作进程；设备：{device}")

# %% [markdown] lang="en"
# ## The data, with a random augmentation
#
# Real training sets are read and augmented while the model trains, by the data loader's *worker processes*. Here `resumable_data.AugmentedImages` plays that part: each time it is asked for an image, it moves it by up to two pixels, mirrors it half of the time and adds a little noise. Each of these draws from a different generator, as real augmentation pipelines do: PyTorch's, Python's `random` and NumPy's.

# %% [markdown] lang="zh-CN"
# ## 数据与随机数据增强
#
# 真实的训练集是在模型训练的同时，由数据加载器的*工作进程*读取并做数据增强的。这里由 `resumable_data.AugmentedImages` 扮演这个角色：每次被请求一张图像时，它都把图像平移至多两个像素，以一半的概率左右翻转，再加上一点噪声。和真实的数据增强流程一样，这三项操作分别从不同的随机数生成器中取随机数：PyTorch 的、Python `random` 的和 NumPy 的。

# %%
print(inspect.getsource(resumable_data.AugmentedImages.__getitem__))

# %%
images, labels = helper.fashion_mnist_tensors(data_dir)
images, labels = images[:train_size].clone(), labels[:train_size].clone()
test_images, test_labels = helper.fashion_mnist_tensors(data_dir, train=False)
test_batches = [(test_images[:1000].to(device), test_labels[:1000].to(device))]
criterion = torch.nn.NLLLoss()

# %% [markdown] lang="en"
# ## 1. Stopping in the middle of an epoch
#
# Lesson 2 resumed at the start of an epoch, or skipped the batches already done by drawing them again. A job whose epoch takes hours cannot wait for its end to save, nor afford to read and augment again everything it skips. What does an ordinary `DataLoader` do when a job restarts in the middle of an epoch? A new iterator shuffles anew. Here the batches of the epoch up to the stop are those of the interrupted run, and the rest of the epoch, as many batches as were left, comes from a new iterator, as a restarted job gets it (the numbers are the indices of the images, without training):

# %% [markdown] lang="zh-CN"
# ## 1. 在一轮的中途停止
#
# 第 2 课在一轮的开头恢复训练，或者把已经训练过的批次重新抽取一遍再跳过。一轮要跑好几个小时的任务，既不能等到一轮结束才保存，也承担不起把要跳过的数据全部重新读取、重新增强一遍的代价。任务在一轮的中途重新启动时，普通的 `DataLoader` 会怎样？新的迭代器会重新打乱数据。下面，这一轮中到中断为止的批次来自被中断的训练，这一轮的其余部分（批次数与中断时剩下的相同）来自一个新的迭代器，就像重新启动的任务得到的那样（这里的数字是图像的编号，不做训练）：

# %%
def seen_in_one_epoch(loader_class):
    # The image indices of the epoch that the stop after step stop_at interrupts, then continued
    # zh-CN: 被第 stop_at 步之后的中断打断、随后继续的那一轮中，各批次图像的编号
    done = stop_at % steps_per_epoch
    torch.manual_seed(seed)
    loader = loader_class(range(train_size), batch_size=64, shuffle=True)
    before = [index for _, batch in zip(range(done), loader) for index in batch.tolist()]
    state = loader.state_dict() if loader_class is StatefulDataLoader else None
    loader = loader_class(range(train_size), batch_size=64, shuffle=True)  # the restarted job's loader
                                                                           # zh-CN: 重新启动的任务的数据加载器
    if state is not None:
        loader.load_state_dict(state)
    after = [index for _, batch in zip(range(steps_per_epoch - done), loader) for index in batch.tolist()]
    return before, after

for loader_class in (DataLoader, StatefulDataLoader):
    before, after = seen_in_one_epoch(loader_class)
    twice = len(set(before) & set(after))
    never = train_size - len(set(before) | set(after))
    print(f"{loader_class.__name__:18}: {twice:4} images seen twice, {never:4} never seen in the epoch")
    # zh-CN: print(f"{loader_class.__name__:18}：这一轮中有 {twice:4} 张图像出现了两次，有 {never:4} 张从未出现")

# %% [markdown] lang="en"
# `StatefulDataLoader` from `torchdata` is a drop-in replacement for `DataLoader` with two more methods: `state_dict()` records the shuffled order (the state of its sampler's own generator) and how far the epoch has gone, and `load_state_dict()` makes the next iterator continue from there. Its state is made of numbers and tensors, so it belongs in the checkpoint next to the model's.
#
# The order is only half of it. Now train: a `resumable_job.Job` holds the network of lesson 1 (smaller), its Adam optimizer, an EMA of its weights (section 3) and a data loader with `num_workers` worker processes over the augmented images. `train_steps` trains it up to a number of steps; `Job.checkpoint()` gathers everything into one general checkpoint and `Job.resume()` restores it:

# %% [markdown] lang="zh-CN"
# `torchdata` 中的 `StatefulDataLoader` 可以直接替换 `DataLoader`，并多出两个方法：`state_dict()` 记录打乱后的顺序（即其采样器自有生成器的状态）以及这一轮已经进行到哪里，`load_state_dict()` 则让下一个迭代器从那里继续。它的状态由数字和张量组成，所以应当和模型的状态一起放进检查点。
#
# 顺序只是问题的一半。现在来训练：`resumable_job.Job` 包含第 1 课的网络（规模小一些）、它的 Adam 优化器、其权重的 EMA（第 3 节），以及一个带 `num_workers` 个工作进程、读取增强后图像的数据加载器。`train_steps` 把它训练到指定的步数；`Job.checkpoint()` 把所有这些收集到一个通用检查点中，`Job.resume()` 再从这个检查点恢复它们：

# %%
print(inspect.getsource(resumable_job.Job.resume))

# %% [markdown] lang="en"
# Two runs are interrupted after `stop_at` steps, saved, forgotten, and resumed from the file alone; each is compared with a run that never stopped. Both read with a `StatefulDataLoader`, one over `AugmentedImages`, the other over `StatefulAugmentedImages`, the same data set with a state of its own (below). The run that never stops prints lesson 1's progress line at the end of each epoch (`resumable_job.EpochReport`).

# %% [markdown] lang="zh-CN"
# 下面有两次训练在第 `stop_at` 步之后被中断、保存、丢弃，再只凭文件恢复，结果都与一次从未停止的训练比较。两次都用 `StatefulDataLoader` 读取数据，一次读取 `AugmentedImages`，另一次读取 `StatefulAugmentedImages`，即同一个数据集，只是带有自己的状态（见下文）。从未停止的那次训练在每一轮结束时打印第 1 课的进度行（`resumable_job.EpochReport`）。

# %%
def new_job(**options):
    # A job of this lesson, from the same seed every time
    # zh-CN: 本课的一个训练任务，每次都从同一个种子开始
    return resumable_job.Job(images, labels, seed, num_workers, ema_decay=ema_decay, device=device, **options)

def interrupted_run(name, **options):
    # Train to stop_at, save, forget everything, resume from the file alone, train to the end
    # zh-CN: 训练到第 stop_at 步，保存，丢弃一切，只凭文件恢复，再训练到结束
    job = new_job(**options)
    resumable_job.train_steps(job, stop_at)
    path = checkpoint_dir / f"{name}.pt"
    torch.save(job.checkpoint(), path)
    del job
    job = new_job(**options)
    job.resume(path)
    resumable_job.train_steps(job, total_steps)
    return job

def same_tensors(first, second):
    # True when two state dicts hold exactly equal tensors
    # zh-CN: 两个状态字典中的张量完全相等时返回 True
    return all(torch.equal(a, b) for a, b in zip(first.values(), second.values()))

# %% tags=["nbval-ignore-output"]
reference = new_job()
resumable_job.train_steps(reference, total_steps, after_step=resumable_job.EpochReport(epochs, test_batches))
runs = {"AugmentedImages": interrupted_run("augmented", dataset_class=resumable_data.AugmentedImages),
        "StatefulAugmentedImages": interrupted_run("stateful")}
same = {name: same_tensors(resumed.model.state_dict(), reference.model.state_dict()) for name, resumed in runs.items()}
for name, identical in same.items():
    print(f"{name:23} resumed run has the weights of the uninterrupted one: {identical}")
    # zh-CN: print(f"{name:23} 恢复的训练与不中断的训练权重相同：{identical}")
if device.type == "cpu":
    assert same == {"AugmentedImages": False, "StatefulAugmentedImages": True}

# %% [markdown] lang="en"
# ### The workers' random numbers
#
# Why does the `StatefulDataLoader` alone not suffice? Each time an epoch's iterator is created, the loader draws a *base seed* from PyTorch's generator. Worker `i` then seeds three generators of its own process: PyTorch's and Python's `random` with `base_seed + i`, and NumPy's with a seed computed from both. The augmentation draws from them, so each worker's generators move on with every image. `StatefulDataLoader` saves the base seed, but a resumed worker seeds its generators again from it, as if the epoch had just begun: the rest of the epoch gets other shifts, flips and noise.
#
# The fix is the hook that `StatefulDataLoader` offers: when the *data set* has `state_dict` and `load_state_dict` methods, the loader calls `state_dict` in each worker with every batch, keeps the latest one of each worker in its own state, and calls `load_state_dict` in the resumed worker. `resumable_data.WorkerRandomState` gives a data set exactly that, the three generator states of the process it runs in (as tensors, numbers and tuples, so the checkpoint still loads with `weights_only=True`):

# %% [markdown] lang="zh-CN"
# ### 工作进程的随机数
#
# 为什么只用 `StatefulDataLoader` 还不够？每次创建一轮的迭代器时，数据加载器都会从 PyTorch 的生成器中抽取一个*基础种子*。然后第 `i` 个工作进程为自己进程中的三个生成器设定种子：PyTorch 的和 Python `random` 的种子是 `base_seed + i`，NumPy 的种子由这两者计算得出。数据增强从这些生成器中取随机数，所以每处理一张图像，每个工作进程的生成器都会向前推进。`StatefulDataLoader` 保存了基础种子，但恢复后的工作进程会再次用它为自己的生成器设定种子，就好像这一轮刚刚开始一样：这一轮剩下的图像得到的就是另外的平移、翻转和噪声。
#
# 解决办法是 `StatefulDataLoader` 提供的钩子：如果*数据集*有 `state_dict` 和 `load_state_dict` 方法，数据加载器每取一个批次，都会在各个工作进程中调用 `state_dict`，把每个工作进程最新的那份结果保存在自己的状态中，并在恢复后的工作进程中调用 `load_state_dict`。`resumable_data.WorkerRandomState` 正好为数据集提供了这样的状态：它所在进程的三个生成器的状态（以张量、数字和元组的形式保存，所以检查点仍然可以用 `weights_only=True` 加载）：

# %%
print(inspect.getsource(resumable_data.WorkerRandomState.state_dict))

# %% [markdown] lang="en"
# Two more details make the resumed run exact:
#
# - **Restore PyTorch's generator last.** Creating the resumed iterator still draws a base seed (then replaced by the saved one), so restoring the generator before it leaves the generator one draw ahead, and dropout and every later epoch differ. `resumable_data.resumed_batches` creates the iterator first and restores the generators after it, as lesson 2's `train` restores them after building the network.
# - **Define the data set in a module.** Under the `spawn` and `forkserver` start methods (Windows, macOS, and Linux from Python 3.14), every worker imports the data set's class by its name, which a class defined in a notebook cell does not have.
#
# With `num_workers=0` the data set runs in the main process, whose Python and NumPy generators `torch.manual_seed` does not seed: seed them yourself and save them too.

# %% [markdown] lang="zh-CN"
# 要让恢复的训练完全一致，还有两个细节：
#
# - **最后再恢复 PyTorch 的生成器。** 创建恢复后的迭代器时，仍然会抽取一个基础种子（随后被保存的种子替换），所以如果在此之前恢复生成器，生成器就会比原来多抽取一次，dropout 和之后的每一轮都会不同。`resumable_data.resumed_batches` 先创建迭代器，再恢复生成器，就像第 2 课的 `train` 在构建网络之后才恢复生成器一样。
# - **在模块中定义数据集。** 在 `spawn` 和 `forkserver` 启动方法下（Windows、macOS，以及从 Python 3.14 起的 Linux），每个工作进程都要按名字导入数据集的类，而在 notebook 单元格中定义的类没有这样的名字。
#
# 当 `num_workers=0` 时，数据集在主进程中运行，而 `torch.manual_seed` 不会为主进程中 Python 和 NumPy 的生成器设定种子：请自己为它们设定种子，并把它们也保存下来。

# %% [markdown] lang="en"
# ## 2. Preemption: `SIGTERM` and its grace period
#
# Shared clusters and cloud providers take machines back. SLURM at the time limit or on `scancel`, and Kubernetes when it deletes a pod, send the job `SIGTERM`, wait a *grace period* (by default 30 s on both: SLURM's `KillWait`, Kubernetes' `terminationGracePeriodSeconds`), then send `SIGKILL`, which no process can catch. A spot instance gets a notice (two minutes on AWS, 30 s on Google Cloud) and is then shut down. Python's default for `SIGTERM` is to die at once: everything since the last checkpoint is lost.
#
# The job should instead finish the step it is in, save, and exit with a status that says "preempted, start me again" (`preemption.PREEMPTED`, 75, is `EX_TEMPFAIL` of `sysexits.h`). The handler itself must only *record* the request: Python runs it in the main thread between two bytecode instructions, which may be in the middle of `optimizer.step()` (half of the parameters updated) or of `torch.save` writing the previous checkpoint. A checkpoint saved from there holds a state the training never had, or interleaves two writes of one file. `preemption.StopRequest` records the signal and nothing else:

# %% [markdown] lang="zh-CN"
# ## 2. 抢占：`SIGTERM` 与宽限期
#
# 共享集群和云服务商都会把机器收回。SLURM 在到达时间限制或执行 `scancel` 时、Kubernetes 在删除 Pod 时，都会先给任务发送 `SIGTERM`，等待一段*宽限期*（两者默认都是 30 秒：SLURM 的 `KillWait`、Kubernetes 的 `terminationGracePeriodSeconds`），然后发送任何进程都无法捕获的 `SIGKILL`。竞价实例会先收到一个通知（AWS 上提前两分钟，Google Cloud 上提前 30 秒），然后被关机。Python 对 `SIGTERM` 的默认处理是立即终止进程：上一个检查点之后的所有进展都会丢失。
#
# 任务应当改为：完成当前这一步，保存，然后退出，用退出状态表示“已被抢占，请重新启动我”（`preemption.PREEMPTED`，即 75，是 `sysexits.h` 中的 `EX_TEMPFAIL`）。信号处理函数本身只能*记下*这个请求：Python 在主线程中的两条字节码指令之间运行它，而这可能正处在 `optimizer.step()` 的中间（一半参数已经更新），或者正处在 `torch.save` 写入上一个检查点的过程中。在这种时候保存的检查点，要么包含训练从未有过的状态，要么让同一个文件的两次写入交织在一起。`preemption.StopRequest` 只记下信号，别的什么都不做：

# %%
print(inspect.getsource(preemption.StopRequest))

# %% [markdown] lang="en"
# `train_steps` looks at `stop.requested` at the end of every step; the job's `main` then saves (section 4 says how) and returns `PREEMPTED`. The job runs as a separate process, started with `python -m saveload_lessons.resumable_job`, and reads its examples from a file. It saves every `eval_every` steps, so the first file shows that it is under way. As soon as that file exists, the job receives `SIGTERM` (`preemption.request_stop`), at whatever point of a step it happens to be:

# %% [markdown] lang="zh-CN"
# `train_steps` 在每一步结束时检查 `stop.requested`；之后任务的 `main` 会保存（怎样保存见第 4 节）并返回 `PREEMPTED`。这个任务作为单独的进程运行，用 `python -m saveload_lessons.resumable_job` 启动，从一个文件中读取样本。它每隔 `eval_every` 步保存一次，所以第一个文件出现就说明它已经在运行了。这个文件一出现，就给任务发送 `SIGTERM`（`preemption.request_stop`），不管它正处在一步中的什么位置：

# %% tags=["nbval-ignore-output"]
examples = checkpoint_dir / "examples.pt"
resumable_job.save_examples(examples, (images, labels), (test_images[:1000], test_labels[:1000]))
eval_every = max(1, stop_at // 2)

def job_arguments(folder):
    # The command line of the job that saves into folder
    # zh-CN: 把检查点保存到 folder 的训练任务的命令行
    return ["-m", "saveload_lessons.resumable_job", "--examples", str(examples), "--checkpoint-dir", str(folder),
            "--steps", str(total_steps), "--seed", str(seed), "--num-workers", str(num_workers),
            "--ema-decay", str(ema_decay), "--eval-every", str(eval_every), "--keep-best", str(keep_best),
            "--device", str(device), "--min-step-seconds", "0.02"]

def finish(process):
    # Wait for the job; print what it printed; return its exit status
    # zh-CN: 等待任务结束，打印它的输出，返回它的退出状态
    output, _ = process.communicate(timeout=600)
    print(output.strip())
    return process.returncode

preempted_dir = checkpoint_dir / "preempted"
for old in preempted_dir.glob("*"):
    old.unlink()
process = preemption.start(job_arguments(preempted_dir))
keeper = CheckpointKeeper(preempted_dir, keep_best=keep_best)
while keeper.latest() is None and process.poll() is None:
    time.sleep(0.01)
preemption.request_stop(process)
status = finish(process)
print(f"exit status: {status}; latest checkpoint: {keeper.latest().name}")
# zh-CN: print(f"退出状态：{status}；最新的检查点：{keeper.latest().name}")
assert status == preemption.PREEMPTED

# %% [markdown] lang="en"
# The job finished its step, saved and said so with its exit status. A scheduler (or a SLURM script that checks `$?`, or Kubernetes restarting the pod) starts it again with the same command; it finds its latest checkpoint and resumes in the middle of the epoch:

# %% [markdown] lang="zh-CN"
# 任务完成了当前这一步，保存了检查点，并用退出状态说明了这一点。调度器（或者检查 `$?` 的 SLURM 脚本，或者重启 Pod 的 Kubernetes）用同一条命令再次启动它；它找到自己最新的检查点，在这一轮的中途恢复训练：

# %% tags=["nbval-ignore-output"]
status = finish(preemption.start(job_arguments(preempted_dir)))
assert status == 0, f"the resumed job failed with status {status}"
# zh-CN: assert status == 0, f"恢复的训练任务失败，退出状态为 {status}"

# %% [markdown] lang="en"
# Its last checkpoint is compared with the run of section 1 that never stopped, which trained in this notebook's process with the same seed and examples:

# %% [markdown] lang="zh-CN"
# 把它的最后一个检查点与第 1 节中那次从未停止的训练比较；那次训练在本 notebook 的进程中进行，使用相同的种子和样本：

# %%
resumed = torch.load(keeper.latest(), weights_only=True)
uninterrupted = {"model_state_dict": reference.model.state_dict(), "ema_state_dict": reference.ema.state_dict()}
for key in uninterrupted:
    print(f"{key:17} identical after a real SIGTERM: {same_tensors(uninterrupted[key], resumed[key])}")
    # zh-CN: print(f"{key:17} 经历真实的 SIGTERM 之后仍然逐位相同：{same_tensors(uninterrupted[key], resumed[key])}")
if device.type == "cpu":
    assert all(same_tensors(uninterrupted[key], resumed[key]) for key in uninterrupted)

# %% [markdown] lang="en"
# Three things decide whether this works in production:
#
# - **The save must fit in the grace period.** Measure how long a save takes; with a big model, save asynchronously (lesson 5's `dcp.async_save`) or ask the scheduler for more time (`sbatch --signal=TERM@120` sends the signal 120 s before the time limit; Kubernetes' `terminationGracePeriodSeconds`).
# - **The signal must reach Python.** Under SLURM, `sbatch --signal` without `B:` signals the job steps started by `srun`, not the batch script; with `B:` only the batch shell gets it: start Python with `exec python ...`, so that Python takes the shell's place and receives the signal, or forward it yourself. In a container, the process that gets `SIGTERM` is PID 1. A main thread stuck in a long C call (a collective that hangs) runs the handler only when the call returns.
# - **Windows has no `SIGTERM` from outside.** `Popen.terminate()` and `os.kill` end a Windows process at once, with no handler. A process started with `CREATE_NEW_PROCESS_GROUP` can be sent `CTRL_BREAK_EVENT`, which raises `SIGBREAK` in it: `preemption` uses that signal there (this path is not tested on this collection's Linux CI).

# %% [markdown] lang="zh-CN"
# 在生产环境中，能否做到这一点取决于三件事：
#
# - **保存必须在宽限期内完成。** 先测量一次保存要花多长时间；模型很大时，可以异步保存（第 5 课的 `dcp.async_save`），或者向调度器要更多时间（`sbatch --signal=TERM@120` 会在时间限制到达前 120 秒发送信号；Kubernetes 则有 `terminationGracePeriodSeconds`）。
# - **信号必须送达 Python。** 在 SLURM 中，不带 `B:` 的 `sbatch --signal` 把信号发给由 `srun` 启动的作业步，而不是批处理脚本；带 `B:` 时只有批处理 shell 收到信号：用 `exec python ...` 启动 Python，让 Python 取代这个 shell 并收到信号，或者自己把信号转发过去。在容器中，收到 `SIGTERM` 的是 PID 为 1 的进程。如果主线程卡在一个很长的 C 调用中（例如一个挂起的集合通信），信号处理函数要等这个调用返回后才会运行。
# - **Windows 上没有来自外部的 `SIGTERM`。** 在 Windows 上，`Popen.terminate()` 和 `os.kill` 会立即结束进程，不会运行任何信号处理函数。对于用 `CREATE_NEW_PROCESS_GROUP` 启动的进程，可以向它发送 `CTRL_BREAK_EVENT`，这会在该进程中引发 `SIGBREAK`：`preemption` 在 Windows 上使用的就是这个信号（本课程的 Linux CI 没有测试这条路径）。

# %% [markdown] lang="en"
# ## 3. EMA weights
#
# Many models are evaluated and shipped with an *exponential moving average* of their weights, which is smoother than the last weights: after every step, `ema = decay * ema + (1 - decay) * weights`. PyTorch has it as `torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))`; `update_parameters(model)` after each step updates it (the first update copies the weights). Its `state_dict` holds the averaged copy (`module.` plus the model's names) and `n_averaged`, the number of updates:

# %% [markdown] lang="zh-CN"
# ## 3. EMA 权重
#
# 许多模型在评估和发布时使用的是权重的*指数移动平均*（EMA），它比最后的权重更平滑：每一步之后，`ema = decay * ema + (1 - decay) * weights`。PyTorch 用 `torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))` 实现它；每一步之后调用 `update_parameters(model)` 来更新它（第一次更新直接复制权重）。它的 `state_dict` 包含平均后的副本（键名为 `module.` 加上模型原来的名字）和 `n_averaged`，即更新的次数：

# %%
print(list(reference.ema.state_dict()))
print(f"n_averaged = {reference.ema.n_averaged.item()}")

# %% [markdown] lang="en"
# The resumed run of section 1 restored the average from its checkpoint. A job whose checkpoint lacks it can only start a new average from the weights it resumes with. Both are compared here with the uninterrupted run, on the first 1000 test images:

# %% [markdown] lang="zh-CN"
# 第 1 节中恢复的训练从检查点中恢复了这个平均值。如果检查点里没有它，任务就只能从恢复时的权重出发，重新开始一个平均值。下面在前 1000 张测试图像上，把这两种情况与不中断的训练比较：

# %% tags=["nbval-ignore-output"]
without_ema = new_job()
without_ema.resume(checkpoint_dir / "stateful.pt")
# What a checkpoint without the EMA leaves: a new average of the resumed weights
# zh-CN: 检查点中没有 EMA 时只能这样做：从恢复的权重开始一个新的平均值
without_ema.ema = AveragedModel(without_ema.model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay))
resumable_job.train_steps(without_ema, total_steps)
with_ema = runs["StatefulAugmentedImages"]

def ema_accuracy(job):
    # The test accuracy of a job's averaged network
    # zh-CN: 训练任务中平均后的网络的测试准确率
    return fc_model.validation(job.ema.module, test_batches, criterion)[1]

for name, job in [("uninterrupted", reference), ("resumed with the EMA", with_ema), ("resumed without it", without_ema)]:
# zh-CN: for name, job in [("不中断的训练", reference), ("恢复时带 EMA", with_ema), ("恢复时不带 EMA", without_ema)]:
    identical = same_tensors(job.ema.state_dict(), reference.ema.state_dict())
    print(f"{name:21} EMA test accuracy {ema_accuracy(job):.4f}, same EMA as uninterrupted: {identical}")
    # zh-CN: print(f"{name:21} EMA 测试准确率 {ema_accuracy(job):.4f}，EMA 与不中断的训练相同：{identical}")
if device.type == "cpu":
    assert same_tensors(with_ema.ema.state_dict(), reference.ema.state_dict())
    assert not same_tensors(without_ema.ema.state_dict(), reference.ema.state_dict())

# %% [markdown] lang="en"
# Without its average, the resumed run evaluates and would ship a different model, whose average covers only the steps since the restart. Networks with BatchNorm have one more piece: by default `AveragedModel` copies the buffers (the running mean and variance) from the current model instead of averaging them; either pass `use_buffers=True`, or recompute the statistics for the averaged weights with `torch.optim.swa_utils.update_bn(loader, ema)` before evaluating.

# %% [markdown] lang="zh-CN"
# 没有了平均值，恢复的训练评估（并可能发布）的就是另一个模型，它的平均值只涵盖重新启动之后的那些步。带批量归一化（BatchNorm）层的网络还多一项内容要注意：`AveragedModel` 默认直接从当前模型复制缓冲区（滑动均值和方差），而不是对它们取平均；要么传入 `use_buffers=True`，要么在评估之前用 `torch.optim.swa_utils.update_bn(loader, ema)` 为平均后的权重重新计算这些统计量。

# %% [markdown] lang="en"
# ## 4. The latest checkpoint and the best K
#
# A job that saves every few minutes for days cannot keep every file, and one that keeps only the newest loses its best model when the last epochs overfit. `retention.CheckpointKeeper` keeps the latest checkpoint (to resume from) and the `keep_best` best ones by a metric (here the EMA's test accuracy), in files named after their step as lesson 5 names its step folders, with a small ledger, `checkpoints.json`, that says which is which. Every save goes in three steps, each complete before the next: the new file is written atomically (`atomic_write`, lesson 2); the ledger is replaced, atomically too, by one that names it; only then are the files that the ledger no longer names deleted. A kill at any moment leaves a ledger that names complete files only. The preempted job's folder:

# %% [markdown] lang="zh-CN"
# ## 4. 最新的检查点与最佳的 K 个检查点
#
# 一个连续几天、每隔几分钟就保存一次的任务，不可能保留所有文件；而只保留最新文件的任务，一旦最后几轮过拟合，就会丢掉最佳的模型。`retention.CheckpointKeeper` 保留最新的检查点（用于恢复训练）和按某个指标（这里是 EMA 的测试准确率）排名最佳的 `keep_best` 个检查点。文件以步数命名，与第 5 课给步骤目录命名的方式相同，另有一个小小的记录文件 `checkpoints.json`，说明哪个文件是哪一种。每次保存分三步进行，每一步都完成后才进行下一步：先以原子方式写入新文件（`atomic_write`，第 2 课）；再把记录文件替换为提到这个新文件的版本（同样是原子操作）；最后才删除记录文件不再提到的文件。无论在哪个时刻被杀掉，记录文件中提到的都只有完整的文件。被抢占过的任务的目录：

# %%
print(sorted(path.name for path in preempted_dir.iterdir()))
print(json.dumps(json.loads((preempted_dir / "checkpoints.json").read_text()), indent=None))

# %% [markdown] lang="en"
# In so short a run the accuracy still rises at every evaluation, so the best checkpoints are also the newest; in a long run they part ways (exercise 7.3 tries such runs).
#
# A save that fails halfway, here because the disk is full (`OSError`), changes nothing: the ledger, the latest checkpoint and the best ones stay as they were.

# %% [markdown] lang="zh-CN"
# 训练这么短，准确率在每次评估时都还在上升，所以最佳的检查点同时也是最新的几个；在长时间的训练中，两者就不再重合（练习 7.3 会尝试这样的训练）。
#
# 中途失败的保存（这里是因为磁盘已满，`OSError`）不会改变任何东西：记录文件、最新的检查点和最佳的检查点都保持原样。

# %%
def disk_full(file):
    # Writes half a checkpoint, then fails as a full disk does
    # zh-CN: 写入半个检查点，然后像磁盘已满时那样失败
    file.write(b"PK\x03\x04 half a checkpoint")
    raise OSError(28, "No space left on device")

before = sorted(path.name for path in preempted_dir.iterdir())
try:
    keeper.save(total_steps + 1, 1.0, disk_full)
except OSError as error:
    print(f"the save failed: {error}")
    # zh-CN: print(f"保存失败：{error}")
after = sorted(path.name for path in preempted_dir.iterdir())
print(f"the folder is unchanged: {before == after}")
# zh-CN: print(f"目录没有任何变化：{before == after}")
assert before == after

# %% [markdown] lang="en"
# To use the best checkpoint for predictions, take the averaged weights out of it: `torch.nn.modules.utils.consume_prefix_in_state_dict_if_present` removes the `module.` prefix that `AveragedModel` added, and `n_averaged` is not a weight of the network.

# %% [markdown] lang="zh-CN"
# 要用最佳的检查点做预测，就把其中平均后的权重取出来：`torch.nn.modules.utils.consume_prefix_in_state_dict_if_present` 会去掉 `AveragedModel` 加上的 `module.` 前缀，而 `n_averaged` 不是网络的权重。

# %%
best_path, best_accuracy = keeper.best()[0]
ema_weights = torch.load(best_path, weights_only=True)["ema_state_dict"]
del ema_weights["n_averaged"]
consume_prefix_in_state_dict_if_present(ema_weights, "module.")
network = fc_model.Network(784, 10, resumable_job.HIDDEN_LAYERS)
network.load_state_dict(ema_weights)
_, accuracy = fc_model.validation(network, test_batches, criterion)
print(f"{best_path.name} records {best_accuracy:.4f}; test accuracy of its EMA weights: {accuracy:.4f}")
# zh-CN: print(f"{best_path.name} 记录的准确率为 {best_accuracy:.4f}；其 EMA 权重的测试准确率：{accuracy:.4f}")
if device.type == "cpu":
    assert accuracy == best_accuracy

# %% [markdown] lang="en"
# ## 5. The same pieces in a framework
#
# Frameworks save the same pieces under their own names. This table maps them to this lesson's checkpoint (Lightning 2.6, Accelerate 1.x):
#
# | This lesson | PyTorch Lightning | Accelerate |
# |---|---|---|
# | `model_state_dict`, `optimizer_state_dict`, `step` | `state_dict`, `optimizer_states`, `global_step` and `epoch` | `model.safetensors`, `optimizer.bin` (`accelerator.save_state(folder)`) |
# | `loader_state` (`StatefulDataLoader`) | in `loops` (`fit_loop`), when the loader has `state_dict`; otherwise a warning, and the epoch starts again | `dl_state_dict.bin` with `DataLoaderConfiguration(use_stateful_dataloader=True)`; otherwise `skip_first_batches` |
# | `rng` and the workers' generators | not saved by the trainer's checkpoints | `random_states_{process}.pkl`: the Python, NumPy, PyTorch and device generators of each training process, not those of its loader's workers |
# | `ema_state_dict` | the `WeightAveraging` and `EMAWeightAveraging` callbacks (2.6): the checkpoint's `state_dict` then holds the *averaged* weights | an object passed to `register_for_checkpointing`, saved as `custom_checkpoint_{i}.pkl` |
# | `SIGTERM`: finish the step, save, exit 75 | a handler stops after the current batch, but saves nothing unless `OnExceptionCheckpoint` or `ModelCheckpoint(save_on_exception=True)` is used; on SLURM, `SIGUSR1` saves and requeues the job | nothing built in |
# | latest and best K (`CheckpointKeeper`) | `ModelCheckpoint(monitor=..., mode=..., save_top_k=K, save_last=True)`; `trainer.fit(model, ckpt_path="last")` resumes | `ProjectConfiguration(automatic_checkpoint_naming=True, total_limit=N)` keeps the *newest* N, not the best |
#
# One safety note: Accelerate loads the objects registered with `register_for_checkpointing` with `weights_only=False`, which runs any code a forged file contains (lesson 3). Resume only from checkpoints your own job wrote.

# %% [markdown] lang="zh-CN"
# ## 5. 框架中的相同内容
#
# 各个框架保存的也是这些内容，只是用了各自的名字。下表把它们与本课的检查点对应起来（Lightning 2.6、Accelerate 1.x）：
#
# | 本课 | PyTorch Lightning | Accelerate |
# |---|---|---|
# | `model_state_dict`、`optimizer_state_dict`、`step` | `state_dict`、`optimizer_states`、`global_step` 和 `epoch` | `model.safetensors`、`optimizer.bin`（`accelerator.save_state(folder)`） |
# | `loader_state`（`StatefulDataLoader`） | 数据加载器有 `state_dict` 时保存在 `loops`（`fit_loop`）中；否则给出警告，从这一轮的开头重新开始 | 使用 `DataLoaderConfiguration(use_stateful_dataloader=True)` 时保存为 `dl_state_dict.bin`；否则用 `skip_first_batches` |
# | `rng` 和工作进程的生成器 | 训练器的检查点不保存 | `random_states_{process}.pkl`：每个训练进程的 Python、NumPy、PyTorch 和各设备的生成器，但不包括其数据加载器的工作进程的生成器 |
# | `ema_state_dict` | `WeightAveraging` 和 `EMAWeightAveraging` 回调（2.6）：此时检查点的 `state_dict` 中是*平均后*的权重 | 传给 `register_for_checkpointing` 的对象，保存为 `custom_checkpoint_{i}.pkl` |
# | `SIGTERM`：完成当前这一步，保存，以退出状态 75 退出 | 信号处理函数会在当前批次之后停止训练，但除非使用 `OnExceptionCheckpoint` 或 `ModelCheckpoint(save_on_exception=True)`，否则什么也不保存；在 SLURM 上，`SIGUSR1` 会保存并重新排队 | 没有内置支持 |
# | 最新的检查点与最佳的 K 个（`CheckpointKeeper`） | `ModelCheckpoint(monitor=..., mode=..., save_top_k=K, save_last=True)`；`trainer.fit(model, ckpt_path="last")` 恢复训练 | `ProjectConfiguration(automatic_checkpoint_naming=True, total_limit=N)` 保留*最新*的 N 个，而不是最佳的 |
#
# 安全提示：Accelerate 用 `weights_only=False` 加载通过 `register_for_checkpointing` 注册的对象，这会运行伪造文件中的任何代码（第 3 课）。只从你自己的任务写出的检查点恢复训练。

# %% [markdown] lang="en"
# ## Summary
#
# - A checkpoint that resumes a real job holds the model, the optimizer, the step, the random-number-generator states, the data loader's state (`StatefulDataLoader`), the workers' generators (a data set with `state_dict`), and the EMA weights. Restore the generators last.
# - On `SIGTERM`, only record the request; finish the step, save atomically within the grace period, and exit with a status that says "start me again".
# - Keep the latest checkpoint and the best K; write each file completely, then the ledger, and delete old files last.

# %% [markdown] lang="zh-CN"
# ## 小结
#
# - 能恢复真实训练任务的检查点包含：模型、优化器、步数、随机数生成器状态、数据加载器的状态（`StatefulDataLoader`）、工作进程的生成器（带 `state_dict` 的数据集）以及 EMA 权重。最后再恢复生成器。
# - 收到 `SIGTERM` 时只记下这个请求；完成当前这一步，在宽限期内以原子方式保存，再退出，用退出状态表示“请重新启动我”。
# - 保留最新的检查点和最佳的 K 个；先完整写好每个文件，再写记录文件，最后才删除旧文件。

# %% [markdown] lang="en"
# ## Exercises
#
# Each exercise asks you to write a function; the check cell right after it runs your function on small objects of its own and tells you what is missing or wrong. Run the next cell first: it imports what the exercises need, so they work even after a kernel restart, without the cells above. In the student edition each answer is `raise NotImplementedError()`: replace it with your code, run that cell, then run the check cell after it.

# %% [markdown] lang="zh-CN"
# ## 练习
#
# 每道练习都要求你写一个函数；紧跟在它后面的检查单元格会用自己创建的小对象运行你的函数，并告诉你缺了什么或错在哪里。请先运行下面这个单元格：它导入练习需要的一切，所以即使重启了内核、没有运行上面的单元格，也能做练习。在学生版中，每个答案都是 `raise NotImplementedError()`：把它换成你的代码，运行这个单元格，再运行它后面的检查单元格。

# %%
import signal
from pathlib import Path

import torch
from torch import nn

from saveload_lessons import exercise_checks
from saveload_lessons.files import atomic_write

check = exercise_checks.for_lesson(7, language="en")
# zh-CN: check = exercise_checks.for_lesson(7, language="zh-CN")

# %% [markdown] lang="en"
# **Exercise 7.1: resuming in the middle of an epoch.** Write `train_steps_resumable(model, optimizer, loader, steps, path)`. `loader` is a `StatefulDataLoader` that shuffles. The function trains until `steps` steps have been done in all, counting the steps of earlier calls and across epochs, so a call may stop in the middle of an epoch. After every step it saves to `path` what it needs to continue exactly; if `path` exists, it continues from it. Each step is `optimizer.zero_grad()`, `nn.functional.mse_loss(model(inputs), targets).backward()`, `optimizer.step()`. The check trains without stopping, then again in several calls, each with a new model, optimizer and loader that only the file can set right, and compares the weights bit for bit.

# %% [markdown] lang="zh-CN"
# **练习 7.1：在一轮的中途恢复。** 编写 `train_steps_resumable(model, optimizer, loader, steps, path)`。`loader` 是一个会打乱数据的 `StatefulDataLoader`。函数一直训练，直到总共完成 `steps` 步为止；步数要算上之前各次调用完成的步数，并跨轮累计，所以一次调用可能在一轮的中途停止。每一步之后，它都把精确继续所需的一切保存到 `path`；如果 `path` 已经存在，就从它继续。每一步依次是 `optimizer.zero_grad()`、`nn.functional.mse_loss(model(inputs), targets).backward()` 和 `optimizer.step()`。检查单元格先不间断地训练，再分几次调用重新训练，每次都换一个新的模型、优化器和数据加载器，只有靠文件才能把它们恢复到正确的状态，最后逐位比较权重。

# %%
def train_steps_resumable(model, optimizer, loader, steps, path):
    ### BEGIN SOLUTION
    step = 0
    if Path(path).exists():
        checkpoint = torch.load(path, weights_only=True)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        loader.load_state_dict(checkpoint["loader"])
        step = checkpoint["step"]
    while step < steps:
        for inputs, targets in loader:
            optimizer.zero_grad()
            nn.functional.mse_loss(model(inputs), targets).backward()
            optimizer.step()
            step += 1
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "loader": loader.state_dict(), "step": step}, path)
            if step == steps:
                return
    ### END SOLUTION


# %%
check.exercise_1(train_steps_resumable)

# %% [markdown] lang="en"
# **Exercise 7.2: the `SIGTERM` handler.** Write `run_until_preempted(train_step, save, steps)`. It calls `train_step()` up to `steps` times. When `SIGTERM` arrives, at any moment, even in the middle of a step, it finishes the step under way, calls `save()` once and returns the number of steps done; if no signal arrives, it returns `steps` without saving. The handler must do nothing but record the request, and the previous `SIGTERM` handler must be back when the function returns. The check sends the signal itself, from inside a step, and protects the notebook: without a handler of yours, `SIGTERM` would end the kernel.

# %% [markdown] lang="zh-CN"
# **练习 7.2：`SIGTERM` 信号处理函数。** 编写 `run_until_preempted(train_step, save, steps)`。它最多调用 `steps` 次 `train_step()`。`SIGTERM` 可能在任何时刻到达，甚至在一步的中间；这时它要完成正在进行的这一步，调用一次 `save()`，并返回已经完成的步数；如果没有信号到达，就返回 `steps`，不保存。信号处理函数只能记下这个请求，不能做别的事情；函数返回时，之前的 `SIGTERM` 处理函数必须已经恢复。检查单元格会在某一步的中间自己发送这个信号，并保护这个 notebook：如果没有你的处理函数，`SIGTERM` 会结束内核。

# %%
def run_until_preempted(train_step, save, steps):
    ### BEGIN SOLUTION
    stop = {"requested": False}

    def handler(signal_number, frame):
        stop["requested"] = True

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        for done in range(1, steps + 1):
            train_step()
            if stop["requested"]:
                save()
                return done
        return steps
    finally:
        signal.signal(signal.SIGTERM, previous)
    ### END SOLUTION


# %%
check.exercise_2(run_until_preempted)

# %% [markdown] lang="en"
# **Exercise 7.3: keeping the best K.** Write `save_keeping_best(folder, state, keep)`. `state` is a dict with at least `"step"` (an int) and `"accuracy"` (a float), and tensors. Save it as `folder/step-NNNNNN.pt` (the step in 6 digits, for example `step-000040.pt`) so that a crash never leaves a half-written file there. Then make the folder hold exactly the latest checkpoint (the highest step) and the `keep` checkpoints with the highest accuracy (between equal ones, the earlier), deleting the others only once the new file is complete. Leave nothing else in the folder, not even a temporary file. The check also makes one save fail halfway: the folder must then be exactly as it was.

# %% [markdown] lang="zh-CN"
# **练习 7.3：保留最佳的 K 个。** 编写 `save_keeping_best(folder, state, keep)`。`state` 是一个字典，至少包含 `"step"`（整数）和 `"accuracy"`（浮点数），以及一些张量。把它保存为 `folder/step-NNNNNN.pt`（步数写成 6 位数字，例如 `step-000040.pt`），并且保证程序崩溃时绝不会在那里留下写了一半的文件。然后让目录中恰好只剩下最新的检查点（步数最大的）和准确率最高的 `keep` 个检查点（准确率相同时取较早的），其余的检查点要等新文件完整写好之后才能删除。目录中不能留下别的文件，临时文件也不行。检查单元格还会让一次保存中途失败：这时目录必须与之前完全一样。

# %%
def save_keeping_best(folder, state, keep):
    ### BEGIN SOLUTION
    folder = Path(folder)
    path = folder / f"step-{state['step']:06d}.pt"
    with atomic_write(path) as file:
        torch.save(state, file)
    saved = [torch.load(p, weights_only=True) for p in folder.glob("step-*.pt")]
    latest = max(saved, key=lambda s: s["step"])
    best = sorted(saved, key=lambda s: (-s["accuracy"], s["step"]))[:keep]
    kept = {latest["step"], *(s["step"] for s in best)}
    for saved_state in saved:
        if saved_state["step"] not in kept:
            (folder / f"step-{saved_state['step']:06d}.pt").unlink()
    ### END SOLUTION


# %%
check.exercise_3(save_keeping_best)

# %% [markdown] lang="en"
# ## Further reading
#
# - torchdata: [`StatefulDataLoader`](https://meta-pytorch.org/data/main/torchdata.stateful_dataloader.html), and its README on saving a data set's per-worker state.
# - PyTorch notes: [Reproducibility](https://pytorch.org/docs/stable/notes/randomness.html), on `DataLoader` workers and their seeds; API: [`torch.utils.data`, "Randomness in multi-process data loading"](https://pytorch.org/docs/stable/data.html#randomness-in-multi-process-data-loading).
# - Python: [`signal`](https://docs.python.org/3/library/signal.html), on when handlers run and what they may do.
# - PyTorch: [Stochastic weight averaging and EMA](https://pytorch.org/docs/stable/optim.html#weight-averaging-swa-and-ema) (`torch.optim.swa_utils`).
# - SLURM: [`sbatch --signal`](https://slurm.schedmd.com/sbatch.html#OPT_signal); Kubernetes: [termination of pods](https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-termination).

# %% [markdown] lang="zh-CN"
# ## 延伸阅读
#
# - torchdata：[`StatefulDataLoader`](https://meta-pytorch.org/data/main/torchdata.stateful_dataloader.html)，以及它的 README 中关于保存数据集在各个工作进程中的状态的说明。
# - PyTorch 说明文档：[Reproducibility](https://pytorch.org/docs/stable/notes/randomness.html)（可复现性），讲解 `DataLoader` 的工作进程及其种子；API：[`torch.utils.data` 中的“Randomness in multi-process data loading”](https://pytorch.org/docs/stable/data.html#randomness-in-multi-process-data-loading)（多进程数据加载中的随机性）。
# - Python：[`signal`](https://docs.python.org/3/library/signal.html)，讲解信号处理函数何时运行、可以做什么。
# - PyTorch：[随机权重平均与 EMA](https://pytorch.org/docs/stable/optim.html#weight-averaging-swa-and-ema)（`torch.optim.swa_utils`）。
# - SLURM：[`sbatch --signal`](https://slurm.schedmd.com/sbatch.html#OPT_signal)；Kubernetes：[Pod 的终止](https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-termination)。
