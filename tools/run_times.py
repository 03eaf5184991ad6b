"""The measured run time of every notebook, kept in ``notebooks/run-times.json``.

PyTorch's tutorials keep the time each tutorial took in a committed file too;
here the main job writes it (``python -m tools.run_notebooks --record``, after a
full run with the default parameters), and the build turns it into the timing
tables of the guides and READMEs (``tools.generated_blocks``). Nobody types a
time into a document.
"""

import datetime
import json
import os
import platform

from tools.generated_blocks import write_generated_blocks
from tools.project import RUN_TIMES, read_lessons


def machine():
    """What the times were measured on: date, CPU count, system, Python and torch."""
    import torch

    return {"date": datetime.date.today().isoformat(), "cpus": os.cpu_count(),
            "system": platform.system(), "python": platform.python_version(),
            "torch": torch.__version__.split("+")[0]}


def record_run_times(seconds, path=RUN_TIMES):
    """Write ``seconds`` (``{language: {notebook name: seconds}}``, one full run) to ``path``
    with the machine it ran on, and regenerate the tables; returns the files changed."""
    run_times = {"measured": machine(),
                 "seconds": {language: {name: round(value, 1) for name, value in sorted(times.items())}
                             for language, times in sorted(seconds.items())}}
    path.write_text(json.dumps(run_times, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return [path, *write_generated_blocks(read_lessons(), run_times)]
