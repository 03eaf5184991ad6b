"""Check a machine before a workshop: ``python -m saveload_lessons``.

Learners run it first, in the environment they will use for the lessons. It
prints one line per check, ✓ or ✗, and for each problem what to do:

- that this Python is the lessons' environment: started in a clone of the
  repository, another Python (the system's, say) imports the clone's modules
  from the current folder and finds the metadata its editable install left
  there, without having the package or its requirements; the check says so,
  and to activate the clone's ``.venv`` or run ``make check``, and stops;
- the companion package installed;
- the Python version the companion package requires;
- torch and torchvision: importable, versions the package accepts, and a
  torchvision that works with this torch (a mismatched pair fails at import);
- the companion modules importable;
- the four Fashion-MNIST files present and valid (sizes and IDX headers);
- a Jupyter kernel for Python;
- the device that ``device="auto"`` picks.

The exit status is 0 when every check passes, 1 otherwise. Nothing is
downloaded or written: not even ``~/.ipython``, which Jupyter's own search for
kernels creates (see ``kernel_folders``). ``--language zh-CN`` prints in
Chinese (the default follows the ``LANG`` environment variable).

The report prints on any output, Windows' included: there, output redirected
to a file or a pipe is written in the system's code page (cp1252 in Western
Europe and America, cp936 in mainland China), which lacks ✓ and ✗ and, for
cp1252, Chinese. ``Report`` explains what it prints instead.
"""

import argparse
import importlib
import importlib.metadata
import importlib.util
import os
import platform
import sys
from pathlib import Path

from saveload_lessons import LANGUAGES

DISTRIBUTION = "saving-loading-pytorch-lessons"
# The folder that holds the package: a clone of the repository (with its pyproject.toml and,
# once `make` has run, its .venv), or an installation's site-packages.
CHECKOUT = Path(__file__).resolve().parent.parent
# Why the package's floor for torch (pyproject.toml) is where it is.
UNSAFE_LOADING = (": on older versions torch.load(..., weights_only=True) is not safe for files from "
                  "others (CVE-2025-32434: code execution up to 2.5.1; CVE-2026-24747: memory "
                  "corruption before 2.10.0)")
UNSAFE_LOADING_ZH = ("：在更早的版本中，用 torch.load(..., weights_only=True) 加载别人的文件并不安全"
                     "（CVE-2025-32434：2.5.1 及以前的版本存在任意代码执行漏洞；CVE-2026-24747："
                     "2.10.0 之前的版本存在内存破坏漏洞）")


class Report:
    """Collects the results of the checks and prints each as it comes.

    A learner must be able to read the report wherever it is printed, so what
    the output's encoding cannot show is replaced (see the module's docstring):
    ✓ and ✗ by ``OK`` and ``X``; a Chinese message by its English version,
    after a one-line note that says how to get the Chinese report (the learner
    can still read every line, and knows why it is in English); and any other
    character, such as one in a folder's name, by an escape such as ``\\u4e2d``.
    """

    def __init__(self, language="en"):
        self.language = language
        self.problems = 0
        self.marks = ("✓ ", "✗ ") if can_print("✓✗") else ("OK ", "X ")
        self.noted = False

    def say(self, english, chinese):
        """The message in the report's language, in English where the output cannot show Chinese."""
        if self.language != "zh-CN":
            return english
        if can_print(chinese):
            return chinese
        if not self.noted:
            self.noted = True
            self.print(f"Note: this output (encoding {sys.stdout.encoding}) cannot show Chinese, so "
                       "the lines it cannot show are in English. For the whole report in Chinese, run "
                       "`python -X utf8 -m saveload_lessons --language zh-CN`.")
        return english

    def ok(self, english, chinese):
        self.print(self.marks[0] + self.say(english, chinese))

    def problem(self, english, chinese):
        self.problems += 1
        self.print(self.marks[1] + self.say(english, chinese))

    def print(self, line):
        """Print ``line``, with what the output cannot show written as escapes (``\\u4e2d``)."""
        encoding = sys.stdout.encoding or "utf-8"
        print(line.encode(encoding, "backslashreplace").decode(encoding))


def can_print(text):
    """Whether the output's encoding can show ``text`` (cp1252 cannot show ✓ or Chinese)."""
    try:
        text.encode(sys.stdout.encoding or "utf-8")
    except UnicodeEncodeError:
        return False
    return True


def installed_distribution():
    """The package as this Python has it installed, or None.

    A clone's own folder is left out of the search: the ``egg-info`` folder
    that an editable install writes there is no installation, although Python
    finds it when it is started in that folder.
    """
    places = [entry for entry in sys.path
              if not (is_clone() and Path(entry or ".").resolve() == CHECKOUT)]
    return next(iter(importlib.metadata.distributions(name=DISTRIBUTION, path=places)), None)


def is_clone():
    """Whether the package runs from a clone of the repository, not from an installation."""
    return (CHECKOUT / "pyproject.toml").is_file()


def check_environment(report):
    """Whether this Python is one to check: not another Python than the clone's environment
    that only runs the clone's modules because it was started in the clone's folder."""
    if installed_distribution() is not None or not is_clone():
        return True
    venv = CHECKOUT / ".venv"
    if Path(sys.prefix).resolve() == venv.resolve():
        return True  # the clone's environment itself, without the package: check_package says so
    if venv.is_dir():
        report.problem(
            f"this Python ({sys.executable}) is not the lessons' environment {venv}: it only finds "
            "the lessons' modules because it runs in their folder. Run `make check`, or activate "
            "the environment (Linux and macOS: `. .venv/bin/activate`; Windows: "
            "`.venv\\Scripts\\activate`) and run this check again.",
            f"这个 Python（{sys.executable}）不是课程的环境 {venv}：它只是因为在课程目录中运行，"
            "才找到了课程的模块。请运行 `make check`，或者先激活这个环境（Linux 和 macOS："
            "`. .venv/bin/activate`；Windows：`.venv\\Scripts\\activate`），再运行一次检查。")
    else:
        report.problem(
            f"this Python ({sys.executable}) does not have the lessons installed, and {CHECKOUT} "
            "has no .venv yet: run `make check`, which sets it up and runs this check in it "
            "(see the README).",
            f"这个 Python（{sys.executable}）中没有安装课程，{CHECKOUT} 中也还没有 .venv："
            "请运行 `make check`，它会创建这个环境，并在其中运行这项检查（见 README）。")
    return False


def _requirements():
    """``{name: specifier}`` of the installed package's requirements (torch, torchvision, ...)."""
    from packaging.requirements import Requirement

    found = {}
    for line in installed_distribution().requires or []:
        requirement = Requirement(line)
        if requirement.marker is None:
            found[requirement.name] = requirement.specifier
    return found


def check_package(report):
    """The companion package is installed; returns its metadata or None."""
    distribution = installed_distribution()
    if distribution is None:
        report.problem(
            f"the companion package {DISTRIBUTION} is not installed: in the lessons' folder run "
            "`python -m pip install .` (or the README's `make run`, which installs it in .venv).",
            f"配套软件包 {DISTRIBUTION} 尚未安装：请在课程所在的目录中运行 `python -m pip install .`"
            "（或者运行 README 中的 `make run`，它会把软件包安装到 .venv 中）。")
        return None
    metadata = distribution.metadata
    report.ok(f"{DISTRIBUTION} {metadata['Version']} is installed",
              f"已安装 {DISTRIBUTION} {metadata['Version']}")
    return metadata


def check_python(report, metadata):
    version = platform.python_version()
    if metadata:
        from packaging.specifiers import SpecifierSet

        wanted = SpecifierSet(metadata["Requires-Python"] or "")
        fits = version in wanted
    else:  # without the package, packaging may be missing too: pyproject.toml's floor
        wanted, fits = ">=3.10", sys.version_info >= (3, 10)
    if fits:
        report.ok(f"Python {version} ({sys.executable})", f"Python {version}（{sys.executable}）")
    else:
        report.problem(f"Python {version} is too old or too new: the lessons need Python {wanted}. "
                       "Create the environment with another Python.",
                       f"Python {version} 太旧或太新：课程需要 Python {wanted}。请换一个 Python 来创建环境。")


def check_torch(report, metadata):
    """torch and torchvision import, and their versions are ones the package accepts."""
    wanted = _requirements() if metadata else {}
    for name in ("torch", "torchvision"):
        try:
            module = importlib.import_module(name)
        except Exception as err:  # a broken pairing fails here, e.g. "operator torchvision::nms does not exist"
            report.problem(
                f"`import {name}` fails ({type(err).__name__}: {err}). Install torch and torchvision "
                "together, as a matching pair (see the README).",
                f"`import {name}` 失败（{type(err).__name__}: {err}）。请把 torch 和 torchvision "
                "作为相互匹配的一对一起安装（见 README）。")
            continue
        version = module.__version__.split("+")[0]
        if name in wanted and version not in wanted[name]:
            why, why_zh = (UNSAFE_LOADING, UNSAFE_LOADING_ZH) if name == "torch" else ("", "")
            report.problem(f"{name} {module.__version__} is not a version the lessons accept "
                           f"({wanted[name]}){why}. Upgrade: `python -m pip install --upgrade torch "
                           "torchvision`.",
                           f"{name} {module.__version__} 不是课程接受的版本（{wanted[name]}）{why_zh}。"
                           "请升级：`python -m pip install --upgrade torch torchvision`。")
        else:
            report.ok(f"{name} {module.__version__}", f"{name} {module.__version__}")


def companion_modules():
    """The modules the package installs, from its ``top_level.txt``."""
    distribution = installed_distribution()
    if distribution is None:
        return []
    listed = distribution.read_text("top_level.txt") or ""
    return sorted(line.strip() for line in listed.splitlines() if line.strip())


def check_modules(report):
    modules, broken = companion_modules(), []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as err:
            broken.append(f"{name} ({type(err).__name__}: {err})")
    if broken:
        report.problem(f"companion modules that do not import: {'; '.join(broken)}. "
                       "Reinstall with `python -m pip install .`.",
                       f"无法导入的配套模块：{'；'.join(broken)}。请用 `python -m pip install .` 重新安装。")
    elif modules:
        report.ok(f"companion modules import: {', '.join(modules)}",
                  f"配套模块均可导入：{', '.join(modules)}")


def check_data(report, data_dir):
    try:
        import helper
    except Exception:
        return  # reported by check_modules
    data_dir = data_dir or helper.DEFAULT_DATA_DIR
    raw = helper.fashion_mnist_raw_dir(data_dir)
    problems = []
    for name, expected in helper.IDX_FILES.items():
        if not (raw / name).exists():
            problems.append(report.say(f"{name} is missing", f"缺少 {name}"))
            continue
        try:
            helper.check_idx_file(raw / name, expected, name=name)
        except (OSError, helper.FashionMNISTError) as err:
            problems.append(str(err))
    if problems:
        report.problem(
            f"Fashion-MNIST in {raw}: {'; '.join(problems)}. Install it from the four .gz files "
            f"(a USB stick, for example): `python -m helper --source FOLDER --root {data_dir}`, "
            f"or online: `python -m helper --root {data_dir}`.",
            f"{raw} 中的 Fashion-MNIST：{'；'.join(problems)}。请从那四个 .gz 文件（例如 U 盘上的）安装："
            f"`python -m helper --source FOLDER --root {data_dir}`；联网时也可以运行 `python -m helper --root {data_dir}`。")
    else:
        report.ok(f"Fashion-MNIST is complete in {raw}", f"Fashion-MNIST 完整，位于 {raw}")


def kernel_folders():
    """The folders where Jupyter looks for kernels, without creating any.

    They are jupyter_client's own: Jupyter's data folders and IPython's
    ``kernels`` folder. jupyter_client finds the latter with IPython's
    ``get_ipython_dir()``, which creates ``~/.ipython`` when it does not exist;
    this check writes nothing, so it names that folder itself (``$IPYTHONDIR``
    or ``~/.ipython``).
    """
    from jupyter_core.paths import jupyter_path

    ipython = os.environ.get("IPYTHONDIR") or os.path.join("~", ".ipython")
    return [*jupyter_path("kernels"), os.path.join(os.path.expanduser(ipython), "kernels")]


def jupyter_kernels():
    """``{name: folder}`` of the kernels Jupyter offers, as ``jupyter lab`` finds them.

    Raises ``ModuleNotFoundError`` without jupyter_client or ipykernel, which is
    looked for rather than imported: the check runs no more of Jupyter than it
    needs. (Where no folder holds a python3 kernel, jupyter_client offers
    ipykernel's own, as Jupyter does, by importing ``ipykernel.kernelspec``,
    which writes nothing.)
    """
    from jupyter_client.kernelspec import KernelSpecManager

    if importlib.util.find_spec("ipykernel") is None:
        raise ModuleNotFoundError("No module named 'ipykernel'", name="ipykernel")
    return KernelSpecManager(kernel_dirs=kernel_folders()).find_kernel_specs()


def check_kernel(report):
    try:
        kernels = jupyter_kernels()
    except Exception as err:
        report.problem(f"no Jupyter here ({type(err).__name__}: {err}): "
                       "`python -m pip install jupyterlab ipykernel`.",
                       f"当前环境中没有 Jupyter（{type(err).__name__}: {err}）：请运行 "
                       "`python -m pip install jupyterlab ipykernel`。")
        return
    if "python3" in kernels:
        report.ok(f"Jupyter kernel python3 ({kernels['python3']})",
                  f"Jupyter 内核 python3（{kernels['python3']}）")
    else:
        report.problem("Jupyter has no python3 kernel: `python -m ipykernel install --user`.",
                       "Jupyter 中没有 python3 内核：请运行 `python -m ipykernel install --user`。")


def check_device(report):
    try:
        from saveload_lessons import devices
    except Exception:
        return  # reported by check_modules
    device = devices.get_device("auto")
    if device.type == "cpu":
        report.ok('device="auto" picks cpu (no GPU found; the lessons run on a CPU, only slower)',
                  'device="auto" 选择了 cpu（没有找到 GPU；课程在 CPU 上也能运行，只是慢一些）')
    else:
        report.ok(f'device="auto" picks {device}', f'device="auto" 选择了 {device}')


def run_checks(data_dir, language="en"):
    """Run every check, printing one line each; return the number of problems."""
    report = Report(language)
    if check_environment(report):
        metadata = check_package(report)
        check_python(report, metadata)
        check_torch(report, metadata)
        check_modules(report)
        check_data(report, data_dir)
        check_kernel(report)
        check_device(report)
    if report.problems:
        report.print(report.say(f"{report.problems} problem(s): fix them, then run this check again.",
                                f"发现 {report.problems} 个问题：请逐一解决后再运行一次检查。"))
    else:
        report.print(report.say("Everything is ready for the lessons.", "一切就绪，可以开始上课了。"))
    return report.problems


def default_language():
    return "zh-CN" if os.environ.get("LANG", "").lower().startswith("zh") else "en"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m saveload_lessons",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None,
                        help="the lessons' data_dir (default: theirs, ~/.pytorch/F_MNIST_data/)")
    parser.add_argument("--language", choices=LANGUAGES, default=default_language(),
                        help="the language of the report (default: from $LANG)")
    args = parser.parse_args(argv)
    return 1 if run_checks(args.data_dir, args.language) else 0


if __name__ == "__main__":
    sys.exit(main())
