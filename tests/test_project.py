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


def requirements():
    lines = (REPO / "requirements.txt").read_text().splitlines()
    return {Requirement(line).name: Requirement(line)
            for line in lines if line.strip() and not line.startswith("#")}


def test_environment_yml_agrees_with_requirements_and_pyproject():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-r requirements.txt" in pip_section
    python = next(d for d in conda if d.startswith("python="))
    project = read_pyproject()["project"]
    assert SpecifierSet(project["requires-python"]).contains(python.split("=")[1] + ".0")
    # any package conda installs itself must be one requirements.txt also names
    names = {re.split(r"[=<>!\s]", d)[0] for d in conda} - {"python", "pip"}
    assert names <= set(requirements())


def test_package_dependencies_are_in_requirements():
    dependencies = [Requirement(d) for d in read_pyproject()["project"]["dependencies"]]
    reqs = requirements()
    for dependency in dependencies:
        assert dependency.name in reqs
        assert str(dependency.specifier) == str(reqs[dependency.name].specifier), dependency.name
    assert "helper" not in reqs  # PyPI's unrelated 'helper' package must never come in


def test_installed_torch_is_allowed_by_requirements():
    import torch
    import torchvision
    reqs = requirements()
    for module in (torch, torchvision):
        version = module.__version__.split("+")[0]
        assert reqs[module.__name__].specifier.contains(version), module.__name__
