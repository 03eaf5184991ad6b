"""Project files that must agree with each other."""

import re
import subprocess
import sys

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from conftest import REPO
from tools.project import read_pyproject


def readme_commands(name):
    text = (REPO / name).read_text(encoding="utf-8")
    return re.findall(r"```bash\n(.*?)```", text, re.S)


def commands(block):
    """The commands of a bash block, without their comments."""
    return [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]


def test_the_readmes_start_with_the_two_commands_and_ci_runs_the_test_one():
    for readme in ("README.md", "README.zh-CN.md"):
        assert commands(readme_commands(readme)[0]) == ["make run", "make test"], readme
    ci_lines = (REPO / ".ci" / "run").read_text().strip().splitlines()
    assert ci_lines[-1] == "make test"


def test_both_readmes_give_the_same_commands():
    """Comments may be translated, and a command may open the reader's own language's notebook."""
    english, chinese = (list(map(commands, readme_commands(name)))
                        for name in ("README.md", "README.zh-CN.md"))
    assert english == [[command.replace("notebooks/zh-CN/", "notebooks/en/") for command in block]
                       for block in chinese]


def test_constraints_pin_versions_the_package_accepts():
    dependencies = {Requirement(d).name: Requirement(d)
                    for d in read_pyproject()["project"]["dependencies"]}
    pins = [Requirement(line) for line in (REPO / "constraints.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert {pin.name for pin in pins} == {"torch", "torchvision"}
    for pin in pins:
        version = str(pin.specifier).removeprefix("==")
        assert dependencies[pin.name].specifier.contains(version), pin


def test_requirements_come_from_pyproject_only():
    lines = [line for line in (REPO / "requirements.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    groups = read_pyproject()["project"]["optional-dependencies"]
    assert lines == [f"-e .[{','.join(groups)}]"]
    names = {Requirement(d).name for group in groups.values() for d in group}
    names |= {Requirement(d).name for d in read_pyproject()["project"]["dependencies"]}
    assert "helper" not in names  # PyPI's unrelated 'helper' package must never come in


def test_environment_yml_installs_requirements_txt():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip_section == ["-r requirements.txt"]
    assert set(conda) == {"pip", next(d for d in conda if d.startswith("python="))}
    python = next(d for d in conda if d.startswith("python="))
    assert SpecifierSet(read_pyproject()["project"]["requires-python"]).contains(
        python.split("=")[1] + ".0")


def test_installed_torch_is_allowed_by_the_package():
    import torch
    import torchvision
    dependencies = {Requirement(d).name: Requirement(d)
                    for d in read_pyproject()["project"]["dependencies"]}
    for module in (torch, torchvision):
        version = module.__version__.split("+")[0]
        assert dependencies[module.__name__].specifier.contains(version), module.__name__


def test_the_pre_commit_hooks_are_valid_and_pass_on_this_tree():
    """The hooks CONTRIBUTING.md asks contributors to install: a valid configuration whose
    commands run and pass here (what a commit of this tree would see)."""
    config = REPO / ".pre-commit-config.yaml"
    validated = subprocess.run([sys.executable, "-m", "pre_commit", "validate-config", str(config)],
                               capture_output=True, text=True)
    assert validated.returncode == 0, validated.stdout + validated.stderr
    hooks = [hook for repo in yaml.safe_load(config.read_text())["repos"] for hook in repo["hooks"]]
    assert {hook["id"] for hook in hooks} == {"ruff", "lessons-in-sync"}
    for hook in hooks:
        command = hook["entry"].split()
        command[0] = sys.executable if command[0].endswith("python") else command[0]
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        assert result.returncode == 0, f"{hook['id']}: {result.stdout}{result.stderr}"
