"""cloudml-hypertune's reporter, told its file and trial directly instead of
through os.environ, and resuming the lines an earlier run of the same trial
wrote (hypertune rewrites its whole file from memory on every report, so a
restarted job would otherwise erase them).

hypertune internals touched: `HyperTune.__init__` is not called (it reads
CLOUD_ML_HP_METRIC_FILE and CLOUD_ML_TRIAL_ID from the environment); the three
attributes it sets, `metric_path`, `trial_id` and `metrics_queue`, are set here
instead. `tests/test_adapters.py` checks they are still the ones it sets.
"""

import collections
import json
import os

import hypertune

# hypertune keeps this many lines in its file.
_MAX_LINES = 100


class HyperTuneFile(hypertune.HyperTune):

    def __init__(self, metric_path: str, trial_id: str):  # pylint: disable=super-init-not-called
        self.metric_path = os.path.abspath(metric_path)
        self.trial_id = trial_id
        self.metrics_queue = collections.deque(maxlen=_MAX_LINES)
        os.makedirs(os.path.dirname(self.metric_path), exist_ok=True)
        if os.path.exists(self.metric_path):
            with open(self.metric_path) as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue
                    if entry.get('trial') == str(trial_id):
                        self.metrics_queue.append(entry)

    def report_ap(self, ap: float, step: int) -> None:
        self.report_hyperparameter_tuning_metric(
            hyperparameter_metric_tag='AP', metric_value=ap, global_step=step)
