"""Execute every lesson notebook with papermill: the collection's main job.

Each notebook runs from its own output folder (``--cwd``), so the files it
writes (checkpoints) land beside its executed copy in ``build/notebooks/``.
One line per notebook is printed: name, language, seconds and the last test
accuracy the notebook printed.

    python tools/run_notebooks.py                       # all notebooks, both languages
    python tools/run_notebooks.py -p epochs 1 -p device cpu
    python tools/run_notebooks.py --language en 01-saving-and-loading-models
"""

import argparse
import re
import sys
import time
from pathlib import Path

import nbformat
import papermill
import yaml

from build_notebooks import KERNEL_ARGUMENTS, LANGUAGES, NOTEBOOKS, REPO

ACCURACY = re.compile(r"test accuracy[^:\n]*:\s*([01]\.\d+)", re.IGNORECASE)


def notebook_paths(languages=LANGUAGES, names=()):
    """The lesson notebooks, in lesson order, for the given languages and names."""
    paths = []
    for language in languages:
        for path in sorted((NOTEBOOKS / language).glob("*.ipynb")):
            if not names or path.stem in names:
                paths.append(path)
    return paths


def last_test_accuracy(nb):
    """The last 'test accuracy: x' the notebook printed, or None."""
    found = None
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                for match in ACCURACY.finditer(output.get("text", "")):
                    found = float(match.group(1))
    return found


def run_notebook(path, output_dir, parameters=None):
    """Execute ``path`` with papermill in ``output_dir``; return (seconds, accuracy, output path).

    Raises papermill's ``PapermillExecutionError`` when a cell fails; the
    executed copy, error included, is still written to ``output_dir``.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    output_path = output_dir / path.name
    start = time.perf_counter()
    papermill.execute_notebook(str(path), str(output_path), parameters=parameters or {},
                               cwd=str(output_dir), kernel_name="python3",
                               progress_bar=False, extra_arguments=KERNEL_ARGUMENTS)
    seconds = time.perf_counter() - start
    return seconds, last_test_accuracy(nbformat.read(output_path, as_version=4)), output_path


def parse_parameters(pairs):
    """``[["epochs", "1"]]`` to ``{"epochs": 1}``: values are read as YAML, like papermill's -p."""
    return {name: yaml.safe_load(value) for name, value in pairs or []}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook names without .ipynb (default: all)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                        help="a parameter for every notebook, e.g. -p epochs 1")
    parser.add_argument("--language", choices=LANGUAGES, action="append",
                        help="only this language (repeatable; default: both)")
    parser.add_argument("--output", default=REPO / "build" / "notebooks", type=Path,
                        help="where executed notebooks go (default: build/notebooks)")
    args = parser.parse_args()

    parameters = parse_parameters(args.parameter)
    paths = notebook_paths(args.language or LANGUAGES, args.names)
    if not paths:
        parser.error(f"no notebook matches {args.names}")
    failures = 0
    width = max(len(path.stem) for path in paths) + 2
    print(f"{'notebook':<{width}}{'language':<10}{'seconds':>8}  test accuracy", flush=True)
    for path in paths:
        language = path.parent.name
        try:
            seconds, accuracy, _ = run_notebook(path, args.output / language, parameters)
        except papermill.PapermillExecutionError as error:
            failures += 1
            print(f"{path.stem:<{width}}{language:<10}  FAILED in cell {error.exec_count}: "
                  f"{error.ename}: {error.evalue}", flush=True)
            continue
        shown = "-" if accuracy is None else f"{accuracy:.4f}"
        print(f"{path.stem:<{width}}{language:<10}{seconds:>8.1f}  {shown}", flush=True)
    print(f"{len(paths) - failures} notebooks ran, {failures} failed; outputs in {args.output}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
