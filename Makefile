# The two commands of the README, each of which sets up what it needs first:
#
#   make run     the main job: execute every notebook (tools/run_notebooks.py)
#   make test    the tests: unit tests, and nbval re-running every notebook
#
# and what a learner or a contributor runs next, with the Python of .venv:
#
#   make lab     JupyterLab on the notebooks (LAB=student for the student edition)
#   make check   the environment check, python -m saveload_lessons
#   make student the student edition (student/): the notebooks without solutions
#   make site    the website of the lessons, both languages, into build/site/ (tools/build_site.py)
#   make clean   remove build/ and the caches the tools write in the repository
#
# Run make in the repository's root; from a subfolder, make -C .. run (or the root's path).
# Set-up happens once and is skipped afterwards: a virtual environment in .venv
# with torch (tools/install_torch.py: on Linux without an NVIDIA GPU, the CPU-only
# build), the requirements and the companion modules (editable), then Fashion-MNIST
# from a local copy when there is one (helper.prepare_fashion_mnist).
# Variables (make run ARGS="01 -p epochs 1"):
#   PYTHON          the interpreter that creates .venv (default python3; 3.10 or newer)
#   TORCH_INDEX_URL where torch comes from, instead of the index chosen for this
#                   machine, e.g. https://pypi.org/simple for the CUDA build (see the README)
#   LAB             the folder make lab opens (default notebooks)
#   ARGS            arguments for tools/run_notebooks.py (make run), pytest (make test),
#                   jupyter lab (make lab) or the environment check (make check)

PYTHON ?= python3
VENV ?= .venv
TORCH_INDEX_URL ?=
LAB ?= notebooks
ARGS ?=

BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PIP := $(BIN)/python -m pip install --quiet --constraint constraints.txt
# nbval runs a notebook in the notebook's own folder, so the tests run copies in build/:
# the files the lessons write stay out of notebooks/.
TEST_NOTEBOOKS := build/test-notebooks

.PHONY: run test lab check student site setup data clean

run: setup
	$(BIN)/python -m tools.run_notebooks $(ARGS)

test: data
	rm -rf $(TEST_NOTEBOOKS) && mkdir -p build && cp -R notebooks $(TEST_NOTEBOOKS)
	$(BIN)/python -m pytest -n 2 --dist loadfile --nbval $(TEST_NOTEBOOKS) tests $(ARGS)

lab: setup
	$(BIN)/python -m jupyter lab $(LAB) $(ARGS)

check: setup
	$(BIN)/python -m saveload_lessons $(ARGS)

student: setup
	$(BIN)/python -m tools.build_notebooks --student

site: setup
	$(BIN)/python -m tools.build_site

setup: $(INSTALLED)

$(INSTALLED): pyproject.toml requirements.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m tools.install_torch --constraint constraints.txt $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(PIP) --requirement requirements.txt
	touch $@

data: setup
	$(BIN)/python -m helper

# What the tools write in the repository: build/, and the caches of pytest, hypothesis, ruff,
# setuptools (the editable install's egg-info) and Python. It leaves .venv and the data.
clean:
	rm -rf build .pytest_cache .hypothesis .ruff_cache *.egg-info
	find . \( -path ./.git -o -path ./$(VENV) \) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
