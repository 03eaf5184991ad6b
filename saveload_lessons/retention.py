"""Keeping the latest checkpoint and the K best ones, and never losing a good one (lesson 7).

A long run that saves often fills its disk; one that keeps only the newest file loses its
best model when the last epochs overfit. ``CheckpointKeeper`` keeps, in one folder, the latest
checkpoint (to resume from) and the ``keep_best`` checkpoints with the best metric (to use),
named like lesson 5's step folders (``step-000040.pt``), and a ledger, ``checkpoints.json``,
that says which is which. Each save goes in three steps, each complete before the next:

1. the new checkpoint is written (``atomic_write``: complete, or not there at all);
2. the ledger is replaced (atomically too) by one that names it;
3. only then are the files the ledger no longer names deleted.

A process killed at any moment leaves a ledger that names complete files only; a file written
just before such a kill, and not yet in the ledger, is deleted by the next save.
"""

import json
import math
import re
from pathlib import Path

from saveload_lessons import checkpoint_io
from saveload_lessons.checkpoint_io import CheckpointError
from saveload_lessons.files import atomic_write
from saveload_lessons.values import check_positive_int, is_count, is_number

# A checkpoint is named after the steps it was taken after: a folder (lesson 5's distributed
# checkpoints) step-000040, a file step-000040.pt
STEP_NAME = re.compile(r"step-(\d{6,12})")
LEDGER = "checkpoints.json"
SUFFIX = ".pt"
MAX_LEDGER_BYTES = 1 << 20


def step_folder(root, step):
    """The folder of the checkpoint taken after ``step`` optimizer steps: ``root/step-000040``."""
    if not is_count(step) or step >= 10**12:
        raise ValueError(f"step must be a non-negative integer below 10**12, got {step!r}")
    return Path(root) / f"step-{step:06d}"


def folder_step(folder):
    """The step number in a step folder's name, or None for any other name.

    Only the spelling ``step_folder`` writes counts (``step-000040``, not
    ``step-0000040``), so that each step has exactly one folder.
    """
    name = Path(folder).name
    match = STEP_NAME.fullmatch(name)
    if match is None or name != f"step-{int(match.group(1)):06d}":
        return None
    return int(match.group(1))


def step_file(folder, step):
    """The file of the checkpoint taken after ``step`` steps: ``folder/step-000040.pt``."""
    return step_folder(folder, step).with_suffix(SUFFIX)


def file_step(path):
    """The step in a checkpoint file's name (``step-000040.pt``), or None for any other name."""
    path = Path(path)
    return folder_step(path.stem) if path.suffix == SUFFIX else None


class CheckpointKeeper:
    """The latest checkpoint and the ``keep_best`` best ones in ``folder``.

    Args:
        folder: where the files go; created if needed.
        keep_best: how many of the best checkpoints to keep (besides the latest).
        higher_is_better: True for a metric such as accuracy, False for a loss.
    """

    def __init__(self, folder, keep_best, higher_is_better=True):
        check_positive_int(keep_best=keep_best)
        self.folder = Path(folder)
        self.keep_best = keep_best
        self.higher_is_better = higher_is_better

    def save(self, step, metric, write):
        """Save the checkpoint of ``step``, whose ``metric`` is a finite number: ``write(file)``
        writes its content into a binary file (``lambda file: torch.save(state, file)``).
        Returns the new file's path."""
        if not is_count(step):
            raise ValueError(f"step must be a non-negative integer, got {step!r}")
        if not is_number(metric) or not math.isfinite(metric):
            raise ValueError(f"metric must be a finite number, got {metric!r}")
        ledger = self._ledger()
        path = step_file(self.folder, step)
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as file:
            write(file)
        others = [entry for entry in ledger["best"] if entry["step"] != step]
        best = sorted([*others, {"step": step, "metric": float(metric)}], key=self._rank)[:self.keep_best]
        with atomic_write(self.folder / LEDGER) as file:
            file.write(json.dumps({"latest": step, "best": best}, indent=1).encode())
        kept = {step, *(entry["step"] for entry in best)}
        for old in self.folder.iterdir():
            if file_step(old) is not None and file_step(old) not in kept:
                old.unlink()
        return path

    def latest(self):
        """The latest checkpoint's path, or None before the first save."""
        latest = self._ledger()["latest"]
        return None if latest is None else step_file(self.folder, latest)

    def best(self):
        """``[(path, metric), ...]`` of the kept best checkpoints, the best first."""
        return [(step_file(self.folder, entry["step"]), entry["metric"]) for entry in self._ledger()["best"]]

    def _rank(self, entry):
        # Best first; between equal metrics, the earlier checkpoint
        return (-entry["metric"] if self.higher_is_better else entry["metric"], entry["step"])

    def _ledger(self):
        """The ledger's content, checked: every step it names has its file in the folder."""
        path = self.folder / LEDGER
        if not path.exists():
            return {"latest": None, "best": []}
        content = checkpoint_io.read_small_file(path, MAX_LEDGER_BYTES)
        try:
            if len(content) > MAX_LEDGER_BYTES:
                raise ValueError
            ledger = json.loads(content)
            latest, best = ledger["latest"], ledger["best"]
            steps = [latest, *(entry["step"] for entry in best)]
            if not all(is_count(step) for step in steps) \
                    or not all(is_number(entry["metric"]) and math.isfinite(entry["metric"]) for entry in best):
                raise ValueError
        except (ValueError, KeyError, TypeError, RecursionError):
            raise CheckpointError(f"{path} is not a ledger written by CheckpointKeeper: it should hold "
                                  "the latest step and a list of the best steps with their metric") from None
        missing = [step_file(self.folder, step).name for step in steps
                   if not step_file(self.folder, step).is_file()]
        if missing:
            raise CheckpointError(f"{path} names {missing}, which are missing from {self.folder}: the "
                                  "folder was changed by hand; restore those files or remove the ledger")
        return {"latest": latest, "best": best}
