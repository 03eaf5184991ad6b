"""Execute every lesson notebook with papermill: the collection's main job.

Each notebook runs from its own output folder (``--cwd``), so the files it
writes (checkpoints) land beside its executed copy in ``build/notebooks/``.
One line per notebook is printed: name, language, seconds and the last test
accuracy the notebook printed.

    python -m tools.run_notebooks                       # all notebooks, both languages
    python -m tools.run_notebooks --quick               # each lesson's quick run (a few minutes)
    python -m tools.run_notebooks 1 3 -p device cpu     # lessons 1 and 3, on the CPU
    python -m tools.run_notebooks notebooks/zh-CN/02-checkpoints-and-resuming-training.ipynb

Before anything runs, the names, the parameters (against each notebook's
``parameters`` cell), the output folder and the data set are checked, each with
one message:

- a value is read as the type of the parameter's default in the notebook:
  ``-p epochs 3`` must be a whole number, ``-p device cpu`` is text (no quotes
  needed);
- the folders a lesson writes into, and deletes files from (``checkpoint_dir``,
  ``model_dir``: ``OUTPUT_PATH_PARAMETERS``), must lie inside the notebook's
  output folder, ``--output``/LANGUAGE: ``-p checkpoint_dir run-2`` is fine,
  ``-p checkpoint_dir /`` or ``../elsewhere`` is refused. To write somewhere
  else, choose ``--output``. ``data_dir`` is only read from (and filled with
  Fashion-MNIST when it is missing), so it may be any folder.

A name one letter off gets a "Did you mean", and so does a parameter; a
parameter that only lessons not selected have names them. Ctrl-C stops the job
with one line, and never leaves a partly executed notebook in place of the
previous output (see ``run_notebook``).
"""

import argparse
import ast
import difflib
import os
import re
import reprlib
import sys
import time
from pathlib import Path

import nbformat
import papermill

import helper
from tools.project import KERNEL_ARGUMENTS, LANGUAGES, NOTEBOOKS, REPO, read_lessons
from tools.run_times import record_run_times

# "Test accuracy ...: 0.84" in English, "...测试准确率...：0.84" in Chinese.
ACCURACY = re.compile(r"(?:test accuracy|测试准确率)[^:：\n]*[:：]\s*([01]\.\d+)", re.IGNORECASE)
# A lesson number: ASCII digits only (str.isdigit() also accepts "²", which int() refuses),
# and few of them (int() refuses more than 4300 digits).
LESSON_NUMBER = re.compile(r"[0-9]{1,9}")
# A value for a parameter whose default is not text is read as a Python literal (3, 0.5,
# True), and only when it is this short: no lesson needs a longer number.
LITERAL_LENGTH = 40
# The parameters that name a folder the lesson writes into; see check_output_paths.
OUTPUT_PATH_PARAMETERS = ("checkpoint_dir", "model_dir")


class UsageError(ValueError):
    """A name, parameter, value or folder the main job cannot use; the message says what to give."""


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
            raise UsageError(f"no notebook matches {reprlib.repr(name)}.{_closest_notebook(name, stems)} "
                             f"Name a lesson by its number (1), its file name or its path; the "
                             f"notebooks are: {', '.join(stems)}")
        chosen.update(matches)
    return [path for path in available if path in chosen]


def _closest_notebook(name, stems):
    """" Did you mean '01-saving-and-loading-models'?" for a ``name`` close to one of the
    notebooks' ``stems``, with or without its number (``saving-and-loding``); else ""."""
    by_name = {stem: stem for stem in stems} | {stem[3:]: stem for stem in stems}
    close = difflib.get_close_matches(Path(name).name.removesuffix(".ipynb"), by_name, n=1)
    return f" Did you mean {by_name[close[0]]!r}?" if close else ""


def _matching(available, name):
    """The notebooks of ``available`` that ``name`` selects (see ``notebook_paths``)."""
    as_file = _notebook_file(name)
    if as_file:
        return [path for path in available if path.resolve() == as_file]
    stem = Path(name).name.removesuffix(".ipynb")
    if LESSON_NUMBER.fullmatch(stem):
        return [path for path in available if int(path.stem[:2]) == int(stem)]
    return [path for path in available if path.stem == stem]


def _notebook_file(name):
    """``name`` resolved, when it is the path of an existing .ipynb file; otherwise None
    (also for a name that no file system accepts, such as one too long)."""
    try:
        path = Path(name).expanduser()
        return path.resolve() if path.suffix == ".ipynb" and path.is_file() else None
    except (OSError, RuntimeError):  # RuntimeError: "~someone" with no such user
        return None


def notebook_parameters(path):
    """The parameters declared in the notebook's ``parameters`` cell: name -> default value."""
    return {name: ast.literal_eval(info["default"])
            for name, info in papermill.inspect_notebook(str(path)).items()}


def parameters_for(paths, given, quick=False):
    """``{path: parameters}``: each notebook gets the given parameters that it declares
    (and, with ``quick``, its lesson's quick-run values under the given ones).

    ``given`` maps names to values, or to the text of ``-p NAME VALUE``, which
    ``read_value`` reads as the type of the notebook's default. Raises
    ``UsageError`` for a given name that none of ``paths`` declares, so a
    misspelt parameter never runs a notebook on its defaults (the message
    names the lessons that have it, when only lessons not selected do), and
    for a value of the wrong type.
    """
    declared = {path: notebook_parameters(path) for path in paths}
    known = sorted({name for names in declared.values() for name in names})
    for name in given:
        if name not in known:
            raise UsageError(_unknown_parameter(name, given[name], known, paths))
    quick_runs = {lesson.name: lesson.quick_run for lesson in read_lessons()} if quick else {}
    chosen = {}
    for path in paths:
        defaults = declared[path]
        chosen[path] = {name: value for name, value in quick_runs.get(path.stem, {}).items()
                        if name in defaults}
        chosen[path].update({name: read_value(name, value, defaults[name])
                             for name, value in given.items() if name in defaults})
    return chosen


def _unknown_parameter(name, value, known, paths):
    """The message for ``-p name value`` when none of the selected notebooks (``paths``,
    whose parameters are ``known``) has the parameter ``name``."""
    having = sorted({_lesson_number(path) for path in notebook_paths()
                     if name in notebook_parameters(path)} - {_lesson_number(path) for path in paths})
    if having:
        selected = sorted({_lesson_number(path) for path in paths})
        return (f"the selected {_lessons(selected)} {'has' if len(selected) == 1 else 'have'} no "
                f"parameter {name!r}; {_lessons(having)} {'has' if len(having) == 1 else 'have'} "
                f"it: select {'it' if len(having) == 1 else 'one of them'} by its number, for "
                f"example `{having[0]} -p {name} {value}`")
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"no notebook has a parameter {name!r}.{hint} The parameters are: {', '.join(known)}"


def _lesson_number(path):
    """The number of the lesson a notebook belongs to: 2 for ``02-checkpoints-....ipynb``."""
    return int(path.stem[:2])


def _lessons(numbers):
    """'lesson 1' or 'lessons 2, 4 and 5'."""
    if len(numbers) == 1:
        return f"lesson {numbers[0]}"
    return f"lessons {', '.join(map(str, numbers[:-1]))} and {numbers[-1]}"


def read_value(name, value, default):
    """``value`` for the parameter ``name``, checked against the type of its ``default``.

    Text from the command line is read as the default's type: as it is for a
    text parameter (``-p device cpu``), as a short Python literal otherwise
    (``-p epochs 3``). Raises ``UsageError`` for a value of another type, such
    as ``-p epochs abc``, so that no notebook starts with one.
    """
    read = _literal(value) if isinstance(value, str) and not isinstance(default, str) else value
    if type(read) is not type(default):  # not isinstance: True is no number of epochs
        raise UsageError(f"-p {name} {reprlib.repr(value)}: {name} takes a value of type "
                         f"{type(default).__name__}, like its default: for example "
                         f"-p {name} {default}")
    return read


def _literal(text):
    """``text`` read as a Python literal (``3``, ``0.5``, ``True``), or None when it is not
    one or is longer than ``LITERAL_LENGTH``."""
    if len(text) > LITERAL_LENGTH:
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None  # not a literal, or one that cannot be built ({[]: 1})


def check_output_paths(parameters, folder):
    """Raise ``UsageError`` unless each of ``OUTPUT_PATH_PARAMETERS`` in ``parameters`` names
    a folder inside ``folder``, the notebook's output folder, where it runs.

    The lessons write, overwrite and delete files in these folders: lesson 2
    deletes ``latest.pt`` and ``best.pt`` before training, lesson 5 empties
    whole folders of checkpoints. ``-p checkpoint_dir /`` would do that at the
    root of the file system, so a value must be a relative path that stays
    inside: not absolute, not starting with ``~``, not climbing out with ``..``,
    and not through a link that points outside.
    """
    inside = Path(folder).resolve()
    for name in OUTPUT_PATH_PARAMETERS:
        if name in parameters and not _stays_inside(parameters[name], inside):
            raise UsageError(f"-p {name} {reprlib.repr(parameters[name])}: the notebook writes and "
                             f"deletes files in {name}, so it must be a folder inside the "
                             f"notebook's output folder {folder}: a relative path such as "
                             "'run-2', without '..', '~' or a leading '/'. To write elsewhere, "
                             "choose --output.")


def _stays_inside(value, folder):
    """Whether ``value`` is a path that names ``folder`` (resolved) or something inside it.

    ``~/x`` counts as outside: to a learner it means the home folder, although
    the lessons, which do not expand ``~``, would make a folder named ``~`` inside.
    """
    return (isinstance(value, str) and not value.startswith("~") and "\0" not in value
            and (folder / value).resolve().is_relative_to(folder))


def check_output(folder):
    """Raise ``UsageError`` when ``folder``, or the nearest of its parents that exists, is a
    file, or a folder this user may not write to: the executed notebooks need a folder
    (created when it does not exist)."""
    existing = next(path for path in (folder, *folder.parents) if os.path.exists(path))
    if not os.path.isdir(existing):
        raise UsageError(f"--output: {existing} is a file, not a folder. Name a folder for the "
                         "executed notebooks (it is created when it does not exist).")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--output: this user may not create {folder} in {existing}. Name a "
                         "folder you can write to.")


def data_dir_of(paths, given):
    """The data folder the notebooks will read: ``-p data_dir`` or their default."""
    if "data_dir" in given:
        return given["data_dir"]
    return notebook_parameters(paths[0]).get("data_dir", helper.DEFAULT_DATA_DIR)


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

    Raises ``UsageError`` for a folder parameter outside ``output_dir`` (see
    ``check_output_paths``), and papermill's ``PapermillExecutionError`` when a
    cell fails; the executed copy, error included, is still written to ``output_dir``.
    papermill writes the notebook as it runs, into a hidden file beside the
    output, which replaces the output only once the run has ended: a run that
    is interrupted (Ctrl-C) leaves the previous output as it was.
    """
    output_dir = Path(output_dir)
    check_output_paths(parameters or {}, output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    output_path = output_dir / path.name
    running = output_dir / f".{path.stem}.running.ipynb"
    start = time.perf_counter()
    try:
        papermill.execute_notebook(str(path), str(running), parameters=parameters or {},
                                   cwd=str(output_dir), kernel_name="python3",
                                   progress_bar=False, extra_arguments=KERNEL_ARGUMENTS)
    except papermill.PapermillExecutionError:
        os.replace(running, output_path)  # the run ended, in an error that is worth reading
        raise
    except BaseException:
        running.unlink(missing_ok=True)
        raise
    os.replace(running, output_path)
    seconds = time.perf_counter() - start
    return seconds, last_test_accuracy(nbformat.read(output_path, as_version=4)), output_path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*",
                        help="lesson numbers, notebook names or paths (default: all)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                        help="a parameter, e.g. -p epochs 3, for every notebook that has it; "
                             "the value has the type of the notebook's default. The folders "
                             "a lesson writes into (" + ", ".join(OUTPUT_PATH_PARAMETERS) +
                             ") must be relative paths inside the notebook's output folder, "
                             "OUTPUT/LANGUAGE")
    parser.add_argument("--quick", action="store_true",
                        help="run each lesson with its own quick-run parameters (its header's "
                             "quick_run); -p values still win")
    parser.add_argument("--language", choices=LANGUAGES, action="append",
                        help="only this language (repeatable; default: both)")
    parser.add_argument("--output", default=REPO / "build" / "notebooks", type=Path,
                        help="where executed notebooks go (default: build/notebooks)")
    parser.add_argument("--record", action="store_true",
                        help="after a full run with the default parameters, write the times to "
                             "notebooks/run-times.json and the timing tables of the guides and READMEs")
    args = parser.parse_args(argv)
    if args.record and (args.names or args.quick or args.language
                        or set(dict(args.parameter or [])) - {"data_dir"}):
        parser.error("--record keeps the times of a full run with the default parameters: "
                     "give no names, --quick, --language or -p (other than -p data_dir)")

    given = dict(args.parameter or [])
    data_dir = given.get("data_dir", "~")
    if not (data_dir.startswith("~") or Path(data_dir).is_absolute()):
        # a relative folder means the one it names from here, not from each notebook's output folder
        given["data_dir"] = str(Path(data_dir).absolute())
    try:
        paths = notebook_paths(args.language or LANGUAGES, args.names)
        parameters = parameters_for(paths, given, quick=args.quick)
        for path in paths:
            check_output(args.output / path.parent.name)
            check_output_paths(parameters[path], args.output / path.parent.name)
    except UsageError as error:
        parser.error(str(error))
    progress = []  # the notebooks that ended, then the one running
    try:
        helper.prepare_fashion_mnist(data_dir_of(paths, given))
        failures, times = run_all(paths, parameters, args.output, progress)
    except helper.FashionMNISTError as error:
        print(f"error: no notebook was run. {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted(progress, len(paths), args.output), flush=True)
        return 130
    print(f"{len(paths) - failures} notebooks ran, {failures} failed; outputs in {args.output}")
    if args.record and not failures:
        changed = record_run_times(times)
        print("recorded the run times in " + ", ".join(str(path.relative_to(REPO)) for path in changed))
    return 1 if failures else 0


def run_all(paths, parameters, output, progress):
    """Run every notebook of ``paths`` into ``output``/LANGUAGE, printing one line each; return
    the number that failed and ``{language: {name: seconds}}`` of the others.

    ``progress`` is a list this appends each notebook to as it starts: after Ctrl-C,
    its last item is the notebook that was interrupted, and the others had ended.
    """
    failures, times = 0, {}
    width = max(len(path.stem) for path in paths) + 2
    print(f"{'notebook':<{width}}{'language':<10}{'seconds':>8}  test accuracy", flush=True)
    for path in paths:
        progress.append(path)
        language = path.parent.name
        try:
            seconds, accuracy, _ = run_notebook(path, output / language, parameters[path])
        except papermill.PapermillExecutionError as error:
            failures += 1
            print(f"{path.stem:<{width}}{language:<10}  FAILED in cell {error.exec_count}: "
                  f"{error.ename}: {error.evalue}", flush=True)
            continue
        times.setdefault(language, {})[path.stem] = seconds
        shown = "-" if accuracy is None else f"{accuracy:.4f}"
        print(f"{path.stem:<{width}}{language:<10}{seconds:>8.1f}  {shown}", flush=True)
    return failures, times


def interrupted(progress, total, output):
    """The one line the main job prints when Ctrl-C stops it (``progress``: see ``run_all``)."""
    if not progress:
        return "interrupted while preparing Fashion-MNIST, before any notebook ran."
    *ended, running = progress
    return (f"interrupted during {running.stem} ({running.parent.name}): {len(ended)} of {total} "
            f"notebooks had ended, their outputs are in {output}; the interrupted notebook's "
            "previous output, if any, is unchanged.")


if __name__ == "__main__":
    sys.exit(main())
