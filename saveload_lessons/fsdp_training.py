"""Training the lessons' network on several processes with FSDP2, checkpointed with DCP.

``torchrun`` starts this module once per rank (see ``launching.torchrun``)::

    python -m torch.distributed.run --standalone --nproc-per-node 2 -m saveload_lessons.fsdp_training \\
        train --checkpoint-dir run --epochs 2

Every rank builds the same network (lesson 1's ``fc_model.Network``), then
``fully_shard`` (FSDP2) splits each parameter into one piece per rank: a
``DTensor`` of which each rank keeps only its own rows. During a step the
ranks gather the full weights of a layer just when they need them, and each
rank trains on its own part of the data (``DistributedSampler``).

Commands:

``train``
    Trains for ``--epochs`` epochs and saves a checkpoint every
    ``--save-every`` steps and at the end, into step folders of
    ``--checkpoint-dir`` (see ``distributed_checkpoints``). With ``--resume``
    it continues from the latest checkpoint, exactly where the run stopped.
``gather``
    Loads the latest checkpoint with however many processes it is started
    on (DCP reshards), shows which rows each rank now holds, and writes the
    full model and optimizer state into one ``torch.save`` file.

The backend is ``gloo`` on the CPU and ``nccl`` with ``--device cuda``
(one GPU per process).
"""

import argparse
import math
import os
import shutil
import signal
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn, optim
from torch.distributed.checkpoint import FileSystemWriter
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.checkpoint.stateful import Stateful
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.utils.data import DistributedSampler, TensorDataset

import fc_model
import helper
from saveload_lessons import checkpoint_io, distributed_checkpoints
from saveload_lessons.checkpoint_io import CheckpointError
from saveload_lessons.files import atomic_write
from saveload_lessons.messages import say
from saveload_lessons.values import is_count, is_number, positive_int_argument, quote

ARCHITECTURE = {"input_size": 784, "output_size": 10, "hidden_layers": [512, 256, 128]}
SHOWN_PARAMETER = "hidden_layers.0.weight"  # the parameter whose shards are printed
BACKENDS = {"cpu": "gloo", "cuda": "nccl"}


def distributed_device(device, world_size):
    """The device type the ranks train on: ``"cpu"`` (gloo) or ``"cuda"`` (nccl).

    ``device`` is what ``devices.get_device`` returned. With CUDA, every rank
    needs a GPU of its own: NCCL refuses two ranks on one GPU. Apple's MPS
    has no distributed backend. Both raise ``ValueError`` saying what to do.
    """
    kind = torch.device(device).type
    if kind not in BACKENDS:
        raise ValueError(f"distributed training runs on 'cpu' or 'cuda', not {kind!r}: "
                         "use device='cpu'")
    if kind == "cuda" and world_size > torch.cuda.device_count():
        raise ValueError(
            f"world_size={world_size} processes need {world_size} GPUs with the nccl backend, and "
            f"this machine has {torch.cuda.device_count()}: use world_size="
            f"{torch.cuda.device_count()}, or device='cpu' (gloo) for more processes")
    return kind


def steps_per_epoch(train_size, world_size, batch_size=64):
    """Optimizer steps in one epoch: each rank gets ``ceil(train_size / world_size)`` examples
    (``DistributedSampler`` repeats a few to even them out), in batches of ``batch_size``."""
    return math.ceil(math.ceil(train_size / world_size) / batch_size)


# --------------------------------------------------------------------------- the model

def sharded_model(mesh, seed, hidden_layers=None):
    """Lesson 1's network, identical on every rank, then sharded with FSDP2 over ``mesh``.

    Each linear layer becomes one FSDP unit (its weights are gathered just
    before it runs), and the whole model another. ``hidden_layers`` replaces
    the lesson's sizes (the benchmark uses larger ones).
    """
    torch.manual_seed(seed)  # the same initial weights on every rank
    sizes = hidden_layers or ARCHITECTURE["hidden_layers"]
    model = fc_model.Network(**{**ARCHITECTURE, "hidden_layers": sizes})
    for layer in [*model.hidden_layers, model.output]:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def describe_shards(model):
    """Lines that say which rows of ``SHOWN_PARAMETER`` each rank holds (gathered from all ranks)."""
    parameter = dict(model.named_parameters())[SHOWN_PARAMETER]
    local = tuple(parameter.to_local().shape)
    held = sum(p.to_local().numel() for p in model.parameters())
    total = sum(p.numel() for p in model.parameters())
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, (local, held))
    kind, shape, world = type(parameter).__name__, tuple(parameter.shape), dist.get_world_size()
    lines = [say(f"{SHOWN_PARAMETER} is a {kind} of shape {shape}, placements "
                 f"{parameter.placements}, on {world} process(es):",
                 f"{SHOWN_PARAMETER} 是一个 {kind}，形状为 {shape}，放置方式为 "
                 f"{parameter.placements}，分布在 {world} 个进程上：")]
    start = 0
    for rank, (local, count) in enumerate(everyone):
        end = start + local[0] - 1
        lines.append(say(f"  rank {rank} holds rows {start}-{end}, a local tensor of shape {local}; "
                         f"{count:,} of the model's {total:,} numbers",
                         f"  rank {rank} 持有第 {start}-{end} 行，即形状为 {local} 的本地张量；"
                         f"模型共有 {total:,} 个参数，它持有其中 {count:,} 个"))
        start += local[0]
    return lines


class AppState(Stateful):
    """What a checkpoint of this training holds: DCP calls ``state_dict`` when it saves, and
    ``state_dict`` then ``load_state_dict`` when it loads.

    ``get_state_dict`` gives the model's and the optimizer's state as the
    sharded ``DTensor``s each rank holds, with the same keys whatever the
    wrapping (``hidden_layers.0.weight``). ``progress`` is where training
    stands, the same on every rank. ``own`` is what differs from rank to
    rank: its generator state (each rank draws its own dropout masks) and
    its sum of training losses in the epoch under way; it is saved under the
    rank's own key, ``ranks.rank0``, ``ranks.rank1``, ... ``gather`` needs
    neither.
    """

    def __init__(self, model, optimizer, progress=None, own=None):
        self.model, self.optimizer = model, optimizer
        self.progress, self.own = progress, own

    def state_dict(self):
        model_state, optimizer_state = get_state_dict(self.model, self.optimizer)
        state = {"model": model_state, "optim": optimizer_state}
        if self.progress is not None:
            state["progress"] = dict(self.progress)
            state["ranks"] = {f"rank{dist.get_rank()}": {**self.own, "rng": checkpoint_io.rng_state()}}
        return state

    def load_state_dict(self, state):
        if self.progress is not None:
            own = dict(state["ranks"][f"rank{dist.get_rank()}"])
            _check_training_state(state["progress"], own)
        set_state_dict(self.model, self.optimizer, model_state_dict=state["model"],
                       optim_state_dict=state["optim"])
        if self.progress is not None:
            self.progress.update(state["progress"])
            checkpoint_io.set_rng_state(own.pop("rng"))
            self.own.update(own)


def _check_training_state(progress, own):
    """Raise ``CheckpointError`` unless the loaded progress and this rank's own values are
    what ``train`` saves: counts, a number, and a generator state."""
    counts = [key for key in ("epoch", "batch", "step", "train_size", "batch_size")
              if not is_count(progress.get(key))]
    loss_sum = own.get("loss_sum")
    if counts or not is_number(loss_sum):
        raise CheckpointError(f"the checkpoint's training progress is not one train saves "
                              f"(progress {quote(progress)}, "
                              f"loss_sum {quote(loss_sum)})")
    checkpoint_io.check_rng_state(own.get("rng"), "the checkpoint")


# --------------------------------------------------------------------------- saving

def kill_signal():
    """The signal that ends a process at once, with no handler, ``finally`` or ``atexit`` run.

    ``SIGKILL`` where it exists (Linux, macOS). Windows has no ``SIGKILL``; there
    ``os.kill`` with any signal but the two console events calls
    ``TerminateProcess``, which ends the process just as abruptly (its exit status
    is the signal's number), so ``SIGTERM`` does the same job.
    """
    return getattr(signal, "SIGKILL", signal.SIGTERM)


class _KilledWhileSaving(FileSystemWriter):
    """A writer whose process kills itself (``kill_signal``: SIGKILL, or TerminateProcess on
    Windows) once its shards are written, before the checkpoint is complete: what a crash, the
    out-of-memory killer or a preempted machine does."""

    def write_data(self, plan, planner):
        written = super().write_data(plan, planner)
        written.wait()
        how = kill_signal()
        rank, folder = dist.get_rank(), Path(self.path).name
        print(say(f"rank {rank}: wrote its shards into {folder}, then was killed ({how.name}) "
                  "before the checkpoint was complete",
                  f"rank {rank}：把自己的分片写进 {folder} 之后，在检查点完成之前被杀掉了（{how.name}）"),
              flush=True)
        os.kill(os.getpid(), how)


class Saver:
    """Saves step folders, then points ``latest`` at them and prunes old ones (on rank 0).

    With ``asynchronous=True`` it uses ``dcp.async_save``: the call returns as
    soon as the state is copied, training goes on while a thread writes the
    files, and the folder is marked as the latest when the write is done
    (at the next save, or in ``finish``).
    """

    def __init__(self, root, keep, asynchronous=False, kill_at_step=None):
        self.root, self.keep, self.kill_at_step = Path(root), keep, kill_at_step
        self.asynchronous = asynchronous
        # async_save uses the process group it is given (the default one otherwise).
        # This one is our choice, for two reasons: the background thread's collectives
        # (planning, then the final all-reduce) never interleave with the training's on
        # the default group, and async_save needs a CPU backend, which nccl alone lacks.
        self.group = dist.new_group(backend="gloo") if asynchronous else None
        self.pending = None  # (future, folder) of an asynchronous save under way
        self.last_step = None

    def save(self, app, step):
        self.finish()
        folder = distributed_checkpoints.step_folder(self.root, step)
        if dist.get_rank() == 0 and folder.exists():
            shutil.rmtree(folder)  # left by a save that never finished
        dist.barrier()
        killed = self.kill_at_step == step and dist.get_rank() == dist.get_world_size() - 1
        writer = (_KilledWhileSaving if killed else FileSystemWriter)(folder)
        if self.asynchronous:
            future = dcp.async_save({"app": app}, storage_writer=writer, process_group=self.group)
            self.pending = (future, folder)
        else:
            dcp.save({"app": app}, storage_writer=writer)
            self._completed(folder)
        self.last_step = step

    def finish(self):
        """Wait for an asynchronous save under way, then mark it as the latest."""
        if self.pending is not None:
            future, folder = self.pending
            self.pending = None
            future.result()
            self._completed(folder)

    def _completed(self, folder):
        if dist.get_rank() == 0:
            distributed_checkpoints.mark_latest(self.root, folder)
            distributed_checkpoints.prune(self.root, self.keep)
            print(say(f"saved {folder.name}", f"已保存 {folder.name}"), flush=True)


# --------------------------------------------------------------------------- training

def _rank_batches(sampler, epoch, batch_size, skip):
    """This rank's batches of example indices for ``epoch``, without the first ``skip``."""
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler)).split(batch_size)[skip:]


def _report(model, criterion, test_images, test_labels, device, progress, epochs, loss_sum,
            train_batches):
    """Print the classic progress line of lesson 1 on rank 0, for the epoch just finished.

    The training loss is the mean over every batch of every rank in the
    epoch; the test metrics cover the whole test set, each rank evaluating
    its share, and the sums are added up across ranks.
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    model.eval()
    with torch.no_grad():
        log_ps = model(test_images[rank::world].to(device))
        labels = test_labels[rank::world].to(device)
        test_loss = criterion(log_ps, labels).item() * len(labels)
        correct = (log_ps.argmax(dim=1) == labels).sum().item()
    model.train()
    sums = torch.tensor([loss_sum, test_loss, correct], dtype=torch.float64, device=device)
    dist.all_reduce(sums)
    if rank == 0:
        print(fc_model.progress_line(progress["epoch"], epochs, sums[0].item() / train_batches,
                                     sums[1].item() / len(test_labels),
                                     sums[2].item() / len(test_labels)), flush=True)


def _saved_world_size(folder):
    """How many ranks saved ``folder`` (one generator state each)."""
    metadata = distributed_checkpoints.check_metadata(folder)
    return len({key.split(".")[2] for key in metadata.state_dict_metadata
                if key.startswith("app.ranks.")})


def checkpoint_to_resume(root, resume, world_size):
    """The step folder that training starts from: None to start afresh, or the latest one.

    Raises ``CheckpointError`` rather than lose or mix work: without
    ``resume``, a folder that already holds a run's checkpoints is refused;
    with it, a checkpoint saved by another number of processes is refused,
    because each rank's data and random numbers belong to that rank.
    """
    latest = distributed_checkpoints.latest_checkpoint(root)
    if latest is None:
        return None
    if not resume:
        raise CheckpointError(
            f"{root} already holds the checkpoints of a run (latest: {latest.name}): pass "
            "--resume to continue it, or choose another --checkpoint-dir")
    saved_by = _saved_world_size(latest)
    if saved_by != world_size:
        raise CheckpointError(
            f"{latest} was saved by {saved_by} processes; resuming training exactly needs the "
            f"same number, not {world_size}. Its weights load on any number of processes: "
            "use the gather command")
    return latest


def train(args, mesh, device):
    rank, world = dist.get_rank(), dist.get_world_size()
    images, labels = helper.fashion_mnist_tensors(args.data_dir, train=True)
    images, labels = images[:args.train_size], labels[:args.train_size]
    test_images, test_labels = helper.fashion_mnist_tensors(args.data_dir, train=False)
    sampler = DistributedSampler(TensorDataset(images, labels), num_replicas=world, rank=rank,
                                 shuffle=True, seed=args.seed)
    batches_per_epoch = steps_per_epoch(len(images), world, args.batch_size)

    model = sharded_model(mesh, args.seed)
    optimizer = optim.Adam(model.parameters(), lr=args.lr)
    criterion = nn.NLLLoss()
    torch.manual_seed(args.seed + 1 + rank)  # different dropout masks on every rank
    progress = {"epoch": 0, "batch": 0, "step": 0,
                "train_size": len(images), "batch_size": args.batch_size}
    own = {"loss_sum": 0.0}
    app = AppState(model, optimizer, progress, own)

    if rank == 0:
        backend = dist.get_backend()
        print(say(f"{world} process(es), backend {backend}, {batches_per_epoch} steps per epoch",
                  f"{world} 个进程，后端 {backend}，每轮 {batches_per_epoch} 步"), flush=True)
    for line in describe_shards(model):
        if rank == 0:
            print(line, flush=True)

    latest = checkpoint_to_resume(args.checkpoint_dir, args.resume, world)
    if latest is not None:
        data = {key: progress[key] for key in ("train_size", "batch_size")}
        distributed_checkpoints.load({"app": app}, latest)
        if any(progress[key] != value for key, value in data.items()):
            raise CheckpointError(say(
                f"{latest} was saved by a run on {progress['train_size']} images in batches of "
                f"{progress['batch_size']}; resume it with the same --train-size and --batch-size",
                f"{latest} 是在 {progress['train_size']} 张图像上、以每批 {progress['batch_size']} 张"
                "训练时保存的；恢复训练时请使用相同的 --train-size 和 --batch-size"))
        if rank == 0:
            for folder in distributed_checkpoints.unfinished_folders(args.checkpoint_dir):
                print(say(f"{folder.name} is incomplete, left by a save that never finished; "
                          "it will be replaced",
                          f"{folder.name} 不完整，是一次没有完成的保存留下的；它会被替换"), flush=True)
            epoch, batch, step = progress["epoch"] + 1, progress["batch"], progress["step"]
            print(say(f"resumed from {latest.name}: epoch {epoch}, batch {batch}, step {step}",
                      f"从 {latest.name} 恢复：第 {epoch} 轮，第 {batch} 批，第 {step} 步"), flush=True)

    saver = Saver(args.checkpoint_dir, args.keep, args.async_save, args.kill_while_saving)
    while progress["epoch"] < args.epochs:
        for batch in _rank_batches(sampler, progress["epoch"], args.batch_size, progress["batch"]):
            optimizer.zero_grad()
            loss = criterion(model(images[batch].to(device)), labels[batch].to(device))
            loss.backward()
            optimizer.step()
            own["loss_sum"] += loss.item()
            progress["batch"] += 1
            progress["step"] += 1
            if progress["batch"] == batches_per_epoch:  # the epoch ends with this step
                progress["epoch"], progress["batch"] = progress["epoch"] + 1, 0
                epoch_loss_sum, own["loss_sum"] = own["loss_sum"], 0.0
            if progress["step"] % args.save_every == 0:
                saver.save(app, progress["step"])
        _report(model, criterion, test_images, test_labels, device, progress, args.epochs,
                epoch_loss_sum, world * batches_per_epoch)
    if saver.last_step != progress["step"]:
        saver.save(app, progress["step"])
    saver.finish()


def gather(args, mesh, device):
    folder = distributed_checkpoints.latest_checkpoint(args.checkpoint_dir)
    if folder is None:
        raise CheckpointError(say(
            f"{args.checkpoint_dir} holds no checkpoint yet (no "
            f"'{distributed_checkpoints.LATEST_FILE}' file)",
            f"{args.checkpoint_dir} 中还没有检查点（没有 '{distributed_checkpoints.LATEST_FILE}' 文件）"))
    model = sharded_model(mesh, args.seed)
    optimizer = optim.Adam(model.parameters(), lr=args.lr)
    distributed_checkpoints.load({"app": AppState(model, optimizer)}, folder)
    lines = describe_shards(model)
    full_model, full_optimizer = get_state_dict(
        model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if dist.get_rank() == 0:
        print(say(f"loaded {folder.name}", f"已加载 {folder.name}"), *lines, sep="\n", flush=True)
        with atomic_write(args.output) as file:
            torch.save({"model": full_model, "optim": full_optimizer}, file)
        print(say(f"wrote the full state into {args.output}", f"完整的状态已写入 {args.output}"), flush=True)


# --------------------------------------------------------------------------- command line

def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="fsdp_training", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["train", "gather"])
    parser.add_argument("--checkpoint-dir", required=True, help="the folder of the step folders")
    parser.add_argument("--data-dir", default=helper.DEFAULT_DATA_DIR)
    parser.add_argument("--device", default="cpu", choices=sorted(BACKENDS))
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--epochs", type=positive_int_argument, default=2)
    parser.add_argument("--train-size", type=positive_int_argument, default=60000,
                        help="train on the first N training images")
    parser.add_argument("--batch-size", type=positive_int_argument, default=64, help="per rank")
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--save-every", type=positive_int_argument, default=100, help="steps between saves")
    parser.add_argument("--keep", type=positive_int_argument, default=2, help="step folders to keep")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    parser.add_argument("--async-save", action="store_true", help="save with dcp.async_save")
    parser.add_argument("--kill-while-saving", type=positive_int_argument, metavar="STEP",
                        help="kill the last rank while it saves the checkpoint of STEP (to show and "
                        "test that the previous checkpoint survives)")
    parser.add_argument("--output", help="gather: the torch.save file to write")
    args = parser.parse_args(argv)
    if args.command == "gather" and not args.output:
        parser.error("gather needs --output")
    return args


def main(argv=None):
    args = parse_args(argv)
    if "RANK" not in os.environ:
        sys.exit("fsdp_training runs under torchrun, one process per rank: "
                 "python -m torch.distributed.run --nproc-per-node 2 -m saveload_lessons.fsdp_training ...")
    device = torch.device(args.device)
    if args.device == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist.init_process_group(BACKENDS[args.device])
    try:
        mesh = init_device_mesh(args.device, (dist.get_world_size(),))
        (train if args.command == "train" else gather)(args, mesh, device)
    except CheckpointError as err:
        print(say(f"rank {dist.get_rank()}: {err}", f"rank {dist.get_rank()}：{err}"), file=sys.stderr, flush=True)
        dist.destroy_process_group()
        return 1
    dist.barrier()  # every rank is done, every file written
    return 0


def leave(code):
    """End this rank's process at once, with exit status ``code``.

    Once every rank has passed the last barrier, nothing is left to do. But
    tearing gloo down (``destroy_process_group``, or the destructors at
    interpreter exit) now and then aborts one rank ("terminate called without
    an active exception": seen with 3 ranks on a busy 2-core machine), and
    ``torchrun`` would report a run whose work is complete as failed. So the
    process ends here, after flushing its output, without running destructors.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    leave(main())
