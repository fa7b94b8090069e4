"""Times one tiny training job (the tests' tiny flags, tests/job_runner.py) with
its data and --job-dir on local disk, then on gs:// (fake-gcs-server behind the
tests' TLS proxy, tests/gcs_harness.py), and prints both wall times and the
gs:// run's HTTP requests by kind and by folder.

  .venv/bin/python bench/gcs_vs_local.py
"""

import collections
import os
import subprocess
import urllib.parse
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from object_detection_algo.data import synthetic  # noqa: E402
from tests.gcs_harness import GcsHarness, object_path  # noqa: E402
from tests.job_runner import ENTRYPOINT, TINY_FLAGS, job_env  # noqa: E402

FLAGS = TINY_FLAGS + ['--max_steps=4', '--train_steps_per_eval=2',
                      '--max_num_bboxes_in_prediction=20']


def timed_job(args, env, log_path) -> float:
    start = time.time()
    with open(log_path, 'w') as log:
        code = subprocess.call([sys.executable, ENTRYPOINT, *args], env=env, cwd=ROOT,
                               stdout=log, stderr=subprocess.STDOUT)
    if code:
        sys.exit(f'job failed ({code}): see {log_path}')
    return time.time() - start


def kind(request) -> str:
    """What a JSON-API or XML-API request does, from its method and path."""
    parts = urllib.parse.urlsplit(request.path)
    if request.method in ('POST', 'PUT') and ('upload' in parts.path or 'upload_id' in parts.query):
        return 'upload'
    if request.method == 'DELETE':
        return 'delete'
    if request.method == 'GET' and request.host.startswith('storage.googleapis.com'):
        return 'read data'
    if request.method == 'GET' and parts.path.endswith('/o'):
        return 'list'
    if request.method == 'GET' and 'alt=media' in parts.query:
        return 'read data'
    return f'{request.method} metadata' if request.method == 'GET' else request.method


def folder(request) -> str:
    """The part of the job an object belongs to: data, checkpoints, model, ..."""
    name = (object_path(request.path) or '?').split('/')
    return name[2] if len(name) > 2 and name[1] == 'run' else name[1] or '(bucket)'


def main() -> None:
    tmp = tempfile.mkdtemp(prefix='gcs_vs_local_')
    data = synthetic.write_dataset(os.path.join(tmp, 'data'), num_train=32, num_val=8,
                                   size=128, seed=7)
    harness = GcsHarness(os.path.join(tmp, 'gcs'))
    try:
        harness.bucket('bench')
        harness.upload_dir(os.path.join(tmp, 'data'), 'bench', 'data')
        local = timed_job([f'--training_data_path={data["train"]}',
                           f'--validation_data_path={data["val"]}',
                           f'--job-dir={tmp}/local_run'] + FLAGS,
                          job_env(f'{tmp}/hp1/output.metrics'), f'{tmp}/local.log')
        first = len(harness.faults.requests)
        remote = timed_job(['--training_data_path=gs://bench/data/train-*',
                            '--validation_data_path=gs://bench/data/val-*',
                            '--job-dir=gs://bench/run'] + FLAGS,
                           job_env(f'{tmp}/hp2/output.metrics', **harness.env),
                           f'{tmp}/gcs.log')
        requests = harness.faults.requests[first:]
    finally:
        harness.close()
    print(f'local disk: {local:.1f} s')
    print(f'gs:// (emulator over the TLS proxy): {remote:.1f} s, {len(requests)} HTTP requests')
    for title, key in (('by kind', kind), ('by folder', folder)):
        counts = collections.Counter(key(r) for r in requests)
        print(f'  {title}: ' + ', '.join(f'{k} {n}' for k, n in counts.most_common()))
    print(f'logs in {tmp}')


if __name__ == '__main__':
    main()
