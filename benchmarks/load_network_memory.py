"""How much memory and time loading a Network costs: three ways side by side.

For one checkpoint (``checkpoint_io.save_checkpoint`` of a Network) it runs,
each in a fresh process (the models then make one forward pass, which is not
timed but counts for the memory):

- ``torch.load``: ``torch.load(path, weights_only=True)`` of the file, and nothing else
  (the floor: the weights read into memory once);
- ``build, then copy``: what ``fc_model.load_network`` did before: build the
  Network (random initial weights), load the file, copy the weights in;
- ``load_network``: ``fc_model.load_network`` now: the model built on the meta
  device, the file's tensors assigned as its parameters, every check kept.

It prints, for each, the growth of the process's peak resident memory (as a
multiple of the weights' size) and the median time of several fresh runs.
Linux only: the peak is Linux's ``VmHWM``, reset after the imports (``ru_maxrss``
cannot be reset, and importing torch alone can peak above a small model's load).

    python benchmarks/load_network_memory.py                       # 349 MB of weights
    python benchmarks/load_network_memory.py --hidden 1024 1024    # a quick run
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

# Runs in a fresh process: prints seconds and the peak resident memory's growth in bytes
PROBE = """
import sys, time
import torch
import fc_model
from saveload_lessons import checkpoint_io

def peak():
    # the peak resident memory since the last reset (Linux: VmHWM), in bytes
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))

way, path = sys.argv[1], sys.argv[2]
inputs = torch.zeros(1, 784)
with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")  # the peak so far (importing torch is one) no longer counts
before = peak()
start = time.perf_counter()
if way == "torch.load":
    weights = torch.load(path, weights_only=True)
elif way == "build, then copy":
    checkpoint = checkpoint_io.load_checkpoint(path, fc_model.NETWORK)
    model = fc_model.Network(**checkpoint["architecture"])
    model.load_state_dict(checkpoint["model_state_dict"])
else:
    model = fc_model.load_network(path)
seconds = time.perf_counter() - start
if way != "torch.load":
    model.eval()(inputs)  # every weight used once (not timed)
print(seconds, peak() - before)
"""
WAYS = ("torch.load", "build, then copy", "load_network")


def measure(way, path, repeats):
    """Median seconds and largest peak growth (bytes) of ``way`` over ``repeats`` fresh processes."""
    runs = []
    for _ in range(repeats):
        done = subprocess.run([sys.executable, "-c", PROBE, way, str(path)], capture_output=True,
                              text=True, check=True, cwd=Path(__file__).resolve().parent.parent)
        seconds, growth = done.stdout.split()
        runs.append((float(seconds), int(growth)))
    return statistics.median(s for s, _ in runs), max(g for _, g in runs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[4096] * 6,
                        help="hidden layer sizes (default: six of 4096, 349 MB of weights)")
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per way")
    args = parser.parse_args(argv)

    import fc_model
    from saveload_lessons import checkpoint_io

    model = fc_model.Network(784, 10, args.hidden)
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "network.pt"
        checkpoint_io.save_checkpoint(path, model)
        del model
        print(f"Network(784, 10, {args.hidden}): {weights / 1e6:.0f} MB of weights; "
              f"median of {args.repeats} fresh processes each")
        print(f"{'way':<18}{'seconds':>9}{'x torch.load':>14}{'peak growth MB':>16}{'x weights':>11}")
        results = {way: measure(way, path, args.repeats) for way in WAYS}
    floor = results["torch.load"][0]
    for way, (seconds, growth) in results.items():
        print(f"{way:<18}{seconds:>9.3f}{seconds / floor:>14.2f}{growth / 1e6:>16.0f}{growth / weights:>11.2f}")


if __name__ == "__main__":
    main()
