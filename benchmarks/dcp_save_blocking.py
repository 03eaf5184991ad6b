"""How long a distributed checkpoint blocks training: ``dcp.save`` against ``dcp.async_save``.

Two processes (``torchrun``, gloo, CPU) train lesson 1's network with larger
hidden layers, sharded with FSDP2, and save model and Adam state several
times each way. For each save it measures:

- **blocked**: from the call until training can go on. ``dcp.save`` returns
  when every file is written; ``dcp.async_save`` returns once the state is
  copied into memory, and a thread writes the files.
- **complete**: from the call until the checkpoint is on disk (for
  ``async_save``, until its future is done), while training goes on.
- **steps meanwhile**: training steps started before the checkpoint was complete.

    python benchmarks/dcp_save_blocking.py                      # hidden 4096 4096 4096
    python benchmarks/dcp_save_blocking.py --hidden 1024 --repeats 5

The script starts ``torchrun`` itself; the checkpoints go into a temporary
folder and are deleted.
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn, optim
from torch.distributed.device_mesh import init_device_mesh

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from saveload_lessons import fsdp_training, launching  # noqa: E402
from saveload_lessons.fsdp_training import AppState  # noqa: E402
from saveload_lessons.values import positive_int_argument  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[4096, 4096, 4096],
                        help="sizes of the hidden layers")
    parser.add_argument("--repeats", type=positive_int_argument, default=3,
                        help="saves of each kind")
    parser.add_argument("--nproc", type=positive_int_argument, default=2)
    parser.add_argument("--dir", help="where to write the checkpoints (default: a temporary folder)")
    return parser.parse_args(argv)


def train_step(model, optimizer, images, labels):
    optimizer.zero_grad()
    nn.NLLLoss()(model(images), labels).backward()
    optimizer.step()


def measure(args, folder):
    """On every rank: time ``repeats`` saves of each kind; rank 0 prints the table."""
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    model = fsdp_training.sharded_model(mesh, seed=0, hidden_layers=args.hidden)
    optimizer = optim.Adam(model.parameters(), lr=1e-4)
    images, labels = torch.randn(64, 784), torch.randint(0, 10, (64,))
    train_step(model, optimizer, images, labels)  # Adam's state exists from the first step
    app = AppState(model, optimizer)
    background = dist.new_group(backend="gloo")
    numbers = sum(p.numel() for p in model.parameters())
    results = {"dcp.save": [], "dcp.async_save": []}
    for repeat in range(args.repeats):
        for kind in results:
            target = folder / f"{kind}-{repeat}"
            dist.barrier()
            start = time.perf_counter()
            if kind == "dcp.save":
                dcp.save({"app": app}, checkpoint_id=target)
                blocked = complete = time.perf_counter() - start
                steps = 0
            else:
                future = dcp.async_save({"app": app}, checkpoint_id=target, process_group=background)
                blocked = time.perf_counter() - start
                finished = []
                future.add_done_callback(lambda _, finished=finished: finished.append(time.perf_counter()))
                steps = 0
                while not future.done():
                    train_step(model, optimizer, images, labels)
                    steps += 1
                future.result()
                complete = finished[0] - start
            dist.barrier()
            size = sum(f.stat().st_size for f in target.iterdir())
            if dist.get_rank() == 0:
                shutil.rmtree(target)
            results[kind].append((blocked, complete, steps, size))
    if dist.get_rank() == 0:
        print(f"{dist.get_world_size()} processes, hidden layers {args.hidden}: {numbers:,} parameters, "
              f"checkpoint {results['dcp.save'][0][3] / 1e6:.0f} MB (weights and Adam's state); "
              f"median of {args.repeats} saves")
        print(f"{'':16}{'blocked (s)':>13}{'complete (s)':>14}{'steps meanwhile':>17}")
        for kind, rows in results.items():
            blocked, complete, steps = (statistics.median(row[i] for row in rows) for i in range(3))
            print(f"{kind:16}{blocked:13.2f}{complete:14.2f}{steps:17.0f}")
        ratio = (statistics.median(r[0] for r in results["dcp.save"])
                 / statistics.median(r[0] for r in results["dcp.async_save"]))
        print(f"async_save blocks training {ratio:.1f}x less")


def main(argv=None):
    args = parse_args(argv)
    if "RANK" not in os.environ:  # started by hand: start the ranks with torchrun
        result = launching.torchrun("benchmarks.dcp_save_blocking", sys.argv[1:] if argv is None else argv,
                                    nproc=args.nproc, env={"PYTHONPATH": str(REPO)})
        print(result.stdout, end="")
        return 0
    dist.init_process_group("gloo")
    folder = Path(args.dir or tempfile.gettempdir()) / f"dcp-benchmark-{os.environ['TORCHELASTIC_RUN_ID']}"
    try:
        measure(args, folder)
    finally:
        dist.barrier()
        if dist.get_rank() == 0:
            shutil.rmtree(folder, ignore_errors=True)
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
