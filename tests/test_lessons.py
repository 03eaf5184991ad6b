"""The lesson sources: the rules every lesson follows, the translation of comments, and lint."""

import ast
import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO
from saveload_lessons import LANGUAGES
from tools import build_notebooks
from tools.build_notebooks import LessonError, load_lesson, localize_code

LESSON_1 = REPO / "lessons" / "01-saving-and-loading-models.py"
# What the cell after the parameters starts with, so that its checks speak the notebook's language
LANGUAGE_FIRST = ("# The companion modules speak the notebook's language\n"
                  "# zh-CN: 配套模块使用本 notebook 的语言\n"
                  'messages.set_language("en")\n'
                  '# zh-CN: messages.set_language("zh-CN")\n')


# --------------------------------------------------------------------------- comments

def test_a_translation_line_replaces_its_comment_in_chinese_and_vanishes_in_english():
    source = ('x = "# not a comment"  # set x\n'
              '                       # zh-CN: 设置 x\n'
              '# done\n'
              '# zh-CN: 完成')
    assert localize_code(source, "en") == 'x = "# not a comment"  # set x\n# done'
    assert localize_code(source, "zh-CN") == 'x = "# not a comment"  # 设置 x\n# 完成'


def test_a_translation_line_after_code_replaces_the_line_in_chinese():
    source = ('if same:\n'
              '    print(f"same weights: {same}")\n'
              '# zh-CN: print(f"权重相同：{same}")\n'
              'x = 1')
    assert localize_code(source, "en") == 'if same:\n    print(f"same weights: {same}")\nx = 1'
    assert localize_code(source, "zh-CN") == 'if same:\n    print(f"权重相同：{same}")\nx = 1'


@pytest.mark.parametrize("source, message", [
    ("x = 1  # set x", "no Chinese translation for the comment '# set x'"),
    ("# one\n# two\n# zh-CN: 二", "no Chinese translation for the comment '# one'"),
    ("# zh-CN: 孤立", "follows no English comment and no line of code"),
    ("x = 1\n\n# zh-CN: x = 2", "follows no English comment and no line of code"),
    ("# one\nx = 1  # zh-CN: 一", "must be on a line of its own"),
    ('print("a")\n# zh-CN: print("甲", 1)', "changes more than strings and comments"),
    ('print(f"{a}")\n# zh-CN: print(f"{b}")', "changes more than strings and comments"),
    ('print("a")\n# zh-CN: print("甲"', "not valid Python"),
])
def test_a_missing_or_stray_translation_is_refused(source, message):
    with pytest.raises(LessonError, match=message):
        localize_code(source, "zh-CN")


def test_code_shape_ignores_comments_layout_and_the_text_of_strings_only():
    shape = build_notebooks.code_shape
    assert shape('x = f"a {b:.2f}"  # c') == shape('x = (f"甲 {b:.2f}" \n     "乙")')
    assert shape('x = f"{b}"') != shape('x = f"{c}"')
    assert shape('x = "#1"') != shape('y = "#1"')


# --------------------------------------------------------------------------- rules

def test_every_lesson_follows_the_rules():
    lessons = build_notebooks.all_lessons()
    assert [lesson.number for lesson in lessons] == list(range(1, len(lessons) + 1))


def broken_copy(tmp_path, old, new, name=LESSON_1.name):
    """Lesson 1's source with ``old`` replaced by ``new``, saved as ``name``."""
    text = LESSON_1.read_text(encoding="utf-8")
    assert old in text, old
    path = tmp_path / name
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


@pytest.mark.parametrize("old, new, problem", [
    ("#       en: 1. Saving and loading models", "#       en: Saving and loading models",
     "the en title 'Saving and loading models' must start with '1. '"),
    ("#     quick_run:\n#       epochs: 1\n", "", "quick_run parameters"),
    ('# %% [markdown] lang="zh-CN"\n# ## 导入模块', '# %% [markdown] lang="en"\n# ## 导入模块',
     "has no Chinese twin after it"),
    ("                                       # zh-CN: 固定初始权重、数据顺序和 dropout\n", "",
     "no Chinese translation for the comment '# fixes the initial weights"),
    ('seed = 7 ', 'random_seed = 7 ', "the parameters cell lacks ['seed']"),
    ('# %% tags=["parameters"]', '# %%', "0 code cells are tagged 'parameters'"),
    ("device = devices.get_device(device)\n", "",
     "the cell after the parameters does not call ['devices.get_device']"),
    (LANGUAGE_FIRST + "fc_model.check_positive_int(epochs=epochs)\n",
     "fc_model.check_positive_int(epochs=epochs)\n" + LANGUAGE_FIRST,
     'the cell after the parameters must start with messages.set_language("en") and a '
     '"# zh-CN:" line with messages.set_language("zh-CN"), before its checks'),
    ('messages.set_language("en")\n# zh-CN: messages.set_language("zh-CN")\nfc_model',
     'messages.set_language("en")\nfc_model',
     'the cell after the parameters must start with messages.set_language("en")'),
    ('epochs = 2 ', 'epochs = int("2") ', "must only assign plain values"),
    ("#     teaching_minutes: 60\n", "", "the header needs teaching_minutes"),
    ('for_lesson(1, language="en")', 'for_lesson(2, language="en")',
     "must take its checks with exercise_checks.for_lesson(1, ...), the lesson's own number"),
])
def test_a_lesson_that_breaks_a_rule_is_refused_with_the_reason(tmp_path, old, new, problem):
    path = broken_copy(tmp_path, old, new)
    with pytest.raises(LessonError) as info:
        load_lesson(path)
    assert problem in str(info.value)
    assert "The rules (RULES in tools/build_notebooks.py)" in str(info.value)


def test_a_lesson_without_registered_checks_is_refused(tmp_path):
    """A lesson numbered 98, with lesson 1's exercises: no checks are registered for it."""
    path = broken_copy(tmp_path, "#       en: 1. Saving", "#       en: 98. Saving",
                       name="98-no-checks.py")
    path.write_text(path.read_text(encoding="utf-8").replace("zh-CN: 1. ", "zh-CN: 98. ")
                    .replace("for_lesson(1,", "for_lesson(98,"), encoding="utf-8")
    with pytest.raises(LessonError, match="saveload_lessons/exercise_checks has no checks for lesson 98: "
                                          "add lesson98.py"):
        load_lesson(path)


def test_quick_run_may_only_name_parameters(tmp_path):
    path = broken_copy(tmp_path, "#       epochs: 1\n", "#       epochs: 1\n#       epoch: 1\n")
    with pytest.raises(LessonError, match=r"quick_run names unknown parameters \['epoch'\]"):
        load_lesson(path)


def test_a_file_name_without_a_number_is_refused(tmp_path):
    path = tmp_path / "saving.py"
    shutil.copy(LESSON_1, path)
    with pytest.raises(LessonError, match="is not NN-words.py"):
        load_lesson(path)


def test_the_notebooks_link_each_lesson_to_the_next():
    lessons = build_notebooks.all_lessons()
    notebooks = {(lesson.name, language): nb
                 for lesson, language, nb in build_notebooks.notebooks(lessons)}
    for lesson, following in zip(lessons, lessons[1:]):
        for language in LANGUAGES:
            last = notebooks[lesson.name, language].cells[-1]
            assert f"]({following.name}.ipynb)" in last.source
            assert following.title[language] in last.source
    assert "Next" not in notebooks[lessons[-1].name, "en"].cells[-1].source


def test_lessons_can_be_chosen_by_number_or_name():
    lessons = build_notebooks.all_lessons()
    assert build_notebooks.select(lessons, ["1"]) == lessons[:1]
    assert build_notebooks.select(lessons, ["02", lessons[2].name]) == lessons[1:3]
    with pytest.raises(SystemExit, match="unknown lesson in \\['0'\\]; the lessons are 01-"):
        build_notebooks.select(lessons, ["0"])



# --------------------------------------------------------------------------- lint

def test_ruff_finds_nothing_in_the_lessons_modules_tools_and_tests():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(REPO)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- Chinese output

# two words in a row, one of three letters or more: a phrase, not units such as "MB ms"
ENGLISH_WORDS = re.compile(r"[A-Za-z]{3,}[ ,:;.]+[A-Za-z]{2,}|[A-Za-z]{2,}[ ,:;.]+[A-Za-z]{3,}")


def printed_texts(source):
    """For each ``print(...)`` call in ``source``, in order, the pieces of text it writes
    itself: its string arguments and the literal parts of its f-strings."""
    texts = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
            parts = [value for arg in node.args
                     for value in (arg.values if isinstance(arg, ast.JoinedStr) else [arg])]
            texts.append([part.value for part in parts
                          if isinstance(part, ast.Constant) and isinstance(part.value, str)])
    return texts


@pytest.mark.parametrize("lesson", build_notebooks.all_lessons(), ids=lambda lesson: lesson.name[:2])
def test_the_chinese_notebooks_print_their_sentences_in_chinese(lesson):
    """No English phrase that the lessons' own code prints is left in the Chinese notebook."""
    untranslated = []
    for cell in lesson.cells:
        if cell.cell_type != "code":
            continue
        english = printed_texts(localize_code(cell.source, "en"))
        chinese = printed_texts(localize_code(cell.source, "zh-CN"))
        untranslated += [part for parts, twin in zip(english, chinese)
                         for part in parts if ENGLISH_WORDS.search(part) and part in twin]
    assert untranslated == [], f"{lesson.name}: print these in Chinese too (a '# zh-CN:' line)"
