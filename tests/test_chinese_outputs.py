"""Every sentence a Chinese notebook prints is Chinese.

An output line that reads as an English sentence (four English words in a row, and not
one Chinese character) fails the test, unless it is one of the messages that PyTorch or
Python print (``LIBRARY_MESSAGES``), and the Chinese prose next to its cell explains it:
it names the message. Code shown with ``inspect.getsource`` counts as code when the prose
next to it names the function in Chinese, and a command line (``python -m ...``) as a command.
"""

import re

import nbformat
import pytest

from conftest import REPO

CHINESE = re.compile(r"[\u4e00-\u9fff]")
ENGLISH_SENTENCE = re.compile(r"[A-Za-z]{2,}(?:[ ,'’]+[A-Za-z]{2,}){3,}")
# What PyTorch or Python print in the lessons, and what the Chinese prose next to the cell
# must name to explain it (the same text, or the error's name)
LIBRARY_MESSAGES = {
    r"^Error\(s\) in loading state_dict|^\s*size mismatch for": "size mismatch",
    r"WeightsUnpickler error: Unsupported global": "Unsupported global",
    r"^AttributeError: Can't get attribute": "AttributeError",
    r"Environment variable TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD detected": "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD",
    r"Attempting to deserialize object on a CUDA device": "torch.cuda.is_available()",
    r"^<All keys matched successfully>$": "All keys matched successfully",
    r"^Some tensors share memory": "Some tensors share memory",
}
NEARBY = 3  # prose cells this close to the code cell count as "next to it"
PATHS = sorted((REPO / "notebooks" / "zh-CN").glob("*.ipynb"))


def output_lines(cell):
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            yield from output.get("text", "").splitlines()
        elif output.get("output_type") == "error":
            yield f"{output.get('ename')}: {output.get('evalue')}"
        else:
            yield from "".join(output.get("data", {}).get("text/plain", "")).splitlines()


def prose_near(nb, index):
    """The Chinese prose of the markdown cells within ``NEARBY`` cells of cell ``index``."""
    cells = nb.cells[max(0, index - NEARBY):index + NEARBY + 1]
    return "\n".join(cell.source for cell in cells if cell.cell_type == "markdown")


def shown_functions(source):
    """The functions a cell prints with ``inspect.getsource(module.function)``."""
    return re.findall(r"inspect\.getsource\(\s*[\w.]*?(\w+)\s*\)", source)


def english_sentences(nb):
    """``(cell index, line, why it is not allowed)`` for every English sentence printed."""
    found = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        near = prose_near(nb, index)
        shown = shown_functions(cell.source)
        for line in output_lines(cell):
            if CHINESE.search(line) or not ENGLISH_SENTENCE.search(line):
                continue
            if line.startswith("python -m "):
                continue
            if shown:
                if all(name in near for name in shown) and CHINESE.search(near):
                    continue
                found.append((index, line, f"source of {shown} without Chinese prose naming it"))
                continue
            library = [keyword for pattern, keyword in LIBRARY_MESSAGES.items() if re.search(pattern, line)]
            if library and library[0] in near and CHINESE.search(near):
                continue
            why = (f"PyTorch's or Python's message, but the prose next to it does not name {library[0]!r}"
                   if library else "an English sentence")
            found.append((index, line, why))
    return found


@pytest.mark.parametrize("path", PATHS, ids=lambda path: path.stem[:2])
def test_the_chinese_notebook_prints_no_english_sentence(path):
    found = english_sentences(nbformat.read(path, as_version=4))
    assert found == [], "\n".join(f"cell {index}: {line[:120]!r} ({why})" for index, line, why in found)


def test_an_english_sentence_is_found():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("说明"),
        nbformat.v4.new_code_cell("print('x')", outputs=[nbformat.v4.new_output(
            "stream", name="stdout", text="saved the model to a file\n已保存\n")])])
    assert english_sentences(nb) == [(1, "saved the model to a file", "an English sentence")]


def test_a_library_message_needs_prose_that_names_it():
    message = ("\tsize mismatch for output.weight: copying a param with shape torch.Size([10, 128]) "
               "from checkpoint, the shape in current model is torch.Size([5, 128]).")
    cell = nbformat.v4.new_code_cell("...", outputs=[nbformat.v4.new_output(
        "stream", name="stdout", text=message + "\n")])
    explained = nbformat.v4.new_markdown_cell("PyTorch 报告 size mismatch：形状不匹配。")
    assert english_sentences(nbformat.v4.new_notebook(cells=[explained, cell])) == []
    unexplained = nbformat.v4.new_markdown_cell("下面的单元格加载权重。")
    assert len(english_sentences(nbformat.v4.new_notebook(cells=[unexplained, cell]))) == 1


@pytest.mark.parametrize("path", PATHS, ids=lambda path: path.stem[:2])
def test_no_space_follows_full_width_punctuation(path):
    """``print("预测相同：", same)`` prints "预测相同： True": the lessons print f-strings instead."""
    nb = nbformat.read(path, as_version=4)
    spaced = [line for cell in nb.cells if cell.cell_type == "code" for line in output_lines(cell)
              if re.search(r"[：，。；）】] ", line)]
    assert spaced == []
