"""Evaluation on a cluster: the chief alone, outside the cluster's strategy.

COCO AP needs every detection of the validation set in one place. Model
Garden's evaluator keeps them on the task that made them, so with each task
evaluating its shard the chief would report the AP of its share only. The
chief therefore evaluates the checkpoint just saved with a model of its own,
on one device, over the whole validation set, exactly as a one-machine job
does (and as `python -m object_detection_algo evaluate` does with the export);
the other tasks wait for its next message meanwhile. Evaluation time does not
shrink with more machines.
"""

import math

import orbit
import tensorflow as tf
from official.core import train_utils

from object_detection_algo.adapters.retinanet_task import RetinaNetTask
from object_detection_algo.training import experiment
from object_detection_algo.training.settings import Settings


def one_device(params, settings: Settings):
    """The job's config with the evaluation batch of one device (the cluster's
    would hold every replica's share) and the same images evaluated."""
    steps = params.trainer.validation_steps
    batch = params.task.validation_data.global_batch_size
    one = experiment.eval_batch_size(settings, 1)
    return params.replace(task={'validation_data': {'global_batch_size': one}},
                          trainer={'validation_steps': steps if steps < 0
                                   else math.ceil(steps * batch / one)})


class ChiefEvaluator:
    """Evaluates checkpoints of the cluster's model on the chief alone."""

    def __init__(self, params, settings: Settings, skip, global_step: tf.Variable,
                 eval_summary_manager):
        """Built outside the strategy's scope: variables, dataset and steps of the
        default (one-device) strategy, so no collective runs while the others wait."""
        params = one_device(params, settings)
        self.steps = params.trainer.validation_steps
        task = RetinaNetTask(params.task, skip={False: skip})
        self.trainer = train_utils.create_trainer(params, task, train=False, evaluate=True)
        self.controller = orbit.Controller(
            strategy=tf.distribute.get_strategy(), evaluator=self.trainer,
            global_step=global_step, eval_summary_manager=eval_summary_manager)

    def evaluate(self, checkpoint_path: str):
        """Model Garden's evaluation outputs (COCO metrics) for the checkpoint."""
        tf.train.Checkpoint(model=self.trainer.model).read(checkpoint_path).expect_partial()
        return self.controller.evaluate(steps=self.steps)
