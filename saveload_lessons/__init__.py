"""The companion package of the lessons on saving and loading PyTorch models.

The lessons are built around two top-level modules, ``helper`` (the data set
and plots) and ``fc_model`` (the network and its training); everything else
they use lives here, one module a job:

- ``checkpoint_io``: saving checkpoints atomically and reading any file safely;
- ``files``: ``atomic_write``, which never leaves half a file;
- ``values``: the checks of plain values that the modules share;
- ``devices``: choosing and checking a device;
- ``launching``: starting a script on several processes with torchrun;
- ``distributed_checkpoints``: folders of distributed checkpoints (DCP);
- ``sharded_files``: a model saved as several safetensors shards and an index, read safely;
- ``resumable_data``: augmented training data whose worker processes resume exactly;
- ``preemption``: a ``SIGTERM`` turned into a request to stop at the end of a step;
- ``retention``: the latest checkpoint and the best K, and how checkpoints are named;
- ``resumable_job``: the training job of lesson 7, which uses all three;
- ``messages``: the language (English or Chinese) the package speaks to a learner;
- ``fsdp_training``: the training script of lesson 5, run on every rank;
- ``exercise_checks``: the checks of the exercises, one module a lesson;
- ``environment_check``: is this machine ready for the lessons?
"""

# The languages of every lesson, and of the messages that learners read
LANGUAGES = ("en", "zh-CN")
