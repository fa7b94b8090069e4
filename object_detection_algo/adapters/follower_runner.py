"""Model Garden's experiment runner for a cluster task other than the chief:
the checkpoints every task must save (a save is a collective) go to this
task's own folder, and it starts from the chief's checkpoint, not from its
own folder.

Model Garden gives such a task a `tempfile.mkdtemp()` folder nobody removes,
and lets it restore from there (so from nothing after a restart). Its
checkpoint manager must also count from the chief's step: the manager saves
every `checkpoint_interval` steps after the last checkpoint it knows, and a
task that saves when the chief does not breaks the collectives.

Model Garden internals touched: `OrbitExperimentRunner._maybe_build_checkpoint_manager`
(the hook its docstring names for another manager) and the `trainer`, `params`
and `model_dir` it uses there. tests/test_adapters.py fails if the hook goes away.
"""

from typing import Optional

import tensorflow as tf
from official.core import train_lib


class FollowerRunner(train_lib.OrbitExperimentRunner):

    def __init__(self, *args, resume_from: Optional[str] = None, resume_step: int = 0,
                 **kwargs):
        """resume_from: the chief's checkpoint (None for a new job), at resume_step."""
        self._resume_from = resume_from
        self._resume_step = resume_step
        super().__init__(*args, **kwargs)

    def _maybe_build_checkpoint_manager(self) -> tf.train.CheckpointManager:
        trainer = self.trainer

        def start():  # Orbit calls it inside the strategy's scope, on an empty folder
            if self._resume_from:
                trainer.checkpoint.restore(self._resume_from)
            else:
                trainer.initialize()  # the initial weights, as on the chief

        return tf.train.CheckpointManager(
            trainer.checkpoint, directory=self.model_dir, max_to_keep=1,
            step_counter=trainer.global_step,
            checkpoint_interval=self.params.trainer.checkpoint_interval,
            init_fn=start, last_checkpoint_step=self._resume_step or None)
