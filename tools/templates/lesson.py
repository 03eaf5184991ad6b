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
#       en: NUMBER. TITLE
#       zh-CN: NUMBER. 中文标题
#     summary:
#       en: one line for the README's lesson list and the previous lesson's "Next" link.
#       zh-CN: 用于 README 课程列表和上一课“下一课”链接的一句话。
#     teaching_minutes: 60
#     quick_run:
#       epochs: 1
# ---

# %% [markdown] lang="en"
# # TITLE
#
# What this lesson teaches, and why a learner needs it.

# %% [markdown] lang="zh-CN"
# # 中文标题
#
# 本课讲什么，学员为什么需要它。

# %% [markdown] lang="en"
# ## Imports and parameters

# %% [markdown] lang="zh-CN"
# ## 导入模块和参数

# %%
from pathlib import Path

import torch

import fc_model
import helper
from saveload_lessons import devices, messages

# %% tags=["parameters"]
epochs = 1                             # passes over the training images
                                       # zh-CN: 遍历训练图像的轮数
device = "auto"                        # "auto", "cpu", "cuda" or "mps"
                                       # zh-CN: "auto"、"cpu"、"cuda" 或 "mps"
data_dir = "~/.pytorch/F_MNIST_data/"  # where torchvision keeps Fashion-MNIST
                                       # zh-CN: torchvision 存放 Fashion-MNIST 的目录
checkpoint_dir = "lesson-NUMBER"       # where this notebook writes its files
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
checkpoint_dir = Path(checkpoint_dir)
checkpoint_dir.mkdir(parents=True, exist_ok=True)
torch.manual_seed(seed)

# %% [markdown] lang="en"
# ## A first step
#
# Prose before every code cell: what it does and what to look for in its output.

# %% [markdown] lang="zh-CN"
# ## 第一步
#
# 每个代码单元格之前都有一段说明：它做什么，输出中要看什么。

# %%
model = fc_model.Network(784, 10, [128])
torch.save(model.state_dict(), checkpoint_dir / "weights.pth")
print(f"saved {len(model.state_dict())} tensors")
# zh-CN: print(f"保存了 {len(model.state_dict())} 个张量")

# %% [markdown] lang="en"
# ## Exercises
#
# Each exercise asks for a function, and the cell after it checks your answer.

# %% [markdown] lang="zh-CN"
# ## 练习
#
# 每道练习要求写一个函数，紧随其后的单元格会检查你的答案。

# %%
import torch

from saveload_lessons import exercise_checks

check = exercise_checks.for_lesson(NUMBER, language="en")
# zh-CN: check = exercise_checks.for_lesson(NUMBER, language="zh-CN")

# %% [markdown] lang="en"
# **Exercise NUMBER.1.** Write `save_weights(model, path)`, which saves the model's `state_dict` at `path`.

# %% [markdown] lang="zh-CN"
# **练习 NUMBER.1。** 编写 `save_weights(model, path)`，把模型的 `state_dict` 保存到 `path`。

# %%
def save_weights(model, path):
    ### BEGIN SOLUTION
    torch.save(model.state_dict(), path)
    ### END SOLUTION


# %%
check.exercise_1(save_weights)

# %% [markdown] lang="en"
# **Exercise NUMBER.2.** Write `load_weights(model, path)`, which loads the weights saved at `path` into `model`, safely.

# %% [markdown] lang="zh-CN"
# **练习 NUMBER.2。** 编写 `load_weights(model, path)`，把 `path` 处保存的权重安全地加载到 `model` 中。

# %%
def load_weights(model, path):
    ### BEGIN SOLUTION
    model.load_state_dict(torch.load(path, weights_only=True))
    ### END SOLUTION


# %%
check.exercise_2(load_weights)
