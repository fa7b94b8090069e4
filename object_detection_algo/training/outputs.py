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


def json_variable(env: Mapping[str, str], name: str) -> dict:
    """A caller's JSON variable (TF_CONFIG, CLUSTER_SPEC) as a dict ({} when unset);
    a UsageError naming it when it is not a JSON object."""
    text = env.get(name) or ''
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as e:
        raise UsageError(f'{name} is not valid JSON ({e}): {text[:200]!r}. AI Platform and '
                         'Vertex AI set it themselves; if you set it, give a JSON object such as '
                         '{"task": {"type": "master", "index": 0}}, or unset it.') from None
    if not isinstance(value, dict):
        raise UsageError(f'{name} must be a JSON object, not {text[:200]!r}.')
    return value


def tf_config(env: Mapping[str, str]) -> dict:
    """TF_CONFIG as a dict; a UsageError when it or its "task" is not a JSON object,
    since a tuning trial would lose its trial id and write into another trial's folders."""
    value = json_variable(env, 'TF_CONFIG')
    if not isinstance(value.get('task') or {}, dict):
        raise UsageError(f'TF_CONFIG must be a JSON object with an object "task", not '
                         f'{env["TF_CONFIG"][:200]!r}.')
    return value


def trial_id(env: Mapping[str, str]) -> Optional[str]:
    """AI Platform puts the trial in TF_CONFIG task.trial; Vertex in CLOUD_ML_TRIAL_ID."""
    task = tf_config(env).get('task') or {}
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
