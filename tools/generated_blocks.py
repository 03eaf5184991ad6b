"""The parts of the READMEs and the instructor guides that the build writes.

Each lies between two comment lines, ``<!-- NAME:start -->`` and
``<!-- NAME:end -->``; everything around them is written by hand. The
blocks:

- ``lessons``: the list of lessons with their summaries and Colab badges
  (the notebooks in the READMEs, the student edition in the guides);
- ``run-times``: the guides' timing table (each notebook's measured run time
  and each lesson's teaching time, from its header) and the READMEs' one-line
  summary of the main job's time. The times come from ``notebooks/run-times.json``,
  which ``python -m tools.run_notebooks --record`` writes after a full run.
"""

import json
import re

from tools.project import GUIDES, LANGUAGES, READMES, RUN_TIMES, colab_url

COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
LIST_HEADERS = {"en": "| Lesson | English | 中文 |", "zh-CN": "| 课程 | English | 中文 |"}
DASHES = {"en": " — ", "zh-CN": " —— "}
TIMING_HEADERS = {
    "en": "| Lesson | Run time, English | Run time, Chinese | Teaching time |",
    "zh-CN": "| 课程 | 运行时间，英文版 | 运行时间，中文版 | 授课时间 |",
}
SECONDS = {"en": "{:.0f} s", "zh-CN": "{:.0f} 秒"}
NOT_MEASURED = {"en": "not measured yet", "zh-CN": "尚未测量"}


def lessons_block(lessons, language, folder="notebooks"):
    """The list of lessons, with a Colab badge per notebook and language, for the
    notebooks in ``folder`` (``notebooks`` in the READMEs, ``student`` in the guides)."""
    items = [f"{lesson.number}. **{lesson.title[language].split('. ', 1)[1]}**"
             f"{DASHES[language]}{lesson.summary[language]}" for lesson in lessons]
    rows = [LIST_HEADERS[language], "|---|---|---|"]
    for lesson in lessons:
        links = [f"[![Open In Colab]({COLAB_BADGE})]({colab_url(f'{folder}/{lang}/{lesson.name}.ipynb')})"
                 for lang in LANGUAGES]
        rows.append(f"| [{lesson.title[language]}]({folder}/{language}/{lesson.name}.ipynb) | "
                    + " | ".join(links) + " |")
    return "\n".join(items) + "\n\n" + "\n".join(rows)


def read_run_times(path=RUN_TIMES):
    """The recorded measurements: ``{"measured": {...}, "seconds": {language: {name: s}}}``."""
    if not path.exists():
        return {"measured": {}, "seconds": {}}
    return json.loads(path.read_text(encoding="utf-8"))


def _duration(minutes, language):
    """``minutes`` as hours and minutes: "1 h 30 min", "1 小时 30 分钟"."""
    hours, minutes = divmod(minutes, 60)
    units = ("小时", "分钟") if language == "zh-CN" else ("h", "min")
    parts = [f"{hours} {units[0]}"] * bool(hours) + [f"{minutes} {units[1]}"] * bool(minutes or not hours)
    return " ".join(parts)


def _how_measured(measured, language):
    if not measured:
        return NOT_MEASURED[language]
    if language == "zh-CN":
        return (f"于 {measured['date']} 在 {measured['cpus']} 核 CPU 上测得"
                f"（{measured['system']}，Python {measured['python']}，torch {measured['torch']}）")
    return (f"measured on {measured['date']} on a {measured['cpus']}-core CPU "
            f"({measured['system']}, Python {measured['python']}, torch {measured['torch']})")


def timing_block(lessons, language, run_times):
    """The guides' table: run time of each notebook in both languages, teaching time, total."""
    seconds = run_times["seconds"]
    rows = [TIMING_HEADERS[language], "|---|---|---|---|"]
    for lesson in lessons:
        times = [seconds.get(lang, {}).get(lesson.name) for lang in LANGUAGES]
        shown = [SECONDS[language].format(t) if t is not None else "—" for t in times]
        rows.append(f"| {lesson.title[language]} | {' | '.join(shown)} | "
                    f"{_duration(lesson.teaching_minutes, language)} |")
    total = _duration(sum(lesson.teaching_minutes for lesson in lessons), language)
    how = _how_measured(run_times["measured"], language)
    if language == "zh-CN":
        note = f"运行时间{how}。授课时间合计 {total}。"
    else:
        note = f"Run times {how}. Teaching time in all: {total}."
    return "\n".join(rows) + "\n\n" + note


def main_job_block(lessons, language, run_times):
    """The READMEs' line on how long the main job takes, from the same measurements."""
    times = [run_times["seconds"].get(lang, {}).get(lesson.name) for lesson in lessons for lang in LANGUAGES]
    if not times or None in times:
        return {"en": "The main job's run time is not measured yet.",
                "zh-CN": "主要任务的运行时间尚未测量。"}[language]
    how = _how_measured(run_times["measured"], language)
    if language == "zh-CN":
        return f"`make run` 执行全部 {len(times)} 个 notebook 共用时 {sum(times):.0f} 秒，{how}；各课的用时见讲师指南。"
    return (f"`make run` executes all {len(times)} notebooks in {sum(times):.0f} s, {how}; "
            "each lesson's time is in the instructor guide.")


def with_block(text, name, block, where):
    """``text`` with its ``<!-- name:start -->`` ... ``<!-- name:end -->`` block replaced by
    ``block``; ``where`` names the file in the error when the markers are missing."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise ValueError(f"{where} lacks the {start} ... {end} block")
    return pattern.sub(lambda _: f"{start}\n{block}\n{end}", text)


def generated_texts(lessons, run_times=None):
    """``{path: text}``: the READMEs and guides with every block written anew."""
    run_times = read_run_times() if run_times is None else run_times
    texts = {}
    for language, path in READMES.items():
        text = path.read_text(encoding="utf-8")
        text = with_block(text, "lessons", lessons_block(lessons, language), path.name)
        texts[path] = with_block(text, "run-times", main_job_block(lessons, language, run_times), path.name)
    for language, path in GUIDES.items():
        text = path.read_text(encoding="utf-8")
        text = with_block(text, "lessons", lessons_block(lessons, language, "student"), path.name)
        texts[path] = with_block(text, "run-times", timing_block(lessons, language, run_times), path.name)
    return texts


def write_generated_blocks(lessons, run_times=None):
    """Write the blocks of the READMEs and guides; returns the files that changed."""
    changed = []
    for path, text in generated_texts(lessons, run_times).items():
        if path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    return changed
