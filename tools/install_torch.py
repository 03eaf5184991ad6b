"""Install torch and torchvision, choosing the build for this machine: ``make setup`` runs
``python -m tools.install_torch --constraint constraints.txt`` with the Python of ``.venv``.

Which index pip takes them from (``choose``):

- ``--index-url URL`` (the Makefile's ``TORCH_INDEX_URL``): that index, and
  only that one. When it cannot be reached, the one line printed says so
  (pip itself would retry, then report only conflicting dependencies, or take
  torch from an extra index of its configuration);
- on Linux without an NVIDIA GPU: PyTorch's CPU-only index (``CPU_INDEX``),
  whose torch is a 190 MB download instead of the default build's 4 GB of
  CUDA libraries, which are useless there. When that index cannot be reached,
  pip's default index;
- everywhere else, pip's default index: on Linux with an NVIDIA GPU, the CUDA
  build; on macOS and Windows PyPI's torch, which is CPU-only already (with
  Apple's MPS on macOS).

Whether a web index can be reached is asked before pip starts (``unreachable``:
one request, ``PROBE_TIMEOUT`` seconds at most). The versions are always those
of the constraints file (``constraints.txt``: the releases that produced the
committed outputs). One line says which build was installed and why: torch
whose requirements name NVIDIA's libraries is the CUDA build.
"""

import argparse
import importlib.metadata
import platform
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# Where NVIDIA's Linux driver lists the GPUs it drives
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")
PACKAGES = ("torch", "torchvision")
# Seconds to wait for an index to answer before pip starts
PROBE_TIMEOUT = 10


def has_nvidia_gpu():
    """Whether this machine has an NVIDIA GPU with its driver: the driver lists its GPUs in
    ``NVIDIA_GPUS`` (Linux) and installs ``nvidia-smi`` (WSL too)."""
    return (NVIDIA_GPUS.is_dir() and any(NVIDIA_GPUS.iterdir())) or shutil.which("nvidia-smi") is not None


def choose(system, nvidia_gpu, index_url=None):
    """The indexes to install from, in order, each with the reason: ``[(url, why), ...]``,
    where the url None means pip's default index. A second one is for when the first cannot
    be reached, and its reason says why (``{problem}``)."""
    if index_url:
        return [(index_url, "it is the index given in TORCH_INDEX_URL")]
    if system == "Linux" and not nvidia_gpu:
        return [(CPU_INDEX, "this machine has no NVIDIA GPU"),
                (None, f"this machine has no NVIDIA GPU, but PyTorch's CPU-only index {CPU_INDEX} "
                       "could not be reached ({problem}); for the smaller CPU-only build later, "
                       "rm -rf .venv and run make again")]
    if system == "Linux":
        return [(None, "this machine has an NVIDIA GPU")]
    return [(None, f"on {system}, pip's default index has the build for this machine")]


def unreachable(url, timeout=PROBE_TIMEOUT):
    """Why pip would not reach the index ``url`` (the page of torch on it), or None when it
    answers. Only web addresses are tried; pip itself reads a local folder."""
    if not url.startswith(("http://", "https://")):
        return None
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/{PACKAGES[0]}/", timeout=timeout):
            return None
    except OSError as err:  # URLError, HTTPError, timeouts and refused connections
        return str(getattr(err, "reason", None) or err)


def pip_install(index_url, constraint, packages=PACKAGES, options=()):
    """Run ``pip install`` for ``packages`` with this Python, from ``index_url`` (None: pip's
    default index); return the finished process, its output captured."""
    command = [sys.executable, "-m", "pip", "install", "--quiet", *options]
    if constraint:
        command += ["--constraint", str(constraint)]
    if index_url:
        command += ["--index-url", index_url]
    return subprocess.run([*command, *packages], capture_output=True, text=True)


def build(package):
    """'the CUDA build' or 'a CPU-only build' of the installed ``package``: a build of torch
    with CUDA requires NVIDIA's libraries."""
    requirements = importlib.metadata.requires(package) or []
    with_cuda = any(requirement.startswith("nvidia-") for requirement in requirements)
    return "the CUDA build" if with_cuda else "a CPU-only build"


def install(choices, constraint, packages=PACKAGES, options=()):
    """Install ``packages`` from the first of ``choices`` (see ``choose``) that can be reached;
    return the exit status and the one line to print (after pip's messages, when it failed)."""
    problem = None
    for index_url, why in choices:
        if index_url and (problem := unreachable(index_url)):
            continue
        where = index_url or "pip's default index"
        done = pip_install(index_url, constraint, packages, options)
        if done.returncode:
            return 1, (f"{done.stdout}{done.stderr}error: pip could not install "
                       f"{', '.join(packages)} from {where} (its messages are above).")
        name = packages[0]
        return 0, (f"installed {name} {importlib.metadata.version(name)} from {where}, "
                   f"{build(name)}: {why.format(problem=problem)}.")
    return 1, (f"error: {index_url} could not be reached ({problem}), so {', '.join(packages)} "
               "could not be installed. Check the address and the network, or leave "
               "TORCH_INDEX_URL empty.")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tools.install_torch",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--constraint", type=Path, help="the versions to install (constraints.txt)")
    parser.add_argument("--index-url", default="",
                        help="the index to install from (default: chosen for this machine)")
    args = parser.parse_args(argv)
    choices = choose(platform.system(), has_nvidia_gpu(), args.index_url)
    status, line = install(choices, args.constraint)
    print(line, file=sys.stderr if status else sys.stdout)
    return status


if __name__ == "__main__":
    sys.exit(main())
