# The two commands of the README, each of which sets up what it needs first:
#
#   make run     the main job: execute every notebook (tools/run_notebooks.py)
#   make test    the tests: unit tests, and nbval re-running every notebook
#   make student the student edition (student/): the notebooks without solutions
#
# Set-up happens once and is skipped afterwards: a virtual environment in .venv
# with torch, the requirements and the companion modules (editable), then
# Fashion-MNIST from a local copy when there is one (helper.prepare_fashion_mnist).
# Variables (make run ARGS="01 -p epochs 1"):
#   PYTHON          the interpreter that creates .venv (default python3; 3.10 or newer)
#   TORCH_INDEX_URL where torch comes from, e.g. https://download.pytorch.org/whl/cpu
#                   for the CPU-only build (see the README)
#   ARGS            arguments for tools/run_notebooks.py (make run) or pytest (make test)

PYTHON ?= python3
VENV ?= .venv
TORCH_INDEX_URL ?=
ARGS ?=

BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PIP := $(BIN)/python -m pip install --quiet --constraint constraints.txt
# nbval runs a notebook in the notebook's own folder, so the tests run copies in build/:
# the files the lessons write stay out of notebooks/.
TEST_NOTEBOOKS := build/test-notebooks

.PHONY: run test student setup data clean

run: setup
	$(BIN)/python -m tools.run_notebooks $(ARGS)

test: data
	rm -rf $(TEST_NOTEBOOKS) && mkdir -p build && cp -R notebooks $(TEST_NOTEBOOKS)
	$(BIN)/python -m pytest -n 2 --dist loadfile --nbval $(TEST_NOTEBOOKS) tests $(ARGS)

student: setup
	$(BIN)/python -m tools.build_notebooks --student

setup: $(INSTALLED)

$(INSTALLED): pyproject.toml requirements.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL)) torch torchvision
	$(PIP) --requirement requirements.txt
	touch $@

data: setup
	$(BIN)/python -m helper

clean:
	rm -rf build
