"""The checks of lessons 2 and 4 fail when what they check is broken.

Each test runs the English notebook with one piece of its source changed (``mutants.py``) and
sees the very assertion that is about that piece fail. The unchanged notebooks, and so the same
assertions on the real code, run under nbval with every notebook.
"""

import pytest
from mutants import assert_fails_at, run_mutant

LESSON_2 = "02-checkpoints-and-resuming-training"
LESSON_4 = "04-checkpoints-from-elsewhere"


@pytest.fixture
def quick_2(data_dir):
    return {"epochs": 3, "stop_after": 2, "train_size": 3200, "data_dir": data_dir}


@pytest.fixture
def quick_4(data_dir):
    return {"epochs": 1, "finetune_steps": 20, "train_size": 12800, "data_dir": data_dir}


def test_lesson_2_best_checkpoint_saved_at_the_wrong_moment(quick_2, tmp_path):
    # The bug: best.pt gets the final weights, with the step and the accuracy of the best report.
    wrong_moment = ("resume=True, best_path=best_path)\n"
                    "best_record = checkpoint_io.load_checkpoint(best_path, fc_model.NETWORK)\n"
                    "checkpoint_io.save_checkpoint(best_path, model_c, optimizer_c, "
                    "step=best_record['step'], best_accuracy=best_record['best_accuracy'])")
    error = run_mutant(LESSON_2, "resume=True, best_path=best_path)", wrong_moment, quick_2, tmp_path)
    assert_fails_at(error, "assert best_file_accuracy == best_accuracy")


def test_lesson_4_optimizer_state_must_follow_the_parameters(quick_4, tmp_path):
    # The model stays on the CPU: nothing moves the state to the meta device.
    error = run_mutant(LESSON_4, '.to("meta")', '.to("cpu")', quick_4, tmp_path)
    assert_fails_at(error, 'assert placement == {"step": "cpu"')


def test_lesson_4_warm_start_from_random_weights(quick_4, tmp_path):
    # The "warm" network gets hidden layers drawn at random from the seed that also made those
    # of the network trained from scratch: both start equal, so neither can be ahead.
    error = run_mutant(LESSON_4, "compatible = {name: tensor for name, tensor in model.state_dict()",
                  "compatible = {name: tensor for name, tensor in (torch.manual_seed(seed) and "
                  "fc_model.Network(784, 10, [512, 256, 128])).state_dict()",
                  quick_4, tmp_path)
    assert_fails_at(error, "assert warm_accuracy > scratch_accuracy")


@pytest.mark.parametrize("deleted, assertion", [
    ('scheduler_2.load_state_dict(saved["scheduler"])', "assert scheduler_2.last_epoch"),
    ('optimizer_2.load_state_dict(saved["student_optimizer"])', "assert len(optimizer_2.state)"),
    ('scaler_2.load_state_dict(saved["scaler"])', "assert scaler_2.state_dict() =="),
])
def test_lesson_4_several_objects_must_each_be_restored(quick_4, tmp_path, deleted, assertion):
    error = run_mutant(LESSON_4, deleted, "pass", quick_4, tmp_path)
    assert_fails_at(error, assertion)
