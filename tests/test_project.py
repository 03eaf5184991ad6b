"""Project files that must agree with each other."""

import re
import sys

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
from build_notebooks import read_pyproject  # noqa: E402


def readme_commands(name):
    text = (REPO / name).read_text(encoding="utf-8")
    return re.findall(r"```bash\n(.*?)```", text, re.S)


def test_ci_runs_the_readme_test_command():
    ci_lines = (REPO / ".ci" / "run").read_text().strip().splitlines()
    test_command = ci_lines[-1]
    assert test_command.startswith("python -m pytest")
    for readme in ("README.md", "README.zh-CN.md"):
        assert f"{test_command}\n" in readme_commands(readme), readme


def test_both_readmes_give_the_same_commands():
    assert readme_commands("README.md")[:3] == readme_commands("README.zh-CN.md")[:3]


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
