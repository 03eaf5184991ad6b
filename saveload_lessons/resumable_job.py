"""Lesson 7's training job: it resumes exactly in the middle of an epoch with worker
processes, survives a ``SIGTERM``, averages its weights (EMA) and keeps its best checkpoints.

The notebook uses ``Job`` and ``train_steps`` directly, and starts the whole job as a child
process to preempt it for real:

    python -m saveload_lessons.resumable_job --examples FILE --checkpoint-dir DIR --steps 64

A ``Job`` holds everything a run trains and must save to continue exactly: the network
(``fc_model.Network``), its Adam optimizer, an exponential moving average of its weights
(``torch.optim.swa_utils.AveragedModel``), the data loader (a ``StatefulDataLoader`` over
``resumable_data.StatefulAugmentedImages`` with worker processes) and the step count.
``Job.checkpoint`` gathers all of it, with the random-number-generator states, into one general
checkpoint (``checkpoint_io``) that loads with ``weights_only=True``; ``Job.resume`` puts it back.

The job started as a process saves the latest checkpoint and the best ones by the EMA
network's test accuracy every ``--eval-every`` steps (``retention.CheckpointKeeper``), resumes
from the latest if there is one, and on ``SIGTERM`` finishes its step, saves, and exits with
``preemption.PREEMPTED``.
"""

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn, optim
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchdata.stateful_dataloader import StatefulDataLoader

import fc_model
from saveload_lessons import checkpoint_io, devices, messages, preemption, resumable_data
from saveload_lessons.checkpoint_io import CheckpointError
from saveload_lessons.files import atomic_write
from saveload_lessons.retention import CheckpointKeeper, file_step
from saveload_lessons.values import is_count, positive_int_argument

# torchdata 0.11 (its latest release) calls an API that torch 2.10 and later deprecate, at
# every StatefulDataLoader it builds; the call does nothing, and the warning says nothing to a learner
warnings.filterwarnings("ignore", message="'set_vital' is deprecated", category=UserWarning)

HIDDEN_LAYERS = [256, 128]
LEARNING_RATE = 0.001
criterion = nn.NLLLoss()


class Job:
    """A training run of lesson 7, ready to save and resume.

    Args:
        images, labels: the training examples (``helper.fashion_mnist_tensors``).
        seed: fixes the initial weights, the loader's order and its workers' seeds.
        num_workers: the data loader's worker processes.
        ema_decay: how much of the average each step keeps (0.99: the last ~100 steps count).
        device: where the network trains.
        dataset_class: the data set's class; lesson 7 tries ``AugmentedImages``, which
            forgets its workers' random state.
    """

    def __init__(self, images, labels, seed, num_workers, batch_size=64, ema_decay=0.99,
                 device="cpu", dataset_class=resumable_data.StatefulAugmentedImages):
        torch.manual_seed(seed)
        self.device = torch.device(device)
        self.model = fc_model.Network(784, 10, HIDDEN_LAYERS).to(self.device)
        self.optimizer = optim.Adam(self.model.parameters(), lr=LEARNING_RATE)
        self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay))
        self.loader = StatefulDataLoader(dataset_class(images, labels), batch_size=batch_size,
                                         shuffle=True, num_workers=num_workers)
        self.step = 0
        self.loss = None  # of the last step
        self.batches = None  # the rest of an interrupted epoch, once resumed

    def checkpoint(self):
        """Everything needed to continue exactly, as a general checkpoint (a dict)."""
        return checkpoint_io.general_checkpoint(self.model, self.optimizer, step=self.step,
                                                loader_state=self.loader.state_dict(),
                                                ema_state_dict=self.ema.state_dict())

    def resume(self, path):
        """Continue from the checkpoint file ``path`` (read safely by ``checkpoint_io``), in the
        middle of the epoch where it was saved."""
        # Read onto the CPU, where the states of the loader and the generators must stay;
        # load_state_dict copies the weights to the network's device
        checkpoint = checkpoint_io.load_checkpoint(path, fc_model.NETWORK)
        missing = [key for key in ("step", "loader_state", "ema_state_dict") if key not in checkpoint]
        if missing or not is_count(checkpoint["step"]):
            raise CheckpointError(messages.say(
                f"{path} is not a checkpoint of a lesson-7 job: {missing or 'step'} missing or wrong",
                f"{path} 不是第 7 课训练任务的检查点：{missing or 'step'} 缺失或有误"))
        self.model.load_state_dict(checkpoint["model_state_dict"])
        self.optimizer.load_state_dict(checkpoint["optimizer_state_dict"])
        self.ema.load_state_dict(checkpoint["ema_state_dict"])
        self.step = checkpoint["step"]
        try:
            self.batches = resumable_data.resumed_batches(self.loader, checkpoint["loader_state"],
                                                          checkpoint["rng"])
        except (KeyError, TypeError, ValueError, AssertionError, IndexError, RuntimeError) as err:
            detail = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
            raise CheckpointError(messages.say(
                f"the data loader's state in {path} does not fit this loader ({detail}): "
                "resume with the loader's settings of the run that saved it (num_workers, batch size, data set)",
                f"{path} 中数据加载器的状态与这个数据加载器不匹配（{detail}）："
                "请使用保存它的那次训练的数据加载器设置（num_workers、批大小、数据集）来恢复")) from None


def train_steps(job, until, stop=None, after_step=None):
    """Train ``job`` until it has made ``until`` steps in all, across epochs.

    Each step is one batch: forward, loss, backward, Adam's step, then the EMA's update.
    After each step ``after_step(job)`` runs, if given; the loop ends early, at the end of a
    step, once ``stop.requested`` is true (a ``preemption.StopRequest``). Returns the step count.
    """
    while job.step < until:
        for images, labels in job.batches if job.batches is not None else job.loader:
            images, labels = images.to(job.device), labels.to(job.device)
            job.optimizer.zero_grad()
            loss = criterion(job.model(images), labels)
            loss.backward()
            job.optimizer.step()
            job.loss = loss.item()
            job.ema.update_parameters(job.model)
            job.step += 1
            if after_step is not None:
                after_step(job)
            if job.step == until or (stop is not None and stop.requested):
                return job.step
        job.batches = None
    return job.step


def save_examples(path, train, test):
    """Write the examples a job process trains and tests on: ``train`` and ``test`` are
    ``(images, labels)`` pairs. Reading them back (``load_examples``) is much quicker than
    preparing Fashion-MNIST again in every process."""
    examples = {"train_images": train[0], "train_labels": train[1],
                "test_images": test[0], "test_labels": test[1]}
    with atomic_write(path) as file:
        torch.save({name: tensor.clone() for name, tensor in examples.items()}, file)  # a slice alone (lesson 6)


def load_examples(path):
    """``(train, test)`` as ``save_examples`` wrote them, read with ``weights_only=True``."""
    examples = checkpoint_io.load_torch_file(Path(path), "cpu")
    names = ("train_images", "train_labels", "test_images", "test_labels")
    if not isinstance(examples, dict) or not all(isinstance(examples.get(name), torch.Tensor) for name in names):
        raise checkpoint_io.CheckpointError(f"{path} does not hold the four tensors {names} that save_examples writes")
    return ((examples["train_images"], examples["train_labels"]),
            (examples["test_images"], examples["test_labels"]))


class EpochReport:
    """An ``after_step`` for ``train_steps`` that prints lesson 1's progress line at the end of
    each epoch: the epoch's mean training loss, and the network's test loss and accuracy on
    ``test_batches``."""

    def __init__(self, epochs, test_batches):
        self.epochs, self.test_batches = epochs, test_batches
        self.losses = []

    def __call__(self, job):
        self.losses.append(job.loss)
        if job.step % len(job.loader) == 0:
            test_loss, accuracy = fc_model.validation(job.model, self.test_batches, criterion)
            print(fc_model.progress_line(job.step // len(job.loader), self.epochs,
                                         sum(self.losses) / len(self.losses), test_loss, accuracy))
            self.losses = []


def _arguments(argv):
    parser = argparse.ArgumentParser(prog="python -m saveload_lessons.resumable_job",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", required=True, help="the file save_examples wrote")
    parser.add_argument("--checkpoint-dir", required=True, help="where the checkpoints and their ledger go")
    parser.add_argument("--steps", type=positive_int_argument, required=True, help="steps to train in all")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--num-workers", type=positive_int_argument, default=2)
    parser.add_argument("--ema-decay", type=float, default=0.99)
    parser.add_argument("--eval-every", type=positive_int_argument, default=8,
                        help="steps between evaluations, each followed by a save")
    parser.add_argument("--keep-best", type=positive_int_argument, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--min-step-seconds", type=float, default=0.0,
                        help="make each step last at least this long, as a real one would")
    return parser.parse_args(argv)


def main(argv=None):
    """Run the job; exit with ``preemption.PREEMPTED`` when stopped by the signal."""
    args = _arguments(argv)
    device = devices.get_device(args.device)
    (images, labels), (test_images, test_labels) = load_examples(args.examples)
    test_batches = [(test_images.to(device), test_labels.to(device))]
    job = Job(images, labels, args.seed, args.num_workers, ema_decay=args.ema_decay, device=device)
    keeper = CheckpointKeeper(args.checkpoint_dir, keep_best=args.keep_best)
    if keeper.latest() is not None:
        job.resume(keeper.latest())
        print(messages.say(f"resumed from {keeper.latest().name} at step {job.step}",
                           f"从 {keeper.latest().name} 恢复，当前为第 {job.step} 步"), flush=True)

    def save(job):
        _, accuracy = fc_model.validation(job.ema.module, test_batches, criterion)
        keeper.save(job.step, accuracy, lambda file: torch.save(job.checkpoint(), file))
        print(messages.say(f"step {job.step}: EMA test accuracy {accuracy:.4f}, saved",
                           f"第 {job.step} 步：EMA 测试准确率 {accuracy:.4f}，已保存"), flush=True)

    def after_step(job):
        time.sleep(max(0.0, args.min_step_seconds - (time.monotonic() - after_step.started)))
        after_step.started = time.monotonic()
        if job.step % args.eval_every == 0 or job.step == args.steps:
            save(job)

    after_step.started = time.monotonic()
    with preemption.StopRequest() as stop:  # a second signal while saving is recorded too
        train_steps(job, args.steps, stop=stop, after_step=after_step)
        if stop.requested:
            if keeper.latest() is None or file_step(keeper.latest()) != job.step:
                save(job)
            print(messages.say(f"stopped by the signal after step {job.step}; start again to resume",
                               f"收到信号，在第 {job.step} 步之后停止；重新启动即可恢复"), flush=True)
            return preemption.PREEMPTED
    return 0

if __name__ == "__main__":
    sys.exit(main())
