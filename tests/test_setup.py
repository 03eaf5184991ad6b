"""The set-up and the commands around it: which build of torch ``make`` installs and the line
that says why (``tools/install_torch.py``), ``make lab``, ``make check``, ``make`` from another
folder, and what ``make clean`` removes.

No torch is downloaded: the installs here are of a tiny package from an index made in a
temporary folder, with pip's own configuration switched off, and an index that cannot be
reached is a local port that refuses connections. The Makefile runs with a stand-in Python
that only writes down how it was called.
"""

import base64
import hashlib
import os
import re
import shutil
import subprocess
import zipfile

import pytest

from conftest import REPO
from tools import install_torch

UNREACHABLE = "http://127.0.0.1:9/simple"  # the discard port: nothing listens there
REFUSED = "[Errno 111] Connection refused"


# --------------------------------------------------------------------------- which build, and why

@pytest.mark.parametrize("system, gpu, given, expected", [
    ("Linux", False, "", [install_torch.CPU_INDEX, None]),
    ("Linux", True, "", [None]),
    ("Darwin", False, "", [None]),
    ("Windows", False, "", [None]),
    ("Linux", False, "https://example.org/simple", ["https://example.org/simple"]),
    ("Linux", True, "https://download.pytorch.org/whl/cu130", ["https://download.pytorch.org/whl/cu130"]),
])
def test_the_index_is_chosen_for_the_machine(system, gpu, given, expected):
    """Only Linux without an NVIDIA GPU gets the CPU-only index, with the default after it;
    an index given in TORCH_INDEX_URL is the only one tried."""
    assert [url for url, _ in install_torch.choose(system, gpu, given)] == expected


@pytest.mark.parametrize("listed, smi, expected", [([], None, False), (["0000:3b:00.0"], None, True),
                                                   ([], "/usr/bin/nvidia-smi", True)])
def test_an_nvidia_gpu_is_found_by_its_driver(listed, smi, expected, tmp_path, monkeypatch):
    gpus = tmp_path / "gpus"
    gpus.mkdir()
    for name in listed:
        (gpus / name).mkdir()
    monkeypatch.setattr(install_torch, "NVIDIA_GPUS", gpus)
    monkeypatch.setattr(install_torch.shutil, "which", lambda name: smi)
    assert install_torch.has_nvidia_gpu() is expected


def test_an_index_that_refuses_connections_is_unreachable():
    assert install_torch.unreachable(UNREACHABLE) == REFUSED


# --------------------------------------------------------------------------- real installs of a tiny package

def wheel(folder, name, version):
    """Write a minimal wheel of an empty package ``name`` into ``folder``; return its path."""
    files = {f"{name}/__init__.py": b"",
             f"{name}-{version}.dist-info/METADATA":
                 f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
             f"{name}-{version}.dist-info/WHEEL":
                 b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = [f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
              f"{len(data)}" for path, data in files.items()]
    files[f"{name}-{version}.dist-info/RECORD"] = "\n".join(
        [*record, f"{name}-{version}.dist-info/RECORD,,"]).encode() + b"\n"
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in files.items():
            archive.writestr(member, data)
    return path


@pytest.fixture
def local_index(tmp_path, monkeypatch):
    """pip with its configuration and PIP_* variables switched off, whose default index is a
    folder here that holds tinypkg 1.0 and 2.0; returns the folder packages are installed into.

    Installing puts the package on sys.path, as installing into .venv does for torch."""
    for name in list(os.environ):
        if name.startswith("PIP_"):
            monkeypatch.delenv(name)
    simple = tmp_path / "simple" / "tinypkg"
    simple.mkdir(parents=True)
    links = [wheel(simple, "tinypkg", version).name for version in ("1.0", "2.0")]
    (simple / "index.html").write_text("".join(f'<a href="{name}">{name}</a>\n' for name in links))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", (tmp_path / "simple").as_uri())
    target = tmp_path / "target"
    monkeypatch.syspath_prepend(str(target))
    return target


def install_tiny(target, choices, constraint=None):
    return install_torch.install(choices, constraint, packages=("tinypkg",),
                                 options=("--target", str(target), "--retries", "0", "--timeout", "5"))


def test_without_the_cpu_index_the_default_index_is_used_and_said_so(local_index, monkeypatch):
    monkeypatch.setattr(install_torch, "CPU_INDEX", UNREACHABLE)
    status, line = install_tiny(local_index, install_torch.choose("Linux", False))
    assert status == 0
    assert line == ("installed tinypkg 2.0 from pip's default index, a CPU-only build: this machine "
                    f"has no NVIDIA GPU, but PyTorch's CPU-only index {UNREACHABLE} could not be "
                    f"reached ({REFUSED}); for the smaller CPU-only build later, rm -rf .venv and "
                    "run make again.")
    assert (local_index / "tinypkg" / "__init__.py").is_file()


def test_the_constraints_are_honoured(local_index, tmp_path):
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("tinypkg==1.0\n")
    status, line = install_tiny(local_index, install_torch.choose("Darwin", False), constraints)
    assert status == 0
    assert line == ("installed tinypkg 1.0 from pip's default index, a CPU-only build: on Darwin, "
                    "pip's default index has the build for this machine.")


def test_a_given_index_that_cannot_be_reached_is_named(local_index):
    """Not pip's "conflicting dependencies": one line that says what is wrong."""
    status, line = install_tiny(local_index, install_torch.choose("Linux", False, UNREACHABLE))
    assert status == 1
    assert line == (f"error: {UNREACHABLE} could not be reached ({REFUSED}), so tinypkg could not "
                    "be installed. Check the address and the network, or leave TORCH_INDEX_URL empty.")


def test_a_given_index_without_the_package_shows_pips_messages(local_index, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    status, line = install_tiny(local_index, install_torch.choose("Linux", False, empty.as_uri()))
    assert status == 1
    assert "No matching distribution found for tinypkg" in line
    assert line.endswith(f"error: pip could not install tinypkg from {empty.as_uri()} (its messages "
                         "are above).")


def test_the_line_names_the_build_of_torch(monkeypatch, capsys):
    """The torch of this environment, as if pip had just installed it from the default index."""
    import importlib.metadata

    cuda = any(r.startswith("nvidia-") for r in importlib.metadata.requires("torch") or [])
    monkeypatch.setattr(install_torch.platform, "system", lambda: "Linux")
    monkeypatch.setattr(install_torch, "has_nvidia_gpu", lambda: True)
    monkeypatch.setattr(install_torch, "pip_install",
                        lambda *args: subprocess.CompletedProcess(args, 0, "", ""))
    assert install_torch.main(["--constraint", str(REPO / "constraints.txt")]) == 0
    build = "the CUDA build" if cuda else "a CPU-only build"
    assert capsys.readouterr().out == (f"installed torch {importlib.metadata.version('torch')} from "
                                       f"pip's default index, {build}: this machine has an NVIDIA GPU.\n")


# --------------------------------------------------------------------------- the Makefile

@pytest.fixture
def fake_venv(tmp_path):
    """A .venv whose python writes its arguments to calls.txt, set up already."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "calls.txt"}\n')
    python.chmod(0o755)
    return venv


def make(*arguments, cwd):
    # Without the variables of a make that runs these tests (make test ARGS=...), which a sub-make inherits
    environment = {name: value for name, value in os.environ.items()
                   if name not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    result = subprocess.run(["make", "--no-print-directory", *arguments], cwd=cwd, env=environment,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def calls(venv):
    return (venv.parent / "calls.txt").read_text().splitlines()


needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


@needs_make
@pytest.mark.parametrize("given, expected", [
    ("", "-m tools.install_torch --constraint constraints.txt"),
    ("TORCH_INDEX_URL=https://example.org/simple",
     "-m tools.install_torch --constraint constraints.txt --index-url https://example.org/simple"),
])
def test_make_setup_installs_torch_with_the_script(given, expected, fake_venv, tmp_path):
    make("-C", str(REPO), "setup", f"VENV={fake_venv}", f"PYTHON={fake_venv}/bin/python",
         *filter(None, [given]), cwd=tmp_path)
    assert calls(fake_venv) == [f"-m venv {fake_venv}", expected,
                                "-m pip install --quiet --constraint constraints.txt "
                                "--requirement requirements.txt"]


@needs_make
@pytest.mark.parametrize("command, expected", [
    (["lab"], "-m jupyter lab notebooks"),
    (["lab", "LAB=student", "ARGS=--no-browser"], "-m jupyter lab student --no-browser"),
    (["check"], "-m saveload_lessons"),
    (["check", "ARGS=--language zh-CN"], "-m saveload_lessons --language zh-CN"),
])
def test_make_lab_and_make_check_use_the_python_of_the_environment(command, expected, fake_venv,
                                                                   tmp_path):
    """Run from another folder with make -C, as the README says for a subfolder."""
    (fake_venv / ".installed").touch()
    make("-C", str(REPO), *command, f"VENV={fake_venv}", cwd=tmp_path)
    assert calls(fake_venv) == [expected]


@needs_make
def test_the_readmes_make_commands_are_the_makefiles(tmp_path):
    """Every `make TARGET` the READMEs and guides show is a target of the Makefile, and the
    READMEs show the commands for what comes after the two commands, and how to activate
    .venv by hand everywhere."""
    phony = next(line for line in (REPO / "Makefile").read_text().splitlines()
                 if line.startswith(".PHONY:")).split()[1:]
    for name in ("README.md", "README.zh-CN.md", "INSTRUCTORS.md", "INSTRUCTORS.zh-CN.md"):
        text = (REPO / name).read_text(encoding="utf-8")
        shown = set(re.findall(r"(?:^|`)make (?:-C \S+ )?([a-z]+)\b", text, re.M))
        assert shown <= set(phony), f"{name}: {sorted(shown - set(phony))}"
        if name.startswith("README"):
            assert {"lab", "check"} <= shown, name
            for activate in (". .venv/bin/activate", ".venv\\Scripts\\Activate.ps1",
                             ".venv\\Scripts\\activate.bat"):  # Linux and macOS, PowerShell, cmd
                assert f"`{activate}`" in text, (name, activate)


@needs_make
def test_make_clean_removes_what_the_tools_write_and_leaves_the_rest(tmp_path):
    shutil.copy(REPO / "Makefile", tmp_path)
    written = ["build/notebooks/en/01.ipynb", ".pytest_cache/v/x", ".hypothesis/examples/x",
               ".ruff_cache/0/x", "saving_loading_pytorch_lessons.egg-info/PKG-INFO",
               "__pycache__/helper.pyc", "saveload_lessons/__pycache__/files.pyc",
               "tests/__pycache__/conftest.pyc"]
    kept = ["helper.py", "saveload_lessons/files.py", "notebooks/en/01.ipynb",
            ".venv/lib/python3/site-packages/__pycache__/x.pyc", ".git/HEAD"]
    for name in written + kept:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    make("clean", cwd=tmp_path)
    left = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*") if path.is_file())
    assert left == sorted(["Makefile", *kept])


# --------------------------------------------------------------------------- the offline room

def offline_blocks(guide):
    """The command blocks of a guide's section on the classroom without Wi-Fi: the wheelhouse,
    then the room."""
    text = (REPO / guide).read_text(encoding="utf-8")
    start = text.index("## Classroom without Wi-Fi" if guide == "INSTRUCTORS.md" else "## 没有 Wi-Fi 的教室")
    section = text[start:text.index("\n## ", start + 1)]
    return [[line.split("#")[0].strip() for line in block.replace("\\\n", " ").splitlines()
             if line.split("#")[0].strip()] for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_the_offline_recipe_uses_nothing_but_what_it_names():
    """python3 (a fresh Ubuntu has no python), no pip settings of the machine in either block,
    and the wheelhouse beside the clone, not inside it; both guides give the same commands."""
    english = offline_blocks("INSTRUCTORS.md")
    assert offline_blocks("INSTRUCTORS.zh-CN.md") == english
    isolation = ["unset $(env | grep -o '^PIP_[A-Z_]*')", "export PIP_CONFIG_FILE=/dev/null"]
    wheelhouse, room = english[0], english[1]
    assert wheelhouse[:2] == isolation and room[:2] == isolation
    for command in wheelhouse[2:] + room[2:]:
        assert command.startswith(("python3 -m ", ".venv/bin/python -m ", ". .venv/bin/activate")), command
    assert all("../wheelhouse" in command for command in wheelhouse[2:])
    assert "wheelhouse/" in (REPO / ".gitignore").read_text().splitlines()
    for guide in ("INSTRUCTORS.md", "INSTRUCTORS.zh-CN.md"):
        assert "python3-venv" in (REPO / guide).read_text(encoding="utf-8")
