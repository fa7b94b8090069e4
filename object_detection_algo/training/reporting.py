"""Telling people how training goes: a readable progress line every few
steps, and a warning when a loop is too long for a preemption notice. (The
tuning service's AP line is written by adapters/hypertune_file.py.)"""

import time
from typing import Dict

from absl import logging


# Spot/preemptible VMs get about 30 s between SIGTERM and the end; the job
# saves only between loops, so a loop must fit in that with a save after it.
LONG_LOOP_SECONDS = 20.0


class ProgressLog:
    """An orbit train action: one line per loop with loss, learning rate,
    images/s and ETA; once, a warning when a loop is too long to end within a
    preemption notice."""

    def __init__(self, global_step, max_steps: int, batch_size: int,
                 long_loop_seconds: float = LONG_LOOP_SECONDS):
        self._global_step = global_step
        self._max_steps = max_steps
        self._batch_size = batch_size
        self._long_loop_seconds = long_loop_seconds
        self._last = None
        self._loops = 0  # the first loop includes tracing: not timed for the warning
        self._warned = False

    def restart_clock(self) -> None:
        """Evaluation time is not training time."""
        self._last = (int(self._global_step.numpy()), time.time())

    def __call__(self, output: Dict) -> None:
        step, now = int(self._global_step.numpy()), time.time()
        if self._last is None:
            self._last = (0, now)
        last_step, last_time = self._last
        steps_per_s = (step - last_step) / max(now - last_time, 1e-9)
        self._last = (step, now)
        loss = float(output.get('total_loss', float('nan')))
        lr = float(output.get('learning_rate', float('nan')))
        eta = (self._max_steps - step) / steps_per_s if steps_per_s > 0 else float('inf')
        logging.info('step %d/%d | loss %.4f | lr %.5f | %.2f steps/s, %.1f images/s | ETA %s',
                     step, self._max_steps, loss, lr, steps_per_s,
                     steps_per_s * self._batch_size, _duration(eta))
        self._loops += 1
        seconds = now - last_time
        if (self._loops > 1 and not self._warned and step - last_step > 1
                and seconds > self._long_loop_seconds):
            self._warned = True
            logging.warning(
                'A loop of %d steps took %.0f s. On SIGTERM (preemption) the job saves a '
                'checkpoint only when the current loop ends; spot and preemptible VMs give '
                'about 30 s. Lower --log_every_steps (about %d here) if yours may be preempted.',
                step - last_step, seconds,
                max(1, int((step - last_step) * self._long_loop_seconds / seconds)))


def _duration(seconds: float) -> str:
    if seconds == float('inf'):
        return '?'
    seconds = int(seconds)
    return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s'
