"""The blocks of the READMEs and guides that the build writes from the lessons and the
recorded run times (``tools.generated_blocks``)."""

import pytest

from saveload_lessons import LANGUAGES
from tools import generated_blocks
from tools.project import read_lessons

LESSONS = read_lessons()
MEASURED = {"date": "2026-01-02", "cpus": 2, "system": "Linux", "python": "3.11.9", "torch": "2.14.1"}


def test_the_timing_table_shows_each_measured_time_and_the_total_teaching_time():
    seconds = {"en": {LESSONS[0].name: 15.8}, "zh-CN": {LESSONS[0].name: 15.3}}
    block = generated_blocks.timing_block(LESSONS, "en", {"measured": MEASURED, "seconds": seconds})
    rows = block.splitlines()
    assert rows[2].startswith(f"| {LESSONS[0].title['en']} | 16 s | 15 s | ")
    assert rows[3].startswith(f"| {LESSONS[1].title['en']} | — | — | ")  # not measured
    total = sum(lesson.teaching_minutes for lesson in LESSONS)
    assert f"Teaching time in all: {total // 60} h" in block
    assert "measured on 2026-01-02 on a 2-core CPU (Linux, Python 3.11.9, torch 2.14.1)" in block


@pytest.mark.parametrize("minutes, english, chinese", [
    (45, "45 min", "45 分钟"), (60, "1 h", "1 小时"), (390, "6 h 30 min", "6 小时 30 分钟")])
def test_durations_read_naturally_in_both_languages(minutes, english, chinese):
    assert generated_blocks._duration(minutes, "en") == english
    assert generated_blocks._duration(minutes, "zh-CN") == chinese


def test_the_main_job_line_needs_every_notebook_measured():
    every = {language: {lesson.name: 10.0 for lesson in LESSONS} for language in LANGUAGES}
    line = generated_blocks.main_job_block(LESSONS, "en", {"measured": MEASURED, "seconds": every})
    assert f"all {2 * len(LESSONS)} notebooks in {20 * len(LESSONS)} s" in line
    del every["zh-CN"][LESSONS[-1].name]
    assert "not measured yet" in generated_blocks.main_job_block(
        LESSONS, "en", {"measured": MEASURED, "seconds": every})


def test_a_document_without_its_block_is_named():
    with pytest.raises(ValueError, match="README.md lacks the <!-- run-times:start --> ... "
                                         "<!-- run-times:end --> block"):
        generated_blocks.with_block("no block here", "run-times", "table", "README.md")
