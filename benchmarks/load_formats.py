"""Compare file formats for a Network's weights: file size, load time and memory, side by side.

For the same weights it writes a ``torch.save`` state_dict and a safetensors
file (``checkpoint_io.save_safetensors``), then measures three ways of loading:
``torch.load`` (weights_only=True), ``torch.load(..., mmap=True)`` and
safetensors' ``load_file``. Each is measured in a fresh process: how much
its resident memory grows when the file is loaded, and again once every
tensor has been read, and the best load time over several further loads.

    python benchmarks/load_formats.py                    # the lessons' network
    python benchmarks/load_formats.py --hidden 4096 4096 4096 4096 4096 4096
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import fc_model  # noqa: E402
from saveload_lessons import checkpoint_io  # noqa: E402

LOADERS = {
    "torch.load": "torch.load(path, weights_only=True)",
    "torch.load(mmap=True)": "torch.load(path, weights_only=True, mmap=True)",
    "safetensors load_file": "load_file(path)",
}

# Runs in a fresh process; prints the best load time (ms) and the growth of resident
# memory (MB) after loading the file and after reading every tensor once.
PROBE = """
import os, sys, time, torch
from safetensors.torch import load_file
def resident_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
path, repeats = sys.argv[1], int(sys.argv[2])
before = resident_mb()
state = {loader}
loaded = resident_mb() - before
total = sum(float(t.float().sum()) for t in state.values())
read = resident_mb() - before
times = []
for _ in range(repeats):
    start = time.perf_counter()
    {loader}
    times.append(time.perf_counter() - start)
print(1000 * min(times), loaded, read)
"""


def measure(loader, path, repeats):
    """Best load time (ms), and memory growth (MB) after loading and after reading."""
    result = subprocess.run([sys.executable, "-c", PROBE.format(loader=loader), str(path),
                             str(repeats)], capture_output=True, text=True, check=True)
    return tuple(map(float, result.stdout.split()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[512, 256, 128],
                        help="hidden layer sizes (default: the lessons' 512 256 128)")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    model = fc_model.Network(784, 10, args.hidden)
    parameters = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory() as folder:
        files = {"torch": Path(folder) / "state_dict.pth",
                 "safetensors": Path(folder) / "model.safetensors"}
        torch.save(model.state_dict(), files["torch"])
        checkpoint_io.save_safetensors(files["safetensors"], model)

        print(f"Network(784, 10, {args.hidden}): {parameters:,} parameters, "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        print(f"{'how':24}{'file MB':>9}{'load ms':>10}{'MB after load':>15}{'MB after read':>15}")
        for name, loader in LOADERS.items():
            path = files["safetensors" if name.startswith("safetensors") else "torch"]
            milliseconds, loaded, read = measure(loader, path, args.repeats)
            print(f"{name:24}{path.stat().st_size / 1e6:>9.2f}{milliseconds:>10.2f}"
                  f"{loaded:>15.1f}{read:>15.1f}")


if __name__ == "__main__":
    main()
