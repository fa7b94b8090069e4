"""Where the job writes: output root, trial id, the Vertex AI variables and the
hypertune file (docs/contract.md, "What the job writes"). Pure Python, no
TensorFlow."""

import dataclasses
import json
import posixpath
from typing import Mapping, Optional

from object_detection_algo.errors import UsageError

# Where cloudml-hypertune writes when CLOUD_ML_HP_METRIC_FILE is not set.
DEFAULT_METRICS_FILE = '/tmp/hypertune/output.metrics'

@dataclasses.dataclass(frozen=True)
class OutputDirs:
    checkpoints: str  # training checkpoints; a restart resumes from here
    model: str  # the best SavedModel
    tensorboard: str  # summaries: <tensorboard>/train and <tensorboard>/validation
    trial: Optional[str]  # hyperparameter tuning trial id, None outside tuning
    metrics_file: str = DEFAULT_METRICS_FILE  # the hypertune lines (CLOUD_ML_HP_METRIC_FILE)


def trial_id(env: Mapping[str, str]) -> Optional[str]:
    """AI Platform puts the trial in TF_CONFIG task.trial; Vertex in CLOUD_ML_TRIAL_ID."""
    try:
        task = json.loads(env.get('TF_CONFIG') or '{}').get('task') or {}
    except (ValueError, AttributeError):
        task = {}
    trial = str(task.get('trial') or '').strip()
    return trial or (env.get('CLOUD_ML_TRIAL_ID') or '').strip() or None


def _strip(path: str) -> str:
    return path.rstrip('/') if path not in ('/', '') else path


def resolve(job_dir: Optional[str], env: Mapping[str, str]) -> OutputDirs:
    trial = trial_id(env)
    tensorboard = _strip(env.get('AIP_TENSORBOARD_LOG_DIR') or '')
    if job_dir:
        root = _strip(job_dir)
        suffix = [f'trial_{trial}'] if trial else []
        checkpoints = posixpath.join(root, 'checkpoints', *suffix)
        model = posixpath.join(root, 'model', *suffix)
    elif env.get('AIP_MODEL_DIR'):
        # Vertex names the folders directly, trial level included.
        model = _strip(env['AIP_MODEL_DIR'])
        checkpoints = _strip(env.get('AIP_CHECKPOINT_DIR') or '') or posixpath.join(
            posixpath.dirname(model), 'checkpoints')
    else:
        raise UsageError(
            '--job-dir is required: give an output folder (local or gs://), or run '
            'on Vertex AI, which sets AIP_MODEL_DIR.')
    return OutputDirs(checkpoints=checkpoints, model=model,
                      tensorboard=tensorboard or checkpoints, trial=trial,
                      metrics_file=env.get('CLOUD_ML_HP_METRIC_FILE') or DEFAULT_METRICS_FILE)
