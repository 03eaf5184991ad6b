"""The main job's arguments (tools/run_notebooks.py): a bad name, value or folder stops it
before anything runs, with one usage message (exit status 2) that says what to give instead,
never a traceback or a hang; and the lessons only write inside the output folder.

No notebook runs here: ``nothing_runs`` makes running one, or preparing the data set, fail.
"""

import reprlib

import papermill
import pytest

from conftest import REPO
from tools import run_notebooks

EN_PATHS = run_notebooks.notebook_paths(["en"])
LESSON_2 = REPO / "notebooks" / "en" / "02-checkpoints-and-resuming-training.ipynb"
# A YAML "billion laughs" in 378 bytes: nine lists of nine references each, 9**9 items in all
ALIAS_BOMB = "[" + ", ".join(["&a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"] + [
    f"&{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]" for i in range(8)]) + "]"


@pytest.fixture
def nothing_runs(monkeypatch):
    """Running a notebook or preparing the data set fails the test: the checks come first."""
    def went_on(*args, **kwargs):
        raise AssertionError("the main job went on past its checks")

    monkeypatch.setattr(run_notebooks, "run_notebook", went_on)
    monkeypatch.setattr(run_notebooks.helper, "prepare_fashion_mnist", went_on)


@pytest.fixture
def recorded(monkeypatch):
    """Run the main job without running a notebook: ``{path: parameters}`` it would run with."""
    runs = {}

    def run_notebook(path, output_dir, parameters=None):
        runs[path] = parameters
        return 1.0, None, output_dir / path.name

    monkeypatch.setattr(run_notebooks, "run_notebook", run_notebook)
    monkeypatch.setattr(run_notebooks.helper, "prepare_fashion_mnist", lambda data_dir: None)
    return runs


def usage_error(capsys, *argv):
    """The message of the usage error ``argv`` must end in (exit status 2)."""
    with pytest.raises(SystemExit) as info:
        run_notebooks.main(list(argv))
    assert info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("usage: ") and "Traceback" not in error
    return error.splitlines()[-1]


# --------------------------------------------------------------------------- values

@pytest.mark.parametrize("value", ["abc", "null", "True", "3.5", "1e999", "[1, 2", "²",
                                   "!!python/object/apply:os.system ['true']", ALIAS_BOMB,
                                   "{[]: 1}"],
                         ids=["text", "null", "bool", "float", "inf", "unclosed", "superscript",
                              "yaml-tag", "alias-bomb", "unhashable-key"])
def test_a_value_of_the_wrong_type_is_a_usage_error(value, tmp_path, capsys, nothing_runs):
    error = usage_error(capsys, "-p", "epochs", value, "--output", str(tmp_path / "out"))
    assert "epochs takes a value of type int, like its default: for example -p epochs 2" in error
    assert not (tmp_path / "out").exists()


def test_values_are_read_as_the_type_of_the_default(tmp_path, recorded):
    """Text parameters take the text as it is: a folder may be called 2024."""
    assert run_notebooks.main(["2", "--language", "en", "-p", "epochs", "3", "-p", "device", "cpu",
                               "-p", "checkpoint_dir", "2024", "--output", str(tmp_path)]) == 0
    assert recorded[LESSON_2] == {"epochs": 3, "device": "cpu", "checkpoint_dir": "2024"}


def test_a_relative_data_dir_means_the_folder_it_names_from_here(tmp_path, recorded, monkeypatch):
    """The notebooks run in their output folders; they must read the data the job prepared."""
    monkeypatch.chdir(tmp_path)
    assert run_notebooks.main(["2", "--language", "en", "-p", "data_dir", "data",
                               "--output", str(tmp_path / "out")]) == 0
    assert recorded[LESSON_2]["data_dir"] == str(tmp_path / "data")


def test_a_data_dir_that_is_not_text_is_refused():
    with pytest.raises(run_notebooks.UsageError,
                       match="data_dir takes a value of type str, like its default"):
        run_notebooks.parameters_for(EN_PATHS, {"data_dir": None})


# --------------------------------------------------------------------------- folders the lessons write

@pytest.mark.parametrize("name, value", [
    ("checkpoint_dir", "/"),
    ("checkpoint_dir", "../elsewhere"),
    ("checkpoint_dir", "checkpoints/../../.."),
    ("model_dir", "~/models"),
    ("checkpoint_dir", "link-out/checkpoints"),
])
def test_a_lesson_never_writes_outside_its_output_folder(name, value, tmp_path, capsys, nothing_runs):
    output = tmp_path / "out"
    (output / "en").mkdir(parents=True)
    (output / "en" / "link-out").symlink_to(tmp_path)
    error = usage_error(capsys, "-p", name, value, "--output", str(output))
    assert (f"-p {name} {value!r}: the notebook writes and deletes files in {name}, so it must be "
            f"a folder inside the notebook's output folder {output / 'en'}") in error
    assert "To write elsewhere, choose --output." in error


@pytest.mark.parametrize("value", ["run-2", "runs/2", "checkpoints/../run-2", "."])
def test_a_folder_inside_the_output_folder_is_accepted(value, tmp_path):
    assert run_notebooks.check_output_paths({"checkpoint_dir": value}, tmp_path) is None


def test_run_notebook_refuses_a_folder_outside_too(tmp_path, monkeypatch):
    def executed(*args, **kwargs):
        raise AssertionError("the notebook ran")

    monkeypatch.setattr(papermill, "execute_notebook", executed)
    with pytest.raises(run_notebooks.UsageError, match="checkpoint_dir '/'"):
        run_notebooks.run_notebook(LESSON_2, tmp_path / "out", {"checkpoint_dir": "/"})
    assert not (tmp_path / "out").exists()


def test_every_folder_a_lesson_writes_is_checked():
    """The parameters whose help says the notebook writes there are the ones checked."""
    written = {name for path in EN_PATHS
               for name, info in papermill.inspect_notebook(str(path)).items() if "writes" in info["help"]}
    assert written == set(run_notebooks.OUTPUT_PATH_PARAMETERS)


@pytest.mark.parametrize("under", ["", "sub"])
def test_an_output_that_is_a_file_is_a_usage_error(under, tmp_path, capsys, nothing_runs):
    (tmp_path / "file").write_text("not a folder")
    error = usage_error(capsys, "--output", str(tmp_path / "file" / under))
    assert error.endswith(f"--output: {tmp_path / 'file'} is a file, not a folder. Name a folder for "
                          "the executed notebooks (it is created when it does not exist).")


# --------------------------------------------------------------------------- names

@pytest.mark.parametrize("name", ["²", "1" * 5000, "a" * 5000 + ".ipynb", "~no-such-user/x.ipynb"],
                         ids=["superscript", "long-number", "long-name", "unknown-user"])
def test_a_name_that_is_no_notebook_is_a_usage_error(name, capsys, nothing_runs):
    error = usage_error(capsys, name)
    assert f"no notebook matches {reprlib.repr(name)}. Name a lesson by its number" in error
    assert all(path.stem in error for path in EN_PATHS)



@pytest.mark.parametrize("name", ["saving-and-loding", "01-saving-and-loading-model",
                                  "saving-and-loading-model.ipynb"])
def test_a_name_one_letter_off_gets_a_did_you_mean(name, capsys, nothing_runs):
    error = usage_error(capsys, name)
    assert f"no notebook matches {reprlib.repr(name)}. Did you mean '01-saving-and-loading-models'? " in error


def test_a_parameter_only_other_lessons_have_names_them(capsys, nothing_runs):
    """Lesson 1 has no train_size; lessons 2, 4, 5 and 6 do (each lesson's parameters cell)."""
    having = [int(path.stem[:2]) for path in EN_PATHS
              if "train_size" in run_notebooks.notebook_parameters(path)]
    assert 1 not in having and len(having) > 1
    error = usage_error(capsys, "1", "-p", "train_size", "3200")
    assert error.endswith(
        f"the selected lesson 1 has no parameter 'train_size'; lessons "
        f"{', '.join(map(str, having[:-1]))} and {having[-1]} have it: select one of them by its "
        f"number, for example `{having[0]} -p train_size 3200`")


def test_a_parameter_of_one_other_lesson_is_named_too(capsys, nothing_runs):
    error = usage_error(capsys, "1", "3", "-p", "stop_after", "1")
    assert error.endswith("the selected lessons 1 and 3 have no parameter 'stop_after'; lesson 2 "
                          "has it: select it by its number, for example `2 -p stop_after 1`")


def test_a_folder_this_user_cannot_write_is_a_usage_error(capsys, nothing_runs):
    error = usage_error(capsys, "1", "--output", "/proc/self/nonexistent")
    assert "this user may not create" in error


def test_a_path_with_a_nul_character_is_a_usage_error(tmp_path, capsys, nothing_runs):
    error = usage_error(capsys, "2", "-p", "checkpoint_dir", "a\0b", "--output", str(tmp_path))
    assert "must be a folder inside the notebook's output folder" in error


def test_a_home_folder_this_machine_lacks_stops_the_job_with_one_message(tmp_path, capsys,
                                                                         monkeypatch):
    monkeypatch.setattr(run_notebooks, "run_notebook", None)  # nothing may run
    assert run_notebooks.main(["1", "-p", "data_dir", "~nosuchuser/data",
                               "--output", str(tmp_path)]) == 2
    assert "starts with a home folder this machine does not know" in capsys.readouterr().err


# --------------------------------------------------------------------------- recording the run times

@pytest.mark.parametrize("argv", [["--record", "1"], ["--record", "--quick"],
                                  ["--record", "--language", "en"], ["--record", "-p", "epochs", "1"]])
def test_only_a_full_run_with_the_defaults_is_recorded(argv, capsys, nothing_runs):
    assert "--record keeps the times of a full run with the default parameters" in usage_error(capsys, *argv)


def test_a_full_run_records_every_notebooks_time(tmp_path, recorded, monkeypatch):
    written = []
    monkeypatch.setattr(run_notebooks, "record_run_times", lambda times: written.append(times) or [])
    assert run_notebooks.main(["--record", "--output", str(tmp_path)]) == 0
    assert written == [{language: {path.stem: 1.0 for path in run_notebooks.notebook_paths([language])}
                        for language in run_notebooks.LANGUAGES}]
