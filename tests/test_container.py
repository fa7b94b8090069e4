"""The image's build files and the tuning specs: linted, schema-checked, and every
tuned parameter accepted by the real entrypoint at both ends of its range."""

import glob
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import ENTRYPOINT, ROOT, job_env
from object_detection_algo.training import flag_table

VENV_BIN = os.path.dirname(sys.executable)
SPECS = sorted(glob.glob(os.path.join(ROOT, 'hparams', '*.yaml')))


def _tool(name):
    path = os.path.join(VENV_BIN, name)
    return path if os.path.exists(path) else shutil.which(name)


def test_dockerfile_passes_hadolint():
    result = subprocess.run([_tool('hadolint'), 'Dockerfile'], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_uses_the_ci_pins_and_a_non_root_user():
    with open(os.path.join(ROOT, 'Dockerfile')) as f:
        text = f.read()
    assert 'pip install --no-cache-dir -r requirements.txt' in text
    assert 'USER 1000' in text
    assert 'ENTRYPOINT ["python3", "/opt/object_detection/entrypoint.py"]' in text
    # The base is an argument (the container test builds on a stand-in); its default is
    # TensorFlow's GPU image for the pinned TensorFlow.
    assert '\nFROM ${BASE_IMAGE}\n' in text
    default = re.search(r'^ARG BASE_IMAGE=tensorflow/tensorflow:(\S+)-gpu$', text, re.M)
    assert default, 'no ARG BASE_IMAGE=tensorflow/tensorflow:<version>-gpu'
    with open(os.path.join(ROOT, 'requirements.txt')) as f:
        tf_pin = next(line for line in f if line.startswith('tensorflow=='))
    assert tf_pin.strip().replace('tensorflow==', '').rstrip('*').rstrip('.') in default[1]


def test_dockerfile_installs_the_packages_before_copying_the_code():
    """So that a code change reuses the packages' layer (tests/container checks it built)."""
    with open(os.path.join(ROOT, 'Dockerfile')) as f:
        text = f.read()
    order = [text.index(s) for s in ('COPY requirements.txt', 'pip install',
                                     'COPY entrypoint.py', 'COPY object_detection_algo/')]
    assert order == sorted(order)


def test_cloudbuild_matches_the_schema():
    result = subprocess.run([_tool('check-jsonschema'), '--builtin-schema', 'vendor.cloudbuild',
                             'cloudbuild.yaml'], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def tuned_parameters(spec):
    """(flag name, [values to try]) from an AI Platform or a Vertex AI spec."""
    if 'trainingInput' in spec:
        for p in spec['trainingInput'].get('hyperparameters', {}).get('params', []):
            values = p.get('categoricalValues') or p.get('discreteValues') or [
                p['minValue'], p['maxValue']]
            yield p['parameterName'], values
    for p in spec.get('studySpec', {}).get('parameters', []):
        value_spec = next(v for k, v in p.items() if k.endswith('ValueSpec'))
        values = value_spec.get('values') or [value_spec['minValue'], value_spec['maxValue']]
        yield p['parameterId'], values


def test_there_are_specs_for_each_caller():
    names = {os.path.basename(s) for s in SPECS}
    assert {'ai_platform_cpu.yaml', 'ai_platform_gpu.yaml', 'ai_platform_tpu.yaml',
            'vertex_custom_job.yaml', 'vertex_hparam_tuning_job.yaml'} <= names


@pytest.mark.parametrize('path', SPECS, ids=os.path.basename)
def test_spec_parameters_are_flags_within_range(path):
    with open(path) as f:
        spec = yaml.safe_load(f)
    hp = spec.get('trainingInput', {}).get('hyperparameters')
    if hp:
        assert hp['goal'] == 'MAXIMIZE' and hp['hyperparameterMetricTag'] == 'AP'
        assert hp['maxTrials'] >= hp['maxParallelTrials'] >= 1
    if 'studySpec' in spec:
        assert spec['studySpec']['metrics'] == [{'metricId': 'AP', 'goal': 'MAXIMIZE'}]
    for name, values in tuned_parameters(spec):
        flag = flag_table.FLAGS_BY_NAME[name]
        for value in values:
            parsed = flag_table.parse_value(flag, str(value))
            assert (not flag.choices or parsed in flag.choices), (name, value)
            assert (flag.check is None or flag.check(parsed)), (name, value)


def _spec_runs():
    for path in SPECS:
        with open(path) as f:
            params = list(tuned_parameters(yaml.safe_load(f)))
        if params:
            for end in (0, -1):
                yield pytest.param(path, [(n, v[end]) for n, v in params],
                                   id=f'{os.path.basename(path)}-{"min" if end == 0 else "max"}')


@pytest.mark.parametrize('path, values', list(_spec_runs()))
def test_entrypoint_accepts_each_end_of_each_range(path, values, tmp_path):
    """Started as the tuning service would; the job gets past flag validation and
    stops at the (missing) data with exit status 3, not 2."""
    args = [f'--training_data_path={tmp_path}/none-*', f'--validation_data_path={tmp_path}/none-*',
            '--num_classes=3', '--max_steps=2000', f'--job-dir={tmp_path}/out']
    args += [f'--{name}={value}' for name, value in values]
    result = subprocess.run([sys.executable, ENTRYPOINT, *args], cwd=ROOT, capture_output=True,
                            text=True, env=job_env(tmp_path / 'hp' / 'm'), timeout=300)
    assert result.returncode == 3, result.stderr[-2000:]
    assert 'matches no files' in result.stderr
