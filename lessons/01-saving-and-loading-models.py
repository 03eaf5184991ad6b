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
#       en: 1. Saving and loading models
#       zh-CN: 1. 保存和加载模型
#     summary:
#       en: 'the classic walkthrough: train on Fashion-MNIST, `state_dict`, `torch.save`/`torch.load`
#         with `weights_only=True` and `map_location`, the size-mismatch error, a checkpoint that stores
#         the architecture, and proof that the reloaded model predicts the same.'
#       zh-CN: 经典教程：在 Fashion-MNIST 上训练、`state_dict`、带 `weights_only=True` 和 `map_location` 的 `torch.save`/`torch.load`、尺寸不匹配错误、记录了架构的检查点，并验证重新加载的模型预测结果相同。
#     teaching_minutes: 60
#     quick_run:
#       epochs: 1
# ---

# %% [markdown] lang="en"
# # Saving and Loading Models
#
# Training a network takes time, so you will want to keep a trained one and load it later, to make predictions or to train it further. In this lesson you will
#
# 1. train a small fully-connected network on Fashion-MNIST,
# 2. save its parameters (its `state_dict`) and load them back,
# 3. see why loading fails when the architecture differs,
# 4. save a checkpoint that also stores the architecture, and rebuild the model from that file alone,
# 5. check that the reloaded model predicts exactly what the trained one does.
#
# The first code cell below only does something on Google Colab, where it installs the companion modules.

# %% [markdown] lang="zh-CN"
# # 保存和加载模型
#
# 训练一个网络要花不少时间，所以我们通常会把训练好的模型保存下来，之后再加载，用来做预测或继续训练。在这节课里，你将：
#
# 1. 在 Fashion-MNIST 上训练一个小型全连接网络；
# 2. 保存它的参数（即 `state_dict`，状态字典），再加载回来；
# 3. 看看网络架构不一致时，加载为什么会失败；
# 4. 保存一个同时记录架构的检查点，只凭这个文件就能重建模型；
# 5. 验证重新加载的模型与训练好的模型给出完全相同的预测。
#
# 下面第一个代码单元格只在 Google Colab 上起作用：它会安装本课程的配套模块。

# %% [markdown] lang="en"
# ## Imports
#
# `fc_model` holds the network and the training loop, `helper` the plots and the data preparation, and `devices` the choice of device (CPU or GPU). All three are small files at the root of this repository; read them whenever you want to see how something works.

# %% [markdown] lang="zh-CN"
# ## 导入模块
#
# `fc_model` 包含网络和训练循环，`helper` 负责绘图和准备数据，`devices` 负责选择设备（CPU 或 GPU）。它们都是放在本仓库根目录下的小文件，想了解实现细节时随时可以打开来看。

# %%
import copy
import itertools
import time

import torch
from torch import nn, optim
from torchvision import datasets, transforms

import fc_model
import helper
from saveload_lessons import devices, messages

# %% [markdown] lang="en"
# ## Parameters
#
# The next cell holds every setting of this notebook. It is tagged `parameters`, so [papermill](https://papermill.readthedocs.io) can run the notebook with other values, for example `papermill 01-saving-and-loading-models.ipynb out.ipynb -p epochs 1 -p device cpu`.

# %% [markdown] lang="zh-CN"
# ## 参数
#
# 下一个单元格集中了本 notebook 的全部设置。它带有 `parameters` 标签，因此可以用 [papermill](https://papermill.readthedocs.io) 换一组取值来运行本 notebook，例如 `papermill 01-saving-and-loading-models.ipynb out.ipynb -p epochs 1 -p device cpu`。

# %% tags=["parameters"]
epochs = 2                             # passes over the 60,000 training images
                                       # zh-CN: 遍历 60,000 张训练图像的轮数
device = "auto"                        # "auto", "cpu", "cuda" or "mps"; "auto" picks the fastest available
                                       # zh-CN: "auto"、"cpu"、"cuda" 或 "mps"；"auto" 会选择可用的最快设备
data_dir = "~/.pytorch/F_MNIST_data/"  # where torchvision keeps Fashion-MNIST
                                       # zh-CN: torchvision 存放 Fashion-MNIST 的目录
seed = 7                               # fixes the initial weights, the data order and dropout
                                       # zh-CN: 固定初始权重、数据顺序和 dropout

# %% [markdown] lang="en"
# We check the parameters straight away, so a typo stops the notebook here with a clear message instead of deep inside training. `helper.prepare_fashion_mnist` makes sure the data set is in `data_dir`: if it is not, it copies a local copy (the folder named by the environment variable `FASHION_MNIST_SOURCE`, or Debian's `dataset-fashion-mnist` package) and otherwise lets torchvision download it. That way the notebook also works in a classroom with poor Wi-Fi.

# %% [markdown] lang="zh-CN"
# 我们先检查参数，这样一旦写错，notebook 会在这里停下并给出清楚的提示，而不是在训练进行到一半时才报错。`helper.prepare_fashion_mnist` 确保 `data_dir` 中有数据集：如果没有，它会从本地副本复制（环境变量 `FASHION_MNIST_SOURCE` 指定的目录，或 Debian 的 `dataset-fashion-mnist` 软件包）；找不到本地副本时，才交给 torchvision 下载。这样即使在网络不好的教室里，本 notebook 也能正常运行。

# %% tags=["nbval-ignore-output"]
# The companion modules speak the notebook's language
# zh-CN: 配套模块使用本 notebook 的语言
messages.set_language("en")
# zh-CN: messages.set_language("zh-CN")
fc_model.check_positive_int(epochs=epochs)
device = devices.get_device(device)
helper.prepare_fashion_mnist(data_dir)
torch.manual_seed(seed)
print(f"Training for {epochs} epoch(s) on {device}")
# zh-CN: print(f"训练 {epochs} 轮，设备：{device}")

# %% [markdown] lang="en"
# ## Load the data
#
# Fashion-MNIST holds 28×28 grey images of clothing in ten classes: T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag and Ankle boot. This is the usual torchvision code. `ToTensor` turns each image into a tensor of values in [0, 1], and `Normalize((0.5,), (0.5,))` maps them to [-1, 1]. Since the files are already in `data_dir`, `download=True` downloads nothing.

# %% [markdown] lang="zh-CN"
# ## 加载数据
#
# Fashion-MNIST 由 28×28 的灰度服饰图像组成，共十个类别：T恤/上衣（T-shirt/top）、裤子（Trouser）、套头衫（Pullover）、连衣裙（Dress）、外套（Coat）、凉鞋（Sandal）、衬衫（Shirt）、运动鞋（Sneaker）、包（Bag）和短靴（Ankle boot）；notebook 输出的类别名保留英文。这是常见的 torchvision 写法。`ToTensor` 把每张图像转成取值在 [0, 1] 的张量，`Normalize((0.5,), (0.5,))` 再把它们映射到 [-1, 1]。由于文件已经在 `data_dir` 中，`download=True` 不会再下载任何东西。

# %%
# Define a transform to normalize the data
# zh-CN: 定义对数据做归一化的变换
transform = transforms.Compose([transforms.ToTensor(),
                                transforms.Normalize((0.5,), (0.5,))])

# The training data, shuffled at every epoch
# zh-CN: 训练数据，每轮都会打乱顺序
trainset = datasets.FashionMNIST(data_dir, download=True, train=True, transform=transform)
trainloader = torch.utils.data.DataLoader(trainset, batch_size=64, shuffle=True)

# The test data: its order does not matter for measuring accuracy
# zh-CN: 测试数据：计算准确率时顺序无关紧要
testset = datasets.FashionMNIST(data_dir, download=True, train=False, transform=transform)
testloader = torch.utils.data.DataLoader(testset, batch_size=64)

print(len(trainset), "training images,", len(testset), "test images")
# zh-CN: print(len(trainset), "张训练图像和", len(testset), "张测试图像")

# %% [markdown] lang="en"
# Here is one of the images. `helper.imshow` undoes the normalisation before drawing it in grey.

# %% [markdown] lang="zh-CN"
# 下面是其中一张图像。`helper.imshow` 会先撤销归一化，再以灰度显示。

# %%
images, labels = next(iter(trainloader))
ax = helper.imshow(images[0], title=helper.FASHION_MNIST_CLASSES[labels[0]])

# %% [markdown] lang="en"
# ### The same batches, transformed once
#
# These loaders run `ToTensor` and `Normalize` again on every image at every epoch, one image at a time: on a CPU that costs more than the training itself. `helper.fashion_mnist_loaders(data_dir)` transforms all the images once, into two tensors, and then yields the very same batches in the same order, because it draws its random numbers exactly as `DataLoader(shuffle=True)` does. We check that on the first batch of an epoch, started from the same random state. `torch.random.fork_rng()` puts PyTorch's random state back afterwards, so the checks change nothing in the rest of the notebook.

# %% [markdown] lang="zh-CN"
# ### 同样的批次，只变换一次
#
# 上面的数据加载器在每一轮都要对每张图像重新执行 `ToTensor` 和 `Normalize`，而且一次只处理一张：在 CPU 上，这比训练本身还要费时。`helper.fashion_mnist_loaders(data_dir)` 把所有图像一次性变换成两个张量，之后按同样的顺序给出完全相同的批次，因为它抽取随机数的方式与 `DataLoader(shuffle=True)` 完全一样。我们从同一个随机状态出发，用一轮的第一个批次来验证这一点。`torch.random.fork_rng()` 会在结束后恢复 PyTorch 的随机状态，所以这些检查不会改变本 notebook 后面的任何结果。

# %%
fast_trainloader, fast_testloader = helper.fashion_mnist_loaders(data_dir)

def first_batch(loader, seed):
    torch.manual_seed(seed)
    return next(iter(loader))

with torch.random.fork_rng():
    classic_images, classic_labels = first_batch(trainloader, seed=1)
    fast_images, fast_labels = first_batch(fast_trainloader, seed=1)
assert torch.equal(classic_images, fast_images) and torch.equal(classic_labels, fast_labels)
print("first batch: the same images and labels")
# zh-CN: print("第一个批次：图像和标签都相同")

# %% [markdown] lang="en"
# One batch proves little: a loader that shuffled differently from the second batch on, or skipped a batch, would pass that check. Transforming all 60,000 images the classic way takes longer than training, so for the whole epoch we let a `DataLoader(shuffle=True)` over the *numbers* 0 to 59,999 draw the order of the examples. It draws exactly the random numbers that `trainloader` draws (the two differ only in what each index returns), and it is fast. Every batch of the fast loader must then hold the labels of exactly these examples, in this order, and its first image must be the one that `trainset` itself transforms.

# %% [markdown] lang="zh-CN"
# 只检查一个批次说明不了多少：如果一个数据加载器从第二个批次起打乱的顺序就不同了，或者漏掉了某个批次，它照样能通过上面的检查。用原来的方式变换全部 60,000 张图像比训练还慢，所以为了检查整整一轮，我们改用一个在*编号* 0 到 59,999 上运行的 `DataLoader(shuffle=True)` 来抽取样本的顺序。它抽取的随机数与 `trainloader` 完全相同（两者只是按索引取出的东西不同），而且速度很快。于是，快速数据加载器每个批次中的标签，都必须与这些样本的标签一一对应、顺序相同；每个批次的第一张图像，也必须与 `trainset` 自己变换出来的图像相同。

# %%
order_loader = torch.utils.data.DataLoader(range(len(trainset)), batch_size=64, shuffle=True)
with torch.random.fork_rng():
    torch.manual_seed(1)
    order = list(order_loader)         # the indices of every batch; no image is transformed
                                       # zh-CN: 每个批次的索引；不变换任何图像
    torch.manual_seed(1)
    checked = 0
    for indices, (images, labels) in zip(order, fast_trainloader):
        assert torch.equal(labels, trainset.targets[indices]), f"batch {checked} differs"
        # zh-CN: assert torch.equal(labels, trainset.targets[indices]), f"批次 {checked} 不同"
        assert torch.equal(images[0], trainset[int(indices[0])][0]), f"batch {checked} differs"
        # zh-CN: assert torch.equal(images[0], trainset[int(indices[0])][0]), f"批次 {checked} 不同"
        checked += 1
assert torch.equal(trainset.targets[order[0]], classic_labels)   # the order of trainloader itself
                                                                 # zh-CN: 正是 trainloader 自己的顺序
assert checked == len(order) == len(trainloader)
print(f"all {checked} batches of an epoch: the same examples in the same order")
# zh-CN: print(f"一轮中全部 {checked} 个批次：样本相同，顺序也相同")

# %% [markdown] lang="en"
# Timing the first 200 batches of an epoch through each loader, and scaling that to the whole epoch, shows what the transforms cost (the figures depend on your machine):

# %% [markdown] lang="zh-CN"
# 用两个数据加载器分别读取一轮中的前 200 个批次并计时，再换算成整轮的用时，就能看出这些变换的开销（具体数字取决于你的机器）：

# %% tags=["nbval-ignore-output"]
def seconds_per_epoch(loader, batches=200):
    start = time.perf_counter()
    for _batch in itertools.islice(loader, batches):
        pass
    return (time.perf_counter() - start) * len(loader) / batches

with torch.random.fork_rng():
    print(f"one epoch: {seconds_per_epoch(trainloader):.2f} s transforming every image, "
    # zh-CN: print(f"每轮用时：逐张变换图像 {seconds_per_epoch(trainloader):.2f} 秒，"
          f"{seconds_per_epoch(fast_trainloader):.2f} s transformed once")
          # zh-CN: f"只变换一次 {seconds_per_epoch(fast_trainloader):.2f} 秒")

# %% [markdown] lang="en"
# ## Train a network
#
# The model architecture and the training loop live in `fc_model`, so this notebook can focus on saving and loading. `fc_model.Network(784, 10, [512, 256, 128])` is a fully-connected network with 784 inputs (28×28 pixels), 10 outputs (the classes) and three hidden layers with dropout. `fc_model.train` prints the training loss and the loss and accuracy on the whole test set every 40 steps, and returns that history. The progress lines keep the classic course's labels: `Epoch: 1/2` is the epoch in progress out of all the epochs, `Training Loss` the mean training loss of the last 40 steps, and `Test Loss` and `Test Accuracy` the loss and the accuracy on the whole test set.

# %% [markdown] lang="zh-CN"
# ## 训练网络
#
# 模型架构和训练循环都放在 `fc_model` 中，这样本 notebook 可以专注于保存和加载。`fc_model.Network(784, 10, [512, 256, 128])` 是一个全连接网络：784 个输入（28×28 个像素）、10 个输出（类别），以及三个带 dropout 的隐藏层。`fc_model.train` 每 40 步打印一次训练损失，以及在整个测试集上的损失和准确率，并返回这些记录。打印出的进度行沿用经典课程的英文标签：`Epoch: 1/2` 是轮次（当前是第几轮/共几轮），`Training Loss` 是训练损失（最近 40 步的平均值），`Test Loss` 和 `Test Accuracy` 分别是在整个测试集上计算的测试损失和测试准确率。

# %%
# Create the network, define the criterion and optimizer
# zh-CN: 创建网络，定义损失函数和优化器
model = fc_model.Network(784, 10, [512, 256, 128])
criterion = nn.NLLLoss()
optimizer = optim.Adam(model.parameters(), lr=0.001)

# %% tags=["nbval-ignore-output"]
history = fc_model.train(model, fast_trainloader, fast_testloader, criterion, optimizer,
                         epochs=epochs, device=device)

# %%
figure = helper.plot_history(history)

# %% [markdown] lang="en"
# ## Saving and loading networks
#
# Training a network every time you need it is impractical. Instead, we save the trained network and load it later, to train it more or to make predictions.
#
# What a PyTorch network has learnt is stored in its `state_dict`, an ordered dictionary that maps the name of every parameter *and persistent buffer* to a tensor (plus whatever a module returns from `get_extra_state`, if it defines that method). Here that is the weight and the bias of every layer. Buffers are tensors a layer keeps without training them by gradient descent, such as the running statistics of batch normalisation; a buffer registered with `persistent=False` is left out of the state dict. This network has no buffers, and dropout has neither parameters nor buffers, so it has no entry.

# %% [markdown] lang="zh-CN"
# ## 保存和加载网络
#
# 每次要用网络时都重新训练一遍并不现实。更好的做法是保存训练好的网络，之后再加载，用来继续训练或进行预测。
#
# PyTorch 网络学到的内容都在它的 `state_dict`（状态字典）中。这是一个有序字典，把每个参数*和持久缓冲区*（persistent buffer）的名字映射到一个张量（如果某个模块定义了 `get_extra_state` 方法，还包括它返回的内容）。在这里，就是每一层的权重和偏置。缓冲区是层所持有、但不通过梯度下降训练的张量，比如批量归一化（batch normalization）的滑动统计量；用 `persistent=False` 注册的缓冲区不会出现在状态字典中。这个网络没有缓冲区，dropout 既没有参数也没有缓冲区，所以字典里没有它。

# %%
print("Our model: \n\n", model, '\n')
# zh-CN: print("我们的模型：\n\n", model, '\n')
print("The state dict keys: \n\n", model.state_dict().keys())
# zh-CN: print("状态字典的键：\n\n", model.state_dict().keys())

# %% [markdown] lang="en"
# `state_dict()` copies no data: its tensors are the parameters *detached* (`param.detach()`): new tensor objects that do not track gradients but share the parameters' memory, so they change whenever training goes on. To keep a snapshot, for example the best weights so far, copy it with `copy.deepcopy` or save it to a file straight away. Comparing memory addresses shows the difference:

# %% [markdown] lang="zh-CN"
# `state_dict()` 不会复制任何数据：其中的张量是参数经过*分离*（`param.detach()`）得到的新张量对象，它们不记录梯度，但与参数共享同一块内存，所以训练一继续，它们也跟着改变。如果要留下一份快照，比如迄今最好的权重，就要用 `copy.deepcopy` 复制一份，或者立即保存到文件中。比较一下内存地址就能看出区别：

# %%
live = model.state_dict()
snapshot = copy.deepcopy(model.state_dict())
print(f"state_dict() shares the model's memory: {live['output.bias'].data_ptr() == model.output.bias.data_ptr()}")
# zh-CN: print(f"state_dict() 与模型共享内存：{live['output.bias'].data_ptr() == model.output.bias.data_ptr()}")
print(f"a deep copy shares it:                  {snapshot['output.bias'].data_ptr() == model.output.bias.data_ptr()}")
# zh-CN: print(f"深拷贝的副本与模型共享内存：{snapshot['output.bias'].data_ptr() == model.output.bias.data_ptr()}")

# %% [markdown] lang="en"
# The simplest thing to do is to save the state dict with `torch.save`, here to a file `checkpoint.pth` (`.pth` and `.pt` are the usual extensions for PyTorch files).

# %% [markdown] lang="zh-CN"
# 最简单的做法是用 `torch.save` 保存状态字典，这里保存到文件 `checkpoint.pth`（`.pth` 和 `.pt` 是 PyTorch 文件常用的扩展名）。

# %%
torch.save(model.state_dict(), 'checkpoint.pth')

# %% [markdown] lang="en"
# Then we load it with `torch.load`. Two arguments are worth writing out every time:
#
# - `weights_only=True` lets `torch.load` rebuild only tensors, plain Python containers and numbers, and the few classes that are allowed. Since PyTorch 1.6, a file written by `torch.save` is a zip archive holding a Python pickle (the structure of the saved object) and the raw data of each tensor. Unpickling an arbitrary file can run any code hidden in it; with `weights_only=True`, a restricted unpickler refuses such a file instead. The option exists since PyTorch 1.13 and is the default since 2.6, but write it out anyway: an environment variable can turn the default off for every call that leaves it out (lesson 3 shows it). Never pass `weights_only=False` for a file you did not make yourself (lesson 3 shows why).
# - `map_location` says where the loaded *tensors* go. A checkpoint saved on a GPU remembers its device; `map_location='cpu'` loads it on a machine without one. It moves tensors, not models: more on that below.

# %% [markdown] lang="zh-CN"
# 然后用 `torch.load` 把它加载回来。有两个参数值得每次都写上：
#
# - `weights_only=True` 让 `torch.load` 只重建张量、普通的 Python 容器和数字，以及少数被放行的类。从 PyTorch 1.6 起，`torch.save` 写出的文件是一个 zip 归档，里面有一个 Python pickle（记录所保存对象的结构）以及每个张量的原始数据。反序列化一个来路不明的文件可能执行其中暗藏的任意代码；使用 `weights_only=True` 时，一个受限的反序列化器会拒绝加载这样的文件。这个选项从 PyTorch 1.13 开始提供，从 2.6 起成为默认值，但仍然应该每次都写出来：一个环境变量就能让所有省略了它的调用不再使用这个默认值（第 3 课会演示）。对于不是你自己生成的文件，千万不要传入 `weights_only=False`（第 3 课会说明原因）。
# - `map_location` 指定加载出来的*张量*放到哪里。在 GPU 上保存的检查点会记住它所在的设备；`map_location='cpu'` 可以让它在没有 GPU 的机器上加载。它移动的是张量，而不是模型：后面会详细说明。

# %%
state_dict = torch.load('checkpoint.pth', map_location='cpu', weights_only=True)
print(state_dict.keys())

# %% [markdown] lang="en"
# **Which PyTorch is recent enough?** `weights_only=True` is a restricted unpickler, not a sandbox, and it has had security bugs. [CVE-2025-32434](https://github.com/pytorch/pytorch/security/advisories/GHSA-53q9-r3pm-6pq6): a crafted file could run code through `torch.load(..., weights_only=True)` in every version up to 2.5.1 (fixed in 2.6.0). [CVE-2026-24747](https://github.com/pytorch/pytorch/security/advisories/GHSA-63cw-57p8-fm3p): a crafted file could corrupt memory in the weights-only unpickler (fixed in 2.10.0). So these lessons need PyTorch 2.10 or newer, the version from which loading a file you did not make with `weights_only=True` is considered safe today. Keep PyTorch up to date, and for files from strangers prefer safetensors, a format that holds no code at all (lesson 3).

# %% [markdown] lang="zh-CN"
# **PyTorch 要多新才够？** `weights_only=True` 是一个受限的反序列化器，而不是沙箱，它本身也出现过安全漏洞。[CVE-2025-32434](https://github.com/pytorch/pytorch/security/advisories/GHSA-53q9-r3pm-6pq6)：在 2.5.1 及以前的所有版本中，精心构造的文件可以通过 `torch.load(..., weights_only=True)` 执行代码（在 2.6.0 中修复）。[CVE-2026-24747](https://github.com/pytorch/pytorch/security/advisories/GHSA-63cw-57p8-fm3p)：精心构造的文件可以破坏 weights-only 反序列化器的内存（在 2.10.0 中修复）。因此，本系列课程要求 PyTorch 2.10 或更新的版本：就目前所知，从这个版本起，用 `weights_only=True` 加载别人生成的文件才算安全。请及时更新 PyTorch；对于来自陌生人的文件，优先使用根本不包含代码的 safetensors 格式（第 3 课）。

# %%
print(f"PyTorch {torch.__version__}, 2.10 or newer: {torch.__version__ >= '2.10'}")
# zh-CN: print(f"PyTorch {torch.__version__}，是否为 2.10 或更新的版本：{torch.__version__ >= '2.10'}")

# %% [markdown] lang="en"
# To load the state dict into a network, call `model.load_state_dict(state_dict)`. It copies every tensor into the parameter or buffer of the same name, and returns the keys that did *not* match: `missing_keys` (the model has them, the file does not) and `unexpected_keys` (the other way round). With the default `strict=True`, any such key raises an error instead, so a call that returns has matched them all; its result shows as `<All keys matched successfully>`:

# %% [markdown] lang="zh-CN"
# 要把状态字典加载到网络中，调用 `model.load_state_dict(state_dict)`。它会把每个张量复制到同名的参数或缓冲区中，并返回*没有*匹配上的键：`missing_keys`（模型有、文件里没有的）和 `unexpected_keys`（文件里有、模型没有的）。在默认的 `strict=True` 下，只要出现这样的键就会直接报错，因此调用能正常返回，就说明所有的键都匹配上了；它返回的结果显示为 `<All keys matched successfully>`（所有键都匹配成功）：

# %%
model.load_state_dict(state_dict)

# %% [markdown] lang="en"
# That seems straightforward, but loading a state dict only works when the model has exactly the architecture of the checkpoint. A network with other hidden layers, say `[400, 200, 100]`, cannot take these tensors: `load_state_dict` raises a `RuntimeError` that lists every size mismatch.
#
# We catch the error and print it, so the notebook keeps running, and we give the new network its own name: `model` stays the trained network that we save below.

# %% [markdown] lang="zh-CN"
# 看上去很简单，但只有当模型的架构与检查点完全一致时，状态字典才能加载成功。如果网络的隐藏层不同，比如 `[400, 200, 100]`，就装不下这些张量：`load_state_dict` 会抛出 `RuntimeError`，列出所有尺寸不匹配的地方。下面打印的英文错误信息中，每一行 `size mismatch`（尺寸不匹配）对应一个张量：先是检查点中的形状，再是当前模型中的形状。
#
# 这里我们捕获这个错误并打印出来，让 notebook 继续运行；同时给新网络起一个单独的名字，让 `model` 仍然是我们接下来要保存的、训练好的网络。

# %%
other_model = fc_model.Network(784, 10, [400, 200, 100])
try:
    # This fails: the tensor sizes do not match
    # zh-CN: 这里会失败：张量尺寸不匹配
    other_model.load_state_dict(state_dict)
except RuntimeError as error:
    print("load_state_dict refused the weights and listed every size mismatch:")
    # zh-CN: print("load_state_dict 拒绝加载这些权重，并列出了每一处尺寸不匹配：")
    print(error)

# %% [markdown] lang="en"
# ## A checkpoint that knows its architecture
#
# So we need to rebuild the model exactly as it was when it was trained. The state dict alone does not say how: the architecture must be saved in the checkpoint too. We build a dictionary with everything needed to rebuild the model (the layer sizes and the dropout probability) next to the state dict.

# %% [markdown] lang="zh-CN"
# ## 记录了架构的检查点
#
# 因此，我们需要按训练时的样子原样重建模型。仅凭状态字典无法做到这一点：架构也必须保存在检查点中。我们构建一个字典，把重建模型所需的全部信息（各层大小和 dropout 概率）与状态字典放在一起。

# %%
checkpoint = {'input_size': 784,
              'output_size': 10,
              'hidden_layers': [layer.out_features for layer in model.hidden_layers],
              'drop_p': model.dropout.p,
              'state_dict': model.state_dict()}

torch.save(checkpoint, 'checkpoint.pth')
print({key: value for key, value in checkpoint.items() if key != 'state_dict'})


# %% [markdown] lang="en"
# Now the checkpoint holds all the information needed to rebuild the trained model. A function that loads it must put the model on the device where it will compute, and three separate things decide where tensors live:
#
# - `map_location` decides where the tensors *loaded from the file* go;
# - `load_state_dict` copies those tensors into the model's parameters, *wherever the parameters already are*: with its default `assign=False` it never moves the model (`assign=True`, below, is the exception);
# - the model goes where `model.to(device)` puts it. A new `fc_model.Network` starts on the CPU.
#
# So loading with `map_location='cuda'` into a network built on the CPU leaves the network on the CPU, and the first GPU batch fed to it fails with a device-mismatch error. The function below reads the file (safely) onto `device`, builds a network of the saved architecture, moves it to `device`, copies the weights in, and switches it to evaluation mode with `eval()`, so that dropout is off for predictions.

# %% [markdown] lang="zh-CN"
# 现在检查点包含了重建训练好的模型所需的全部信息。加载它的函数必须把模型放到将要进行计算的设备上，而张量放在哪里，分别由三件事决定：
#
# - `map_location` 决定*从文件加载出来的*张量放到哪里；
# - `load_state_dict` 把这些张量复制到模型的参数中，*参数原来在哪里就留在哪里*：在默认的 `assign=False` 下，它从不移动模型（例外是下文的 `assign=True`）；
# - 模型放在 `model.to(device)` 指定的地方。新建的 `fc_model.Network` 位于 CPU 上。
#
# 因此，即使用 `map_location='cuda'` 读取文件，把权重载入在 CPU 上构建的网络之后，网络仍然留在 CPU 上；给它输入第一个 GPU 上的批次时，就会因设备不一致而报错。下面的函数把文件（安全地）读到 `device` 上，按保存的架构构建网络，把网络移到 `device`，复制权重，再用 `eval()` 把网络切换到评估模式，这样做预测时 dropout 就不会起作用。

# %%
def load_checkpoint(filepath, device='cpu'):
    # Rebuild, on device, a network saved by the cell above
    # zh-CN: 在 device 上重建上一个单元格保存的网络
    checkpoint = torch.load(filepath, map_location=device, weights_only=True)
    model = fc_model.Network(checkpoint['input_size'],
                             checkpoint['output_size'],
                             checkpoint['hidden_layers'],
                             checkpoint['drop_p'])
    model.to(device)                                 # the parameters move to device ...
                                                     # zh-CN: 参数移到 device 上……
    model.load_state_dict(checkpoint['state_dict'])  # ... and the saved values are copied into them
                                                     # zh-CN: ……再把保存的值复制进去
    model.eval()
    return model


# %%
loaded_model = load_checkpoint('checkpoint.pth', device)
print(loaded_model)

# %% [markdown] lang="en"
# ### `assign=True`: the loaded tensors become the parameters
#
# `model.load_state_dict(state_dict, assign=True)` (PyTorch 2.1 and later) does not copy: it makes each loaded tensor the parameter itself (wrapped as an `nn.Parameter`). Then `map_location` *does* decide where the model ends up. This lets us build the network on the `meta` device, which records shapes but allocates no memory, and fill it straight from the file: with a large model, the weights are never held twice. The price: an optimizer created *before* such a load still holds the old parameters, so create it afterwards.

# %% [markdown] lang="zh-CN"
# ### `assign=True`：加载出来的张量直接成为参数
#
# `model.load_state_dict(state_dict, assign=True)`（PyTorch 2.1 起）不做复制，而是让加载出来的每个张量本身成为参数（包装成 `nn.Parameter`）。这时模型最终在哪里，*就*由 `map_location` 决定了。这样我们可以先在 `meta` 设备上构建网络（它只记录形状，不分配内存），再直接用文件中的张量填满它：对于大模型，内存中不会同时有两份权重。代价是：在这样的加载*之前*创建的优化器仍然持有旧的参数，所以优化器要在加载之后再创建。

# %%
saved = torch.load('checkpoint.pth', map_location=device, weights_only=True)
with torch.device('meta'):             # shapes only: no memory for the weights
                                       # zh-CN: 只有形状：不为权重分配内存
    meta_model = fc_model.Network(saved['input_size'], saved['output_size'],
                                  saved['hidden_layers'], saved['drop_p'])
too_early = optim.Adam(meta_model.parameters(), lr=0.001)   # wrong: created before the load
                                                            # zh-CN: 错误：在加载之前创建
print(f"before loading: {devices.model_device(meta_model)}")
# zh-CN: print(f"加载之前：{devices.model_device(meta_model)}")
meta_model.load_state_dict(saved['state_dict'], assign=True)
print(f"after loading with assign=True: {devices.model_device(meta_model)}")
# zh-CN: print(f"用 assign=True 加载之后：{devices.model_device(meta_model)}")
assert devices.model_device(meta_model) == devices.model_device(loaded_model)
assert meta_model.output.weight.data_ptr() == saved['state_dict']['output.weight'].data_ptr()
stale = too_early.param_groups[0]['params'][0] is not meta_model.hidden_layers[0].weight
print(f"the optimizer created too early holds the old parameters: {stale}")
# zh-CN: print(f"过早创建的优化器持有的是旧参数：{stale}")

# %% [markdown] lang="en"
# ## Did it work?
#
# A saved model is only useful if it behaves like the one we trained. The reloaded network must be on the same device as the trained one, and in evaluation mode both must give identical outputs for the same images, and the same accuracy on the whole test set. The cell stops with an `AssertionError` if they do not.

# %% [markdown] lang="zh-CN"
# ## 真的成功了吗？
#
# 只有当保存的模型与训练好的模型表现一致时，保存才有意义。重新加载的网络必须和训练好的网络位于同一个设备上；在评估模式下，两个网络对同一批图像的输出必须完全相同，在整个测试集上的准确率也必须相同。如果不一致，这个单元格会以 `AssertionError` 停止。

# %% tags=["nbval-ignore-output"]
assert devices.model_device(loaded_model) == devices.model_device(model)
model.eval()
test_images, test_labels = next(iter(fast_testloader))
test_images = test_images.to(device)
with torch.no_grad():
    assert torch.equal(model(test_images), loaded_model(test_images))

_, trained_accuracy = fc_model.validation(model, fast_testloader, criterion)
_, loaded_accuracy = fc_model.validation(loaded_model, fast_testloader, criterion)
assert loaded_accuracy == trained_accuracy
print(f"Test accuracy of the trained model:  {trained_accuracy:.4f}")
# zh-CN: print(f"刚训练好的模型的测试准确率：{trained_accuracy:.4f}")
print(f"Test accuracy of the reloaded model: {loaded_accuracy:.4f}")
# zh-CN: print(f"重新加载的模型的测试准确率：{loaded_accuracy:.4f}")

# %% [markdown] lang="en"
# Finally, the reloaded model classifies a test image. `torch.exp` turns the network's log-probabilities into probabilities.

# %% [markdown] lang="zh-CN"
# 最后，用重新加载的模型对一张测试图像进行分类。`torch.exp` 把网络输出的对数概率转换为概率。

# %%
with torch.no_grad():
    probabilities = torch.exp(loaded_model(test_images[:1]))
print(f"Label: {helper.FASHION_MNIST_CLASSES[test_labels[0]]}")
# zh-CN: print(f"标签：{helper.FASHION_MNIST_CLASSES[test_labels[0]]}")
figure = helper.view_classify(test_images[0], probabilities)

# %% [markdown] lang="en"
# ## Summary
#
# - A model's parameters and persistent buffers live in its `state_dict`; save it with `torch.save(model.state_dict(), path)`. Its tensors share memory with the live parameters: `copy.deepcopy` it to keep a snapshot.
# - Load with `torch.load(path, map_location=..., weights_only=True)` (written out every time, on PyTorch 2.10 or newer), then `model.load_state_dict(...)` on a model of the same architecture, which raises on any key or size that does not match.
# - `map_location` places the loaded tensors, `model.to(device)` places the model; `load_state_dict` copies values and moves nothing, unless you pass `assign=True`: then the loaded tensors become the parameters, and the optimizer must be created after the load.
# - Store the architecture in the checkpoint, so the model can be rebuilt from the file alone, and call `eval()` before predicting.

# %% [markdown] lang="zh-CN"
# ## 小结
#
# - 模型的参数和持久缓冲区都在 `state_dict` 中，用 `torch.save(model.state_dict(), path)` 保存。其中的张量与模型正在使用的参数共享内存：要留下快照，就用 `copy.deepcopy` 复制一份。
# - 用 `torch.load(path, map_location=..., weights_only=True)` 加载（每次都写出 `weights_only`，并使用 PyTorch 2.10 或更新的版本），再对同样架构的模型调用 `model.load_state_dict(...)`；只要有键或尺寸不匹配，它就会报错。
# - `map_location` 决定加载出来的张量放在哪里，`model.to(device)` 决定模型放在哪里；`load_state_dict` 只复制数值，不移动任何东西，除非传入 `assign=True`：这时加载出来的张量直接成为参数，优化器必须在加载之后再创建。
# - 把架构一并存入检查点，这样只凭文件就能重建模型；预测之前记得调用 `eval()`。

# %% [markdown] lang="en"
# ## Exercises
#
# Each exercise asks you to write a function; the check cell right after it runs your function on small networks of its own and tells you what is missing or wrong. Run the next cell first: it imports what the exercises need, so they work even after a kernel restart, without the cells above. In the student edition each answer is `raise NotImplementedError()`: replace it with your code, run that cell, then run the check cell after it.

# %% [markdown] lang="zh-CN"
# ## 练习
#
# 每道练习都要求你写一个函数；紧跟在它后面的检查单元格会用自己创建的小网络运行你的函数，并告诉你缺了什么或错在哪里。请先运行下面这个单元格：它导入练习需要的一切，所以即使重启了内核、没有运行上面的单元格，也能做练习。在学生版中，每个答案都是 `raise NotImplementedError()`：把它换成你的代码，运行这个单元格，再运行它后面的检查单元格。

# %%
import copy

import torch

from saveload_lessons import exercise_checks

check = exercise_checks.for_lesson(1, language="en")
# zh-CN: check = exercise_checks.for_lesson(1, language="zh-CN")

# %% [markdown] lang="en"
# **Exercise 1.1: save the weights, and only the weights.** Write `save_weights(model, path)` so that the file holds the model's `state_dict` and loads with `torch.load(path, weights_only=True)`. The cell after it checks your function.

# %% [markdown] lang="zh-CN"
# **练习 1.1：只保存权重。** 编写 `save_weights(model, path)`，使文件中保存的是模型的 `state_dict`，并且能用 `torch.load(path, weights_only=True)` 加载。后面的单元格会检查你的函数。

# %%
def save_weights(model, path):
    ### BEGIN SOLUTION
    torch.save(model.state_dict(), path)
    ### END SOLUTION


# %%
check.exercise_1(save_weights)

# %% [markdown] lang="en"
# **Exercise 1.2: a snapshot that training does not change.** Write `snapshot(model)`, which returns the model's weights as they are now, so that they stay the same while the model trains on (you would use it to keep the best weights seen so far). Remember what `state_dict()` returns. The cell after it checks your function.

# %% [markdown] lang="zh-CN"
# **练习 1.2：不随训练改变的快照。** 编写 `snapshot(model)`，返回模型此刻的权重，而且这些权重在模型继续训练时保持不变（可以用它留下迄今最好的权重）。回想一下 `state_dict()` 返回的是什么。后面的单元格会检查你的函数。

# %%
def snapshot(model):
    ### BEGIN SOLUTION
    return copy.deepcopy(model.state_dict())
    ### END SOLUTION


# %%
check.exercise_2(snapshot)

# %% [markdown] lang="en"
# ## Further reading
#
# - This lesson is based on "Saving and Loading Models" of Udacity's [deep-learning-v2-pytorch](https://github.com/udacity/deep-learning-v2-pytorch) course (`intro-to-pytorch`, part 6).
# - PyTorch tutorial: [Saving and loading models](https://pytorch.org/tutorials/beginner/saving_loading_models.html).
# - PyTorch notes: [Serialization semantics](https://pytorch.org/docs/stable/notes/serialization.html), on what `torch.save` writes and what `torch.load` accepts.
# - API: [`torch.save`](https://pytorch.org/docs/stable/generated/torch.save.html), [`torch.load`](https://pytorch.org/docs/stable/generated/torch.load.html), [`Module.load_state_dict`](https://pytorch.org/docs/stable/generated/torch.nn.Module.html#torch.nn.Module.load_state_dict).

# %% [markdown] lang="zh-CN"
# ## 延伸阅读
#
# - 本课改编自 Udacity 课程 [deep-learning-v2-pytorch](https://github.com/udacity/deep-learning-v2-pytorch) 中的“Saving and Loading Models”（`intro-to-pytorch` 第 6 部分）。
# - PyTorch 教程：[Saving and loading models](https://pytorch.org/tutorials/beginner/saving_loading_models.html)（保存与加载模型）。
# - PyTorch 说明文档：[Serialization semantics](https://pytorch.org/docs/stable/notes/serialization.html)（序列化语义），讲解 `torch.save` 写入了什么、`torch.load` 接受什么。
# - API：[`torch.save`](https://pytorch.org/docs/stable/generated/torch.save.html)、[`torch.load`](https://pytorch.org/docs/stable/generated/torch.load.html)、[`Module.load_state_dict`](https://pytorch.org/docs/stable/generated/torch.nn.Module.html#torch.nn.Module.load_state_dict)。
