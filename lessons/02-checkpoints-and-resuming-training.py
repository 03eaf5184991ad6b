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
#       en: 2. Checkpoints and resuming training
#       zh-CN: 2. 检查点与恢复训练
#     summary:
#       en: the optimizer's `state_dict`, a general checkpoint that loads safely, stopping and resuming
#         with bit-identical weights, `train()` vs `eval()`, the latest and the best checkpoint, atomic
#         saving and clear errors for damaged files.
#       zh-CN: 优化器的 `state_dict`、可以安全加载的通用检查点、中断后恢复训练并得到逐位相同的权重、`train()` 与 `eval()`、最新与最佳检查点、原子写入以及文件损坏时清楚的错误提示。
#     teaching_minutes: 75
#     quick_run:
#       epochs: 3
#       stop_after: 2
#       train_size: 3200
# ---

# %% [markdown] lang="en"
# # Checkpoints and Resuming Training
#
# Lesson 1 saved a trained model to make predictions. Long training runs need more: a run stops (a crash, a closed laptop, a time limit on a shared GPU) and should continue as if nothing had happened. In this lesson you will
#
# 1. see that the optimizer has a `state_dict` too, and why resuming needs it,
# 2. build a *general checkpoint*: everything needed to continue training, and only things that load safely,
# 3. stop a run after one epoch, rebuild model and optimizer from the file alone, finish training, and get **bit-identical** weights to a run that never stopped,
# 4. see why inference needs `model.eval()`,
# 5. keep the latest and the best checkpoint, and get a clear error from a damaged file.

# %% [markdown] lang="zh-CN"
# # 检查点与恢复训练
#
# 第 1 课保存了训练好的模型，用来做预测。长时间的训练需要的还不止这些：训练可能中途停止（程序崩溃、合上笔记本电脑、共享 GPU 的时间用完），而我们希望它能像什么都没发生过一样继续下去。在这节课里，你将：
#
# 1. 了解优化器也有 `state_dict`，以及为什么恢复训练离不开它；
# 2. 构建一个*通用检查点*：包含继续训练所需的一切，而且只包含能安全加载的内容；
# 3. 在训练一轮后停止，只凭文件重建模型和优化器，完成剩下的训练，并得到与从未中断的训练**逐位相同**的权重；
# 4. 理解为什么推理时需要 `model.eval()`；
# 5. 同时保留最新和最佳的检查点，并在文件损坏时得到清楚的错误提示。

# %% [markdown] lang="en"
# ## Imports and parameters
#
# Two companion modules do the work of this lesson: `checkpoint_io` writes and reads checkpoint files (`save_checkpoint`, `load_checkpoint`), and `fc_model` has a `train` that can save and resume, and `load_network`, which rebuilds a network from a file.

# %% [markdown] lang="zh-CN"
# ## 导入模块和参数
#
# 本课的工作由两个配套模块完成：`checkpoint_io` 负责写入和读取检查点文件（`save_checkpoint`、`load_checkpoint`）；`fc_model` 提供可以保存并恢复训练的 `train`，以及从文件重建网络的 `load_network`。

# %%
import copy
import pickle
from pathlib import Path

import torch
from torch import nn, optim

import fc_model
import helper
from saveload_lessons import checkpoint_io, devices, messages

# %% tags=["parameters"]
epochs = 2                             # total passes over the training images
                                       # zh-CN: 遍历训练图像的总轮数
stop_after = 1                         # epochs before the simulated interruption (less than epochs)
                                       # zh-CN: 模拟中断之前训练的轮数（须小于 epochs）
train_size = 60000                     # training images to use; fewer make a quicker run
                                       # zh-CN: 使用的训练图像数量；越少运行越快
device = "auto"                        # "auto", "cpu", "cuda" or "mps"
                                       # zh-CN: "auto"、"cpu"、"cuda" 或 "mps"
data_dir = "~/.pytorch/F_MNIST_data/"  # where torchvision keeps Fashion-MNIST
                                       # zh-CN: torchvision 存放 Fashion-MNIST 的目录
checkpoint_dir = "checkpoints"         # where this notebook writes its checkpoints
                                       # zh-CN: 本 notebook 写入检查点的目录
seed = 7                               # fixes the initial weights, the data order and dropout
                                       # zh-CN: 固定初始权重、数据顺序和 dropout

# %% tags=["nbval-ignore-output"]
# The companion modules speak the notebook's language
# zh-CN: 配套模块使用本 notebook 的语言
messages.set_language("en")
# zh-CN: messages.set_language("zh-CN")
fc_model.check_positive_int(epochs=epochs, stop_after=stop_after, train_size=train_size)
if stop_after >= epochs:
    raise ValueError(f"stop_after ({stop_after}) must be less than epochs ({epochs}), "
    # zh-CN: raise ValueError(f"stop_after（{stop_after}）必须小于 epochs（{epochs}），"
                     "so that some training is left to resume: this lesson needs at least "
                     # zh-CN: "这样才留有可以恢复的训练：本课至少需要 "
                     "2 epochs (for a quicker run, lower train_size instead)")
                     # zh-CN: "2 轮（想运行得更快，请改为减小 train_size）")
if train_size > 60000:
    raise ValueError(f"train_size can be at most 60000 (the training set), got {train_size}")
    # zh-CN: raise ValueError(f"train_size 最多为 60000（训练集的大小），实际为 {train_size}")
device = devices.get_device(device)
helper.prepare_fashion_mnist(data_dir)
checkpoint_dir = Path(checkpoint_dir)
checkpoint_dir.mkdir(parents=True, exist_ok=True)
print(f"{epochs} epochs on {device}, interrupted after {stop_after}; "
# zh-CN: print(f"共 {epochs} 轮，设备：{device}，训练 {stop_after} 轮后中断；"
      f"{train_size} training images")
      # zh-CN: f"使用 {train_size} 张训练图像")

# %% [markdown] lang="en"
# ## The data
#
# The fast Fashion-MNIST loaders of lesson 1, from `helper.fashion_mnist_loaders` (the same batches as torchvision's loaders, with every image transformed once), here on the first `train_size` training images.

# %% [markdown] lang="zh-CN"
# ## 数据
#
# 这里沿用第 1 课中由 `helper.fashion_mnist_loaders` 创建的快速 Fashion-MNIST 数据加载器（批次与 torchvision 的数据加载器完全相同，但每张图像只变换一次），只取前 `train_size` 张训练图像。

# %%
trainloader, testloader = helper.fashion_mnist_loaders(data_dir, train_size=train_size)
criterion = nn.NLLLoss()

# %% [markdown] lang="en"
# ## The optimizer has a state dict too
#
# An optimizer's `state_dict` has two parts: `param_groups`, the hyper-parameters (learning rate, momentum, …) with the indices of the parameters they apply to, and `state`, what the optimizer has learnt about each parameter so far. A new SGD optimizer with momentum has an empty `state`:

# %% [markdown] lang="zh-CN"
# ## 优化器也有状态字典
#
# 优化器的 `state_dict` 由两部分组成：`param_groups` 是超参数（学习率、动量等）以及它们所作用的参数的编号；`state` 是优化器迄今为止为每个参数积累的信息。一个新建的带动量的 SGD 优化器，其 `state` 是空的：

# %%
torch.manual_seed(seed)
model = fc_model.Network(784, 10, [512, 256, 128])
sgd = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
print(sgd.state_dict())

# %% [markdown] lang="en"
# After one training step it holds a *momentum buffer* for each of the 8 parameter tensors: an exponentially decaying sum of past gradients. At every step SGD multiplies the buffer by the momentum (0.9 here) and adds the new gradient (with the default `dampening=0`), then moves the weights along the buffer instead of along the gradient alone.

# %% [markdown] lang="zh-CN"
# 训练一步之后，它为 8 个参数张量各持有一个*动量缓冲区*：这是过去梯度按指数衰减的累加和。每一步，SGD 先把缓冲区乘以动量（这里是 0.9），再加上新的梯度（默认 `dampening=0`），然后按缓冲区（而不只是当前的梯度）来更新权重。

# %%
images, labels = next(iter(trainloader))

def training_step(model, optimizer):
    # One step of training on the batch above
    # zh-CN: 在上面这批数据上训练一步
    optimizer.zero_grad()
    criterion(model(images), labels).backward()
    optimizer.step()

training_step(model, sgd)
for index, state in sgd.state_dict()['state'].items():
    print(index, {name: tuple(value.shape) for name, value in state.items()})

# %% [markdown] lang="en"
# Adam, which lesson 1 used, keeps even more per parameter: the step count and exponential moving averages of the gradient (`exp_avg`) and of its square (`exp_avg_sq`). Together they are as large as the model twice over.

# %% [markdown] lang="zh-CN"
# 第 1 课使用的 Adam 为每个参数持有的信息更多：步数，以及梯度的指数移动平均（`exp_avg`）和梯度平方的指数移动平均（`exp_avg_sq`）。这些加起来是模型大小的两倍。

# %%
adam = optim.Adam(model.parameters(), lr=0.001)
print(f"before a step: {adam.state_dict()['state']}")
# zh-CN: print(f"训练一步之前：{adam.state_dict()['state']}")
training_step(model, adam)
after_a_step = {name: (value if value.dim() == 0 else tuple(value.shape))
                for name, value in adam.state_dict()['state'][0].items()}
print(f"after a step:  {after_a_step}")
# zh-CN: print(f"训练一步之后：{after_a_step}")

# %% [markdown] lang="en"
# What happens if we resume with the model weights but a *new* optimizer? Below, two copies of the model continue from the same weights. One gets the Adam state back with `load_state_dict`, the other starts a fresh Adam. After a single step the weights already differ: without the optimizer state, resuming is not the same training.
#
# (We pass a *copy* of the state dict: `load_state_dict` keeps the tensors it is given, so two optimizers loaded from one in-memory `state_dict` would share and update the same tensors. Loading from a file never has that problem.)

# %% [markdown] lang="zh-CN"
# 如果恢复训练时只恢复模型权重、却使用*新的*优化器，会怎样？下面两份模型副本从相同的权重继续训练：一份用 `load_state_dict` 恢复了 Adam 的状态，另一份使用全新的 Adam。只训练一步，权重就已经不同了：没有优化器状态，恢复的就不是原来那次训练。
#
# （这里传入的是状态字典的*副本*：`load_state_dict` 会直接使用传给它的张量，如果两个优化器加载同一个内存中的 `state_dict`，它们就会共享并同时更新这些张量。从文件加载则不存在这个问题。）

# %%
restored_model, fresh_model = copy.deepcopy(model), copy.deepcopy(model)
restored_adam = optim.Adam(restored_model.parameters(), lr=0.001)
restored_adam.load_state_dict(copy.deepcopy(adam.state_dict()))  # a copy, like a file gives
                                                                 # zh-CN: 副本，与从文件加载时一样
fresh_adam = optim.Adam(fresh_model.parameters(), lr=0.001)

torch.manual_seed(seed)
training_step(model, adam)             # the original run goes on
                                       # zh-CN: 原来的训练继续进行
torch.manual_seed(seed)
training_step(restored_model, restored_adam)
torch.manual_seed(seed)
training_step(fresh_model, fresh_adam)

for name, other in [("restored optimizer", restored_model), ("fresh optimizer", fresh_model)]:
# zh-CN: for name, other in [("恢复了状态的优化器", restored_model), ("全新的优化器", fresh_model)]:
    same = all(torch.equal(a, b) for a, b in zip(model.parameters(), other.parameters()))
    print(f"{name}: same weights as the original run? {same}")
    # zh-CN: print(f"使用{name}，权重与原来的训练相同：{same}")

# %% [markdown] lang="en"
# ## A general checkpoint
#
# A checkpoint for resuming training holds more than the weights. The common recipe, PyTorch's own [Saving and loading a general checkpoint](https://pytorch.org/tutorials/recipes/recipes/saving_and_loading_a_general_checkpoint.html), saves the epoch, the model and optimizer state dicts and the loss. Two details matter:
#
# - **Store the loss as a number** (`loss.item()`). Some tutorials store a loss *object*, such as `nn.NLLLoss()`. Since PyTorch 2.6, `torch.load` uses `weights_only=True` by default and refuses to rebuild arbitrary Python objects, so such a checkpoint no longer loads:

# %% [markdown] lang="zh-CN"
# ## 通用检查点
#
# 用于恢复训练的检查点，包含的不只是权重。常见的做法来自 PyTorch 的官方示例 [Saving and loading a general checkpoint](https://pytorch.org/tutorials/recipes/recipes/saving_and_loading_a_general_checkpoint.html)（保存和加载通用检查点）：保存轮数、模型和优化器的状态字典以及损失。有两个细节很重要：
#
# - **把损失保存为数字**（`loss.item()`）。有些教程保存的是损失*对象*，比如 `nn.NLLLoss()`。从 PyTorch 2.6 起，`torch.load` 默认使用 `weights_only=True`，拒绝重建任意 Python 对象，因此这样的检查点再也加载不了：

# %%
recipe_path = checkpoint_dir / 'recipe.tar'
torch.save({'epoch': 1,
            'model_state_dict': model.state_dict(),
            'optimizer_state_dict': adam.state_dict(),
            'loss': criterion},        # a loss module, not a number
                                       # zh-CN: 损失模块，而不是数字
           recipe_path)
try:
    torch.load(recipe_path, weights_only=True)
except pickle.UnpicklingError as error:
    print("torch.load(weights_only=True) refused the checkpoint:")
    # zh-CN: print("torch.load(weights_only=True) 拒绝加载这个检查点：")
    print(next(line.strip() for line in str(error).splitlines() if 'Unsupported global' in line))

# %% [markdown] lang="en"
# - **Store the random-number-generator states**. Shuffling the data and dropout both draw random numbers. To continue *identically*, the generator must be where it was when the checkpoint was written.
#
# The file extension is only a convention: `.pt` and `.pth` are the usual ones for `torch.save`, and the recipe's `.tar` is a convention of its own: whatever the name, `torch.save` writes a zip archive. Pick one and use it consistently.
#
# `checkpoint_io.save_checkpoint` writes such a checkpoint: a format tag, the architecture (as in lesson 1), both state dicts, the generator states and whatever training state you pass as plain values. It writes **atomically**: first to a temporary file in the same folder, flushed to disk, then renamed over the old checkpoint in one step. A crash or a kill during a save leaves the previous checkpoint intact, never a half-written file.

# %% [markdown] lang="zh-CN"
# 这条英文错误信息（`Unsupported global`）说明 `NLLLoss` 这个全局对象默认不被放行，并建议用 `torch.serialization.add_safe_globals` 或 `safe_globals` 放行这个类；不过在这里，直接保存数字要简单得多。
#
# - **保存随机数生成器的状态**。打乱数据和 dropout 都要用到随机数。要想*完全一致*地继续训练，随机数生成器必须回到写入检查点时的状态。
#
# 文件扩展名只是一种约定：`.pt` 和 `.pth` 是 `torch.save` 常用的扩展名，官方示例用的 `.tar` 也只是它自己的约定；不管文件叫什么名字，`torch.save` 写出的都是 zip 归档。选定一种并始终如一即可。
#
# `checkpoint_io.save_checkpoint` 会写入这样的检查点：格式标记、架构（与第 1 课一样）、两个状态字典、随机数生成器状态，以及你传入的训练状态（都是普通的值）。它采用**原子写入**：先写到同一目录下的临时文件并刷新到磁盘，再通过一次重命名替换旧的检查点。即使保存过程中程序崩溃或被强制终止，之前的检查点也完好无损，绝不会留下写了一半的文件。

# %%
checkpoint_io.save_checkpoint(checkpoint_dir / 'example.pt', model, adam, epoch=1, step=3, loss=0.5)
example = checkpoint_io.load_checkpoint(checkpoint_dir / 'example.pt', fc_model.NETWORK)
for key, value in example.items():
    print(f"{key:22} {type(value).__name__}")

# %% [markdown] lang="en"
# ## Stop, then resume exactly
#
# Now the real test. We train the lesson-1 network three times from the same seed:
#
# 1. **uninterrupted**, for `epochs` epochs;
# 2. **interrupted**: for `stop_after` epochs only, saving a checkpoint at the end of every epoch (and the best model at every report);
# 3. **resumed**: a new model and a new optimizer, built from the checkpoint file alone, as a new process would, continue up to `epochs`.
#
# If the checkpoint holds everything, runs 1 and 3 end with exactly the same weights. First the uninterrupted run (lesson 1 explains its progress lines):

# %% [markdown] lang="zh-CN"
# ## 先停止，再精确恢复
#
# 现在来做真正的检验。我们用同一个随机种子，把第 1 课的网络训练三次：
#
# 1. **不中断**：训练 `epochs` 轮；
# 2. **中断**：只训练 `stop_after` 轮，每轮结束时保存检查点（并在每次报告时保存最佳模型）；
# 3. **恢复**：像一个新进程那样，只凭检查点文件新建模型和优化器，继续训练到第 `epochs` 轮。
#
# 如果检查点包含了所需的一切，第 1 次和第 3 次训练最终的权重会完全相同。先进行不中断的训练（进度行中各项的含义见第 1 课）：

# %% tags=["nbval-ignore-output"]
torch.manual_seed(seed)
model_a = fc_model.Network(784, 10, [512, 256, 128])
optimizer_a = optim.Adam(model_a.parameters(), lr=0.001)
history_a = fc_model.train(model_a, trainloader, testloader, criterion, optimizer_a,
                           epochs=epochs, device=device)

# %% [markdown] lang="en"
# The interrupted run. `checkpoint_path` keeps the latest checkpoint (`checkpoint_every=N` would also save every N steps); `best_path` keeps the model with the best test accuracy seen so far. Deleting the model and optimizer afterwards makes sure nothing but the files survives.

# %% [markdown] lang="zh-CN"
# 接下来是会被中断的训练。最新的检查点写入 `checkpoint_path`（`checkpoint_every=N` 还可以每 N 步保存一次）；迄今测试准确率最高的模型写入 `best_path`。训练结束后删除模型和优化器，确保留下来的只有文件。

# %% tags=["nbval-ignore-output"]
latest_path = checkpoint_dir / 'latest.pt'
best_path = checkpoint_dir / 'best.pt'
latest_path.unlink(missing_ok=True)    # start from scratch
                                       # zh-CN: 从头开始
best_path.unlink(missing_ok=True)

torch.manual_seed(seed)
model_b = fc_model.Network(784, 10, [512, 256, 128])
optimizer_b = optim.Adam(model_b.parameters(), lr=0.001)
fc_model.train(model_b, trainloader, testloader, criterion, optimizer_b, epochs=stop_after,
               device=device, checkpoint_path=latest_path, best_path=best_path)
del model_b, optimizer_b               # as if the process had ended
                                       # zh-CN: 就像进程已经结束

# %% [markdown] lang="en"
# The checkpoint says where training stopped:

# %% [markdown] lang="zh-CN"
# 检查点记录了训练停在哪里：

# %% tags=["nbval-ignore-output"]
checkpoint = checkpoint_io.load_checkpoint(latest_path, fc_model.NETWORK, map_location=device)
print({key: checkpoint[key] for key in ('epoch', 'step', 'loss', 'architecture')})

# %% [markdown] lang="en"
# The resumed run builds everything from that file. `train(..., resume=True)` loads the model and optimizer state dicts into the new objects, restores the generator states, and continues with the next epoch, printing only the progress lines that are new.

# %% [markdown] lang="zh-CN"
# 恢复训练时，一切都从这个文件重建。`train(..., resume=True)` 会把模型和优化器的状态字典加载到新对象中，恢复随机数生成器的状态，然后从下一轮继续，只打印新的进度行。

# %% tags=["nbval-ignore-output"]
model_c = fc_model.Network(**checkpoint['architecture'])
optimizer_c = optim.Adam(model_c.parameters(), lr=0.001)
history_c = fc_model.train(model_c, trainloader, testloader, criterion, optimizer_c,
                           epochs=epochs, device=device, checkpoint_path=latest_path,
                           resume=True, best_path=best_path)


# %%
def same_tensors(first, second):
    # True when both sequences hold exactly equal tensors
    # zh-CN: 两个序列中的张量完全相等时返回 True
    return all(torch.equal(a, b) for a, b in zip(first, second))

same_weights = same_tensors(model_a.state_dict().values(), model_c.state_dict().values())
state_a, state_c = optimizer_a.state_dict()['state'], optimizer_c.state_dict()['state']
same_adam_state = all(same_tensors(state_a[i].values(), state_c[i].values()) for i in state_a)
print(f"bit-identical weights: {same_weights}")
# zh-CN: print(f"权重逐位相同：{same_weights}")
print(f"bit-identical Adam state: {same_adam_state}")
# zh-CN: print(f"Adam 状态逐位相同：{same_adam_state}")
print(f"same history: {history_a == history_c}")
# zh-CN: print(f"训练记录相同：{history_a == history_c}")
if device.type == "cpu":
    assert same_weights and same_adam_state and history_a == history_c

# %% [markdown] lang="en"
# ### What makes this possible, and what breaks it
#
# Every number the resumed run computes depends on four things, and the checkpoint restores all of them:
#
# - **the weights** (model `state_dict`) and **the optimizer state** (Adam's averages and step count);
# - **the data order**: the `DataLoader` shuffles with numbers drawn from PyTorch's random-number generator when an epoch begins. `train` stores the generator state of that moment too, so a run resumed in the middle of an epoch (`checkpoint_every`) draws the same order and skips the batches already done;
# - **the dropout masks**: drawn from the same generator at every step, so its current state is restored as well.
#
# Change any input and the runs part ways: another batch size, learning rate or data set, a data augmentation that uses Python's `random` or NumPy (save those generators too), or another PyTorch version. On a GPU, some operations are not deterministic at all; `torch.use_deterministic_algorithms(True)` trades speed for repeatability. That is why the notebook asserts bit-identical results on the CPU only.

# %% [markdown] lang="zh-CN"
# ### 为什么能做到，以及什么会破坏它
#
# 恢复后的训练算出的每一个数都取决于下面四样东西，而检查点把它们全部恢复了：
#
# - **权重**（模型的 `state_dict`）和**优化器状态**（Adam 的移动平均和步数）；
# - **数据顺序**：每一轮开始时，`DataLoader` 用从 PyTorch 随机数生成器中取出的数来打乱数据。`train` 也把那一刻的生成器状态保存到检查点中，因此即使在一轮的中途恢复（`checkpoint_every`），也能得到相同的顺序，并跳过已经训练过的批次；
# - **dropout 掩码**：每一步都从同一个生成器中抽取，所以它当前的状态也要恢复。
#
# 只要改变任何一项输入，两次训练就会分道扬镳：换一个批大小、学习率或数据集，使用了依赖 Python `random` 或 NumPy 的数据增强（这些生成器的状态也要保存），或者换了 PyTorch 版本。在 GPU 上，有些算子本身就不是确定性的；`torch.use_deterministic_algorithms(True)` 以速度为代价换取可重复性。这就是本 notebook 只在 CPU 上断言结果逐位相同的原因。

# %% [markdown] lang="en"
# ## `train()` and `eval()`
#
# `load_network` and lesson 1's `load_checkpoint` both end with `model.eval()`. The reason is dropout: in training mode, at every call, it sets each hidden activation to zero independently with probability `p` (0.5 in this network) and multiplies the ones it keeps by `1 / (1 - p)`, here 2, so the same images give different outputs. In evaluation mode dropout is off and predictions are deterministic. Forgetting `eval()` before inference gives noisy, worse predictions; forgetting `train()` before training again silently disables dropout.

# %% [markdown] lang="zh-CN"
# ## `train()` 与 `eval()`
#
# `load_network` 和第 1 课的 `load_checkpoint` 都以 `model.eval()` 结尾，原因在于 dropout：在训练模式下，它每次调用时都以概率 `p`（这个网络中是 0.5）把每个隐藏层激活值独立地置零，并把没有置零的激活值乘以 `1 / (1 - p)`（这里是 2），所以同样的图像会得到不同的输出。在评估模式下 dropout 关闭，预测结果是确定的。推理前忘记调用 `eval()`，预测会带有噪声、效果变差；再次训练前忘记调用 `train()`，则会在不知不觉中关闭 dropout。

# %%
test_images, test_labels = next(iter(testloader))
test_images = test_images.to(device)
with torch.no_grad():
    model_c.train()
    print(f"training mode, two calls agree:   {torch.equal(model_c(test_images), model_c(test_images))}")
    # zh-CN: print(f"训练模式下，两次调用结果一致：{torch.equal(model_c(test_images), model_c(test_images))}")
    model_c.eval()
    print(f"evaluation mode, two calls agree: {torch.equal(model_c(test_images), model_c(test_images))}")
    # zh-CN: print(f"评估模式下，两次调用结果一致：{torch.equal(model_c(test_images), model_c(test_images))}")

# %% [markdown] lang="en"
# ## The latest and the best checkpoint
#
# `latest.pt` is where training continues from; `best.pt` holds the model at the report with the best test accuracy, which is the one to keep for predictions if the last epochs overfit. Both load with `fc_model.load_network`. (In real projects, choose the best model on a separate validation set, not on the test set.)
#
# Two checks make sure `best.pt` is what its name says: the accuracy it records is the highest of all reports of the run, and its weights, evaluated again on the same test images, score exactly that accuracy (exactly on the CPU; on a GPU the last digits of a computation may differ).

# %% [markdown] lang="zh-CN"
# ## 最新检查点与最佳检查点
#
# `latest.pt` 是继续训练的起点；`best.pt` 保存的则是各次报告中测试准确率最高时的模型；如果最后几轮出现了过拟合，做预测时就应该用它。两者都可以用 `fc_model.load_network` 加载。（在实际项目中，应当在单独的验证集上挑选最佳模型，而不是在测试集上。）
#
# 下面用两项检查确认 `best.pt` 名副其实：它记录的准确率是这次训练所有报告中最高的；把它的权重在同样的测试图像上重新评估，得到的准确率恰好就是这个值（在 CPU 上完全相等；在 GPU 上，计算结果的最后几位可能不同）。

# %% tags=["nbval-ignore-output"]
for path in (latest_path, best_path):
    saved = checkpoint_io.load_checkpoint(path, fc_model.NETWORK)
    network = fc_model.load_network(path, map_location=device)
    _, accuracy = fc_model.validation(network, testloader, criterion)
    print(f"{path.name:10} saved at step {saved['step']:5}, test accuracy {accuracy:.4f}")
    # zh-CN: print(f"{path.name:10} 保存于第 {saved['step']:5} 步，测试准确率 {accuracy:.4f}")

# %% tags=["nbval-ignore-output"]
best_accuracy = checkpoint_io.load_checkpoint(best_path, fc_model.NETWORK)['best_accuracy']
_, best_file_accuracy = fc_model.validation(fc_model.load_network(best_path, map_location=device),
                                            testloader, criterion)
print(f"best.pt records {best_accuracy:.4f}; its weights score {best_file_accuracy:.4f}")
# zh-CN: print(f"best.pt 记录的准确率为 {best_accuracy:.4f}；它的权重实测为 {best_file_accuracy:.4f}")
assert best_accuracy == max(report['test_accuracy'] for report in history_c)
if device.type == "cpu":
    assert best_file_accuracy == best_accuracy
else:
    assert abs(best_file_accuracy - best_accuracy) < 0.002

# %% [markdown] lang="en"
# ## When a file is damaged
#
# A checkpoint copied only halfway, or a file of another kind, gives an error that names the file and the problem instead of a deep traceback from the unpickler:

# %% [markdown] lang="zh-CN"
# ## 文件损坏时
#
# 加载只复制了一半的检查点或者其他类型的文件时，得到的是一条指明文件名和问题所在的错误信息，而不是来自反序列化器深处的一长串回溯：

# %%
broken_path = checkpoint_dir / 'broken.pt'
broken_path.write_bytes(latest_path.read_bytes()[:100_000])
try:
    checkpoint_io.load_checkpoint(broken_path, fc_model.NETWORK)
except checkpoint_io.CheckpointError as error:
    print("checkpoint_io.load_checkpoint refused the damaged file:")
    # zh-CN: print("checkpoint_io.load_checkpoint 拒绝了这个损坏的文件：")
    print(error)

# %% [markdown] lang="en"
# ## Summary
#
# - The optimizer's `state_dict` is part of the training state: resume without it and the training changes.
# - A general checkpoint holds the epoch and step, the model and optimizer state dicts, the loss as a number, the architecture, and the random-number-generator states, all of which load with `weights_only=True`.
# - Write checkpoints atomically, keep the latest for resuming and the best for predicting, and call `eval()` before inference.

# %% [markdown] lang="zh-CN"
# ## 小结
#
# - 优化器的 `state_dict` 是训练状态的一部分：恢复时缺了它，训练过程就变了。
# - 通用检查点包含轮数和步数、模型和优化器的状态字典、以数字形式保存的损失、架构以及随机数生成器状态，而且这些内容都能用 `weights_only=True` 加载。
# - 以原子方式写入检查点，保留最新的用于恢复训练、最佳的用于预测，并在推理前调用 `eval()`。

# %% [markdown] lang="en"
# ## Exercises
#
# Each exercise asks you to write a function; the check cell right after it runs your function on small models of its own and tells you what is missing or wrong. Run the next cell first: it imports what the exercises need, so they work even after a kernel restart, without the cells above. In the student edition each answer is `raise NotImplementedError()`: replace it with your code, run that cell, then run the check cell after it.

# %% [markdown] lang="zh-CN"
# ## 练习
#
# 每道练习都要求你写一个函数；紧跟在它后面的检查单元格会用自己创建的小模型运行你的函数，并告诉你缺了什么或错在哪里。请先运行下面这个单元格：它导入练习需要的一切，所以即使重启了内核、没有运行上面的单元格，也能做练习。在学生版中，每个答案都是 `raise NotImplementedError()`：把它换成你的代码，运行这个单元格，再运行它后面的检查单元格。

# %%
from pathlib import Path

import torch
from torch import nn

from saveload_lessons import exercise_checks

check = exercise_checks.for_lesson(2, language="en")
# zh-CN: check = exercise_checks.for_lesson(2, language="zh-CN")

# %% [markdown] lang="en"
# **Exercise 2.1: a general checkpoint.** Write `save_general_checkpoint(path, model, optimizer, epoch)`. It saves a dict with the keys `"epoch"`, `"model_state_dict"` and `"optimizer_state_dict"`, so that the file loads with `weights_only=True`. The cell after it checks your function.

# %% [markdown] lang="zh-CN"
# **练习 2.1：通用检查点。** 编写 `save_general_checkpoint(path, model, optimizer, epoch)`。它保存一个字典，键为 `"epoch"`、`"model_state_dict"` 和 `"optimizer_state_dict"`，使文件可以用 `weights_only=True` 加载。后面的单元格会检查你的函数。

# %%
def save_general_checkpoint(path, model, optimizer, epoch):
    ### BEGIN SOLUTION
    torch.save({"epoch": epoch,
                "model_state_dict": model.state_dict(),
                "optimizer_state_dict": optimizer.state_dict()}, path)
    ### END SOLUTION


# %%
check.exercise_1(save_general_checkpoint)

# %% [markdown] lang="en"
# **Exercise 2.2: resume.** Write `resume(path, model, optimizer)`: it loads such a file safely, puts its state into `model` and `optimizer` (which already exist, with the right shapes) and returns the epoch it holds. The check also hands it a hostile file, which must be refused.

# %% [markdown] lang="zh-CN"
# **练习 2.2：恢复。** 编写 `resume(path, model, optimizer)`：它安全地加载这样的文件，把其中的状态放进 `model` 和 `optimizer`（两者都已存在，形状也正确），并返回文件中保存的轮数。检查单元格还会交给它一个恶意文件，它必须拒绝这个文件。

# %%
def resume(path, model, optimizer):
    ### BEGIN SOLUTION
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(checkpoint["model_state_dict"])
    optimizer.load_state_dict(checkpoint["optimizer_state_dict"])
    return checkpoint["epoch"]
    ### END SOLUTION


# %%
check.exercise_2(resume)

# %% [markdown] lang="en"
# **Exercise 2.3: the training loop that survives a stop.** This exercise builds on exercises 2.1 and 2.2: it uses the functions you wrote there, so run their cells first. Write `train_with_checkpoints(model, optimizer, batches, epochs, path)`. If `path` exists, it resumes from it (exercise 2.2); then it trains the epochs that are left, up to `epochs`, and saves a general checkpoint (exercise 2.1) after every epoch, with the number of epochs done so far. One epoch is one pass over `batches`, a list of `(inputs, targets)` pairs; each step is `optimizer.zero_grad()`, `nn.functional.mse_loss(model(inputs), targets).backward()`, `optimizer.step()`. The check trains a few epochs straight; then trains again with stops in between, each time with a fresh model that only the file can set right; and compares the weights bit for bit. Its numbers of epochs change from run to run, so the answer has to work for any.

# %% [markdown] lang="zh-CN"
# **练习 2.3：中断后仍能继续的训练循环。** 这道练习建立在练习 2.1 和 2.2 之上：它要用到你在那里写的函数，所以请先运行那两个单元格。编写 `train_with_checkpoints(model, optimizer, batches, epochs, path)`。如果 `path` 存在，就先从它恢复（练习 2.2）；然后训练剩下的轮数，直到 `epochs` 轮，并在每一轮之后保存一个通用检查点（练习 2.1），记录到目前为止完成的轮数。一轮就是遍历一次 `batches`，它是由 `(inputs, targets)` 组成的列表；每一步依次是 `optimizer.zero_grad()`、`nn.functional.mse_loss(model(inputs), targets).backward()` 和 `optimizer.step()`。检查单元格会先不间断地训练几轮；然后重新训练一遍，中途停下几次，每次停下后都换一个新模型，只有靠文件才能把它恢复到正确的状态；最后逐位比较两种方式得到的权重。检查所用的轮数每次运行都不一样，所以答案必须对任意轮数都成立。

# %%
def train_with_checkpoints(model, optimizer, batches, epochs, path):
    ### BEGIN SOLUTION
    done = resume(path, model, optimizer) if Path(path).exists() else 0
    for epoch in range(done, epochs):
        for inputs, targets in batches:
            optimizer.zero_grad()
            nn.functional.mse_loss(model(inputs), targets).backward()
            optimizer.step()
        save_general_checkpoint(path, model, optimizer, epoch + 1)
    ### END SOLUTION


# %%
check.exercise_3(train_with_checkpoints)

# %% [markdown] lang="en"
# ## Further reading
#
# - PyTorch recipe: [Saving and loading a general checkpoint](https://pytorch.org/tutorials/recipes/recipes/saving_and_loading_a_general_checkpoint.html).
# - PyTorch tutorial: [Saving and loading models](https://pytorch.org/tutorials/beginner/saving_loading_models.html), section "Saving & Loading a General Checkpoint for Inference and/or Resuming Training".
# - PyTorch notes: [Reproducibility](https://pytorch.org/docs/stable/notes/randomness.html), on random seeds and deterministic algorithms, and [Serialization semantics](https://pytorch.org/docs/stable/notes/serialization.html).
# - API: [`Optimizer.state_dict`](https://pytorch.org/docs/stable/generated/torch.optim.Optimizer.state_dict.html), [`torch.get_rng_state`](https://pytorch.org/docs/stable/generated/torch.get_rng_state.html).

# %% [markdown] lang="zh-CN"
# ## 延伸阅读
#
# - PyTorch 实用示例：[Saving and loading a general checkpoint](https://pytorch.org/tutorials/recipes/recipes/saving_and_loading_a_general_checkpoint.html)（保存和加载通用检查点）。
# - PyTorch 教程：[Saving and loading models](https://pytorch.org/tutorials/beginner/saving_loading_models.html) 中的“Saving & Loading a General Checkpoint for Inference and/or Resuming Training”一节。
# - PyTorch 说明文档：[Reproducibility](https://pytorch.org/docs/stable/notes/randomness.html)（可复现性），讲随机种子和确定性算法；以及 [Serialization semantics](https://pytorch.org/docs/stable/notes/serialization.html)（序列化语义）。
# - API：[`Optimizer.state_dict`](https://pytorch.org/docs/stable/generated/torch.optim.Optimizer.state_dict.html)、[`torch.get_rng_state`](https://pytorch.org/docs/stable/generated/torch.get_rng_state.html)。
