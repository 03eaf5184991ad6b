"""The environment check learners run first: every check passes here, and each problem
gets its own message with what to do."""

import gzip
import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import helper
from saveload_lessons import environment_check
from tools.project import read_pyproject


def run(capsys, *argv):
    status = environment_check.main(list(argv))
    return status, capsys.readouterr().out


def test_the_command_passes_on_a_ready_machine(data_dir):
    result = subprocess.run([sys.executable, "-m", "saveload_lessons", "--data-dir", data_dir,
                             "--language", "en"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len([line for line in lines if line.startswith("✓ ")]) == 8, result.stdout
    assert not [line for line in lines if line.startswith("✗ ")]
    assert lines[-1] == "Everything is ready for the lessons."
    assert 'device="auto" picks cpu' in result.stdout or 'device="auto" picks cuda' in result.stdout


def check_in_subprocess(data_dir, language, **environment):
    """``python -m saveload_lessons`` with these environment variables; the finished process."""
    return subprocess.run([sys.executable, "-m", "saveload_lessons", "--language", language,
                           "--data-dir", os.path.expanduser(data_dir)],
                          capture_output=True, env={**os.environ, **environment}, timeout=120)


def test_the_check_writes_nothing_in_the_home_folder(tmp_path, data_dir, monkeypatch):
    """An empty home folder, as on a fresh machine, where Jupyter, IPython and the caches
    have their default folders: the check leaves it empty."""
    for name in list(os.environ):
        if name.startswith(("XDG_", "JUPYTER_", "IPYTHON", "MPLCONFIGDIR")):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    result = check_in_subprocess(data_dir, "en", HOME=str(home))
    assert "✓ Jupyter kernel python3" in result.stdout.decode(), result.stdout.decode()
    assert list(home.rglob("*")) == []


@pytest.mark.parametrize("encoding, language, first, last", [
    ("cp1252", "en", "OK saving-loading-pytorch-lessons", "Everything is ready for the lessons."),
    ("cp1252", "zh-CN", "Note: this output (encoding cp1252) cannot show Chinese, so the lines it "
                        "cannot show are in English. For the whole report in Chinese, run "
                        "`python -X utf8 -m saveload_lessons --language zh-CN`.",
     "Everything is ready for the lessons."),
    ("gbk", "zh-CN", "OK 已安装 saving-loading-pytorch-lessons", "一切就绪，可以开始上课了。"),
], ids=["cp1252-en", "cp1252-zh-CN", "gbk-zh-CN"])
def test_the_report_prints_on_any_output(encoding, language, first, last, data_dir):
    """Windows writes redirected output in its code page: cp1252 has neither ✓ nor Chinese,
    cp936 (gbk) has Chinese but not ✓."""
    result = check_in_subprocess(data_dir, language, PYTHONIOENCODING=encoding)
    assert result.stderr == b"", result.stderr.decode(errors="replace")
    lines = result.stdout.decode(encoding).splitlines()
    assert lines[0].startswith(first), lines
    marked = [line for line in lines if line.startswith(("OK ", "X "))]
    assert len(marked) == 8 and lines[-1] == last, lines


def test_the_kernels_are_looked_for_where_jupyter_looks(tmp_path, monkeypatch):
    """The same folders as jupyter_client's own default, which creates IPython's folder."""
    from jupyter_client.kernelspec import KernelSpecManager

    monkeypatch.setenv("IPYTHONDIR", str(tmp_path))  # exists: jupyter_client creates nothing
    assert environment_check.kernel_folders() == KernelSpecManager().kernel_dirs


def test_missing_data_names_the_files_and_the_command(tmp_path, capsys):
    status, out = run(capsys, "--data-dir", str(tmp_path), "--language", "en")
    assert status == 1
    problem = next(line for line in out.splitlines() if line.startswith("✗ "))
    for name in helper.IDX_FILES:
        assert f"{name} is missing" in problem
    assert f"python -m helper --source FOLDER --root {tmp_path}" in problem
    assert out.splitlines()[-1] == "1 problem(s): fix them, then run this check again."


def test_a_truncated_file_is_reported_as_damaged(tmp_path, data_dir, capsys):
    raw = helper.fashion_mnist_raw_dir(tmp_path)
    raw.mkdir(parents=True)
    for name in helper.IDX_FILES:
        shutil.copy(helper.fashion_mnist_raw_dir(data_dir) / name, raw / name)
    with open(raw / "t10k-labels-idx1-ubyte", "r+b") as f:
        f.truncate(5000)
    status, out = run(capsys, "--data-dir", str(tmp_path), "--language", "en")
    assert status == 1
    assert "t10k-labels-idx1-ubyte has 5000 bytes, expected 10008: the file is truncated" in out


def test_compressed_files_in_the_raw_folder_are_not_enough(tmp_path, capsys):
    raw = helper.fashion_mnist_raw_dir(tmp_path)
    raw.mkdir(parents=True)
    for name in helper.IDX_FILES:
        with gzip.open(raw / f"{name}.gz", "wb") as f:
            f.write(b"")
    status, out = run(capsys, "--data-dir", str(tmp_path), "--language", "en")
    assert status == 1 and "train-images-idx3-ubyte is missing" in out


def test_the_report_speaks_chinese(tmp_path, capsys):
    status, out = run(capsys, "--data-dir", str(tmp_path), "--language", "zh-CN")
    assert status == 1
    assert "缺少 train-images-idx3-ubyte" in out
    assert out.splitlines()[-1] == "发现 1 个问题：请逐一解决后再运行一次检查。"


def test_the_language_follows_lang(monkeypatch):
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    assert environment_check.default_language() == "zh-CN"
    monkeypatch.setenv("LANG", "C.UTF-8")
    assert environment_check.default_language() == "en"


def test_a_torchvision_that_does_not_import_is_reported(monkeypatch, data_dir, capsys):
    real_import = importlib.import_module

    def import_module(name, *args):
        if name == "torchvision":
            raise RuntimeError("operator torchvision::nms does not exist")
        return real_import(name, *args)

    monkeypatch.setattr(environment_check.importlib, "import_module", import_module)
    status, out = run(capsys, "--data-dir", data_dir, "--language", "en")
    assert status == 1
    assert ("✗ `import torchvision` fails (RuntimeError: operator torchvision::nms does not exist). "
            "Install torch and torchvision together") in out


def test_a_torch_the_package_does_not_accept_is_reported(monkeypatch, data_dir, capsys):
    import torch

    monkeypatch.setattr(torch, "__version__", "2.9.1")
    status, out = run(capsys, "--data-dir", data_dir, "--language", "en")
    assert status == 1
    assert ("✗ torch 2.9.1 is not a version the lessons accept (>=2.10): on older versions "
            "torch.load(..., weights_only=True) is not safe for files from others") in out
    assert "CVE-2025-32434" in out and "CVE-2026-24747" in out
    status, out = run(capsys, "--data-dir", data_dir, "--language", "zh-CN")
    assert "torch 2.9.1 不是课程接受的版本（>=2.10）：在更早的版本中" in out and "CVE-2026-24747" in out


def test_a_missing_kernel_is_reported(monkeypatch, data_dir, capsys):
    from jupyter_client import kernelspec

    monkeypatch.setattr(kernelspec.KernelSpecManager, "find_kernel_specs", lambda self: {})
    status, out = run(capsys, "--data-dir", data_dir, "--language", "en")
    assert status == 1
    assert "✗ Jupyter has no python3 kernel: `python -m ipykernel install --user`." in out


def test_a_missing_package_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setattr(environment_check, "installed_distribution", lambda: None)
    report = environment_check.Report("en")
    assert environment_check.check_package(report) is None
    assert report.problems == 1
    assert "is not installed: in the lessons' folder run `python -m pip install .`" in capsys.readouterr().out


def test_the_modules_checked_are_the_ones_pyproject_installs():
    setuptools = read_pyproject()["tool"]["setuptools"]
    top_level = {*setuptools["py-modules"], *(name for name in setuptools["packages"] if "." not in name)}
    assert environment_check.companion_modules() == sorted(top_level)


# --------------------------------------------------------------------------- another Python

def test_the_clones_egg_info_is_not_taken_for_an_installation():
    """Started in the clone's folder, Python finds the egg-info the editable install left there."""
    installed = environment_check.installed_distribution()
    assert installed is not None
    assert Path(installed.locate_file("")).resolve() != environment_check.CHECKOUT


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory):
    """Another Python, without torch or the package: a virtual environment without pip."""
    folder = tmp_path_factory.mktemp("bare")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    return folder / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


@pytest.fixture
def clone(tmp_path):
    """A clone of the repository after `make`: the package, pyproject.toml, the egg-info of
    the editable install and a .venv (empty: only its folder counts)."""
    shutil.copytree(environment_check.CHECKOUT / "saveload_lessons", tmp_path / "saveload_lessons",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(environment_check.CHECKOUT / "pyproject.toml", tmp_path)
    egg_info = tmp_path / "saving_loading_pytorch_lessons.egg-info"
    egg_info.mkdir()
    (egg_info / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: saving-loading-pytorch-lessons\n"
                                       "Version: 1.1.0\n")
    (tmp_path / ".venv").mkdir()
    return tmp_path


def check_with(python, folder, language="en"):
    result = subprocess.run([str(python), "-m", "saveload_lessons", "--language", language],
                            cwd=folder, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stdout.splitlines()


def test_another_python_in_the_clone_is_sent_to_the_lessons_environment(bare_python, clone):
    """Not "is installed" and "pip install .": the one thing to do is to use the environment."""
    status, lines = check_with(bare_python, clone)
    assert status == 1
    assert lines == [
        f"✗ this Python ({bare_python}) is not the lessons' environment {clone / '.venv'}: it only "
        "finds the lessons' modules because it runs in their folder. Run `make check`, or activate "
        "the environment (Linux and macOS: `. .venv/bin/activate`; Windows: "
        "`.venv\\Scripts\\activate`) and run this check again.",
        "1 problem(s): fix them, then run this check again."]
    status, lines = check_with(bare_python, clone, "zh-CN")
    assert lines[0].startswith(f"✗ 这个 Python（{bare_python}）不是课程的环境 {clone / '.venv'}：")
    assert "请运行 `make check`，或者先激活这个环境" in lines[0]


def test_another_python_in_a_clone_without_environment_is_sent_to_make_check(bare_python, clone):
    (clone / ".venv").rmdir()
    status, lines = check_with(bare_python, clone)
    assert status == 1
    assert lines[0] == (f"✗ this Python ({bare_python}) does not have the lessons installed, and "
                        f"{clone} has no .venv yet: run `make check`, which sets it up and runs "
                        "this check in it (see the README).")


def test_an_installation_outside_a_clone_is_found(bare_python, tmp_path):
    """The package installed from a wheel, as in the offline room: the folder that holds it is
    site-packages, which is searched like any other."""
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
                    "--no-build-isolation", "--target", str(site), str(environment_check.CHECKOUT)],
                   check=True)
    result = subprocess.run([str(bare_python), "-m", "saveload_lessons", "--language", "en"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(site), "PYTHONIOENCODING": "utf-8"})
    version = read_pyproject()["project"]["version"]
    assert result.stdout.splitlines()[0] == f"✓ saving-loading-pytorch-lessons {version} is installed"
