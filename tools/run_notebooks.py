"""Execute every lesson notebook with papermill: the collection's main job.

Each notebook runs from its own output folder (``--cwd``), so the files it
writes (checkpoints) land beside its executed copy in ``build/notebooks/``.
One line per notebook is printed: name, language, seconds and the last test
accuracy the notebook printed.

    python tools/run_notebooks.py                       # all notebooks, both languages
    python tools/run_notebooks.py --quick               # each lesson's quick run (a few minutes)
    python tools/run_notebooks.py 1 3 -p device cpu     # lessons 1 and 3, on the CPU
    python tools/run_notebooks.py notebooks/zh-CN/02-checkpoints-and-resuming-training.ipynb

Before anything runs, the names, the parameters (against each notebook's
``parameters`` cell) and the data set are checked, each with one message.
"""

import argparse
import ast
import difflib
import re
import sys
import time
from pathlib import Path

import nbformat
import papermill
import yaml

import helper
from build_notebooks import KERNEL_ARGUMENTS, LANGUAGES, NOTEBOOKS, REPO, all_lessons

# "Test accuracy ...: 0.84" in English, "...测试准确率...：0.84" in Chinese.
ACCURACY = re.compile(r"(?:test accuracy|测试准确率)[^:：\n]*[:：]\s*([01]\.\d+)", re.IGNORECASE)


class UsageError(ValueError):
    """A notebook name or a parameter that does not exist; the message lists the valid ones."""


def notebook_paths(languages=LANGUAGES, names=()):
    """The lesson notebooks, in lesson order, for the given languages and names.

    A name may be a lesson number (``1`` or ``01``), a file name with or
    without ``.ipynb``, or the path of a notebook file (which selects that
    language only). Raises ``UsageError``, listing the valid names, for a
    name that matches nothing.
    """
    available = [path for language in languages
                 for path in sorted((NOTEBOOKS / language).glob("*.ipynb"))]
    if not names:
        return available
    chosen = set()
    for name in names:
        matches = _matching(available, name)
        if not matches:
            stems = sorted({path.stem for path in available})
            raise UsageError(f"no notebook matches {name!r}. Name a lesson by its number "
                             f"(1), its file name or its path; the notebooks are: "
                             f"{', '.join(stems)}")
        chosen.update(matches)
    return [path for path in available if path in chosen]


def _matching(available, name):
    as_path = Path(name).expanduser()
    if as_path.suffix == ".ipynb" and as_path.is_file():
        return [path for path in available if path.resolve() == as_path.resolve()]
    stem = as_path.name.removesuffix(".ipynb")
    if stem.isdigit():
        return [path for path in available if int(path.stem[:2]) == int(stem)]
    return [path for path in available if path.stem == stem]


def notebook_parameters(path):
    """The parameters declared in the notebook's ``parameters`` cell: name -> (default, help)."""
    return {name: (info["default"], info["help"])
            for name, info in papermill.inspect_notebook(str(path)).items()}


def parameters_for(paths, given, quick=False):
    """``{path: parameters}``: each notebook gets the given parameters that it declares
    (and, with ``quick``, its lesson's quick-run values under the given ones).

    Raises ``UsageError`` for a given name that no notebook declares, so a
    misspelt parameter never runs a notebook on its defaults.
    """
    declared = {path: notebook_parameters(path) for path in paths}
    known = sorted({name for names in declared.values() for name in names})
    for name in given:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UsageError(f"no notebook has a parameter {name!r}.{hint} "
                             f"The parameters are: {', '.join(known)}")
    quick_runs = {lesson.name: lesson.quick_run for lesson in all_lessons()} if quick else {}
    return {path: {name: value
                   for name, value in {**quick_runs.get(path.stem, {}), **given}.items()
                   if name in declared[path]}
            for path in paths}


def data_dir_of(paths, given):
    """The data folder the notebooks will read: ``-p data_dir`` or their default."""
    if "data_dir" in given:
        return given["data_dir"]
    default, _ = notebook_parameters(paths[0]).get("data_dir", (repr(helper.DEFAULT_DATA_DIR), ""))
    return ast.literal_eval(default)


def last_test_accuracy(nb):
    """The last test accuracy the notebook printed ('test accuracy: x', '测试准确率：x'), or None."""
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*",
                        help="lesson numbers, notebook names or paths (default: all)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                        help="a parameter, e.g. -p epochs 3, for every notebook that has it")
    parser.add_argument("--quick", action="store_true",
                        help="run each lesson with its own quick-run parameters (its header's "
                             "quick_run); -p values still win")
    parser.add_argument("--language", choices=LANGUAGES, action="append",
                        help="only this language (repeatable; default: both)")
    parser.add_argument("--output", default=REPO / "build" / "notebooks", type=Path,
                        help="where executed notebooks go (default: build/notebooks)")
    args = parser.parse_args(argv)

    given = parse_parameters(args.parameter)
    try:
        paths = notebook_paths(args.language or LANGUAGES, args.names)
        parameters = parameters_for(paths, given, quick=args.quick)
    except UsageError as error:
        parser.error(str(error))
    try:
        helper.prepare_fashion_mnist(data_dir_of(paths, given))
    except helper.FashionMNISTError as error:
        print(f"error: no notebook was run. {error}", file=sys.stderr)
        return 2

    failures = 0
    width = max(len(path.stem) for path in paths) + 2
    print(f"{'notebook':<{width}}{'language':<10}{'seconds':>8}  test accuracy", flush=True)
    for path in paths:
        language = path.parent.name
        try:
            seconds, accuracy, _ = run_notebook(path, args.output / language, parameters[path])
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
