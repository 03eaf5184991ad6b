"""The checks of lessons 1 and 3 fail when what they check is broken (see mutants.py).

Lesson 1: the fast loaders must give the very same batches as the classic ones, in the same
order, for a whole epoch: a loader that shuffles differently, skips a batch in the middle or
stops one batch early passes a check of the first batch, but not the lesson's.

Lesson 3: both safe loaders must refuse the planted file, and the payload's marker file must
not exist. No mutant runs the payload: each one either loads a clean file of our own in place
of the planted one (so the loader "accepts" it) or creates the marker itself.

Each test runs the English notebook once, with the smallest parameters the lesson allows, up to the
failing check. The unchanged lessons (and so their new assertions) run under nbval with every
notebook.
"""

import pytest
from mutants import assert_fails_at, run_mutant

LESSON_1 = "01-saving-and-loading-models"
LESSON_3 = "03-whole-models-safe-loading-and-formats"

EPOCH_CHECK = "assert checked == len(order) == len(trainloader)"
REFUSAL_CHECK = "assert refusals == ['torch.load', 'checkpoint_io']"


@pytest.fixture
def quick(data_dir):
    return {"epochs": 1, "data_dir": data_dir}


# --------------------------------------------------------------------------- lesson 1

@pytest.mark.parametrize("original, replacement, message", [
    # shuffled differently: another random state for the fast loader
    ("torch.manual_seed(1)\n    checked = 0", "torch.manual_seed(2)\n    checked = 0",
     "batch 0 differs"),
    # a batch in the middle skipped: the first batch is still the same
    ("zip(order, fast_trainloader)",
     "zip(order, (batch for number, batch in enumerate(fast_trainloader) if number != 100))",
     "batch 100 differs"),
    # the last batch missing: every batch that comes is right
    ("zip(order, fast_trainloader)", "zip(order, itertools.islice(fast_trainloader, len(order) - 1))", ""),
], ids=["shuffled-differently", "batch-skipped", "last-batch-missing"])
def test_lesson_1_checks_every_batch_of_an_epoch(quick, tmp_path, original, replacement,
                                                 message):
    error = run_mutant(LESSON_1, original, replacement, quick, tmp_path)
    assert_fails_at(error, EPOCH_CHECK)
    assert message in error.evalue


# --------------------------------------------------------------------------- lesson 3

@pytest.mark.parametrize("original, replacement, message", [
    # torch.load "accepts" the file: it is handed a clean file of ours instead
    ("    torch.load(evil_path, weights_only=True)\n",
     "    torch.save({}, model_dir / 'clean.pth'); "
     "torch.load(model_dir / 'clean.pth', weights_only=True)\n",
     "only these refused the file: ['checkpoint_io']"),
    # checkpoint_io "accepts" it
    ("checkpoint_io.load_checkpoint(evil_path, fc_model.NETWORK)",
     "checkpoint_io.save_safetensors(model_dir / 'clean.safetensors', model); "
     "checkpoint_io.load_checkpoint(model_dir / 'clean.safetensors', fc_model.NETWORK)",
     "only these refused the file: ['torch.load']"),
    # the marker exists (as if the payload had run): created by the mutant, not by a payload
    ("marker.unlink(missing_ok=True)", "marker.touch()", "the payload ran!"),
], ids=["torch-load-accepts", "checkpoint-io-accepts", "marker-exists"])
def test_lesson_3_asserts_that_the_planted_file_is_refused(quick, tmp_path, original,
                                                           replacement, message):
    error = run_mutant(LESSON_3, original, replacement, quick, tmp_path)
    assert_fails_at(error, REFUSAL_CHECK)
    assert message in error.evalue
