"""Training across machines: the real entrypoint started once per task, as AI
Platform and Vertex AI start it, with TF_CONFIG naming a cluster of local
processes on 127.0.0.1 (free ports), on CPU, with the tiny model.

The cluster trains as one (the step advances once per global step), only the
chief writes (one model, one hypertune line per evaluation, the others' scratch
folders removed), the chief's AP is what `evaluate` gives on its export; a
SIGTERM on any task stops all after a checkpoint, a killed task stops the rest
with a clear error, and a restart of every task resumes from the chief's
checkpoint. What cannot be started is refused before training, with the same
exit status on every task."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT, TINY_FLAGS, data_flags, job_env, start_job
from job_runner import free_ports
from object_detection_algo.adapters.coco_metrics import COCO_METRICS
from object_detection_algo.data import synthetic

# A task's start here: TensorFlow and Model Garden imports, the cluster, the model.
START_SECONDS = 300
# A port on which nothing listens.
DEAD_PROXY = 'http://127.0.0.1:9'


def cluster_envs(tmp_path, caller='ai_platform', workers=1):
    """One environment per task, chief first, as the caller writes them."""
    ports = free_ports(1 + workers)
    hosts = [f'127.0.0.1:{p}' for p in ports]
    chief = 'master' if caller == 'ai_platform' else 'chief'
    spec = {chief: hosts[:1], 'worker': hosts[1:]}
    tasks = [(chief, 0)] + [('worker', i) for i in range(workers)]
    envs = []
    for task_type, index in tasks:
        name = f'{task_type}{index}'
        extra = {'TF_CONFIG': json.dumps({'cluster': spec, 'environment': 'cloud',
                                          'task': {'type': task_type, 'index': index}}),
                 # Each task's own temporary folder: a follower's scratch must be gone after.
                 'TMPDIR': str(tmp_path / 'tmp' / name),
                 # A proxy for HTTPS in the environment (as for Cloud Storage behind one,
                 # or this suite's GCS harness) must not carry the tasks' own traffic.
                 'https_proxy': DEAD_PROXY, 'HTTPS_PROXY': DEAD_PROXY, 'http_proxy': DEAD_PROXY}
        if caller == 'vertex':
            pools = {'workerpool0': hosts[:1], 'workerpool1': hosts[1:]}
            pool = 'workerpool0' if task_type == 'chief' else 'workerpool1'
            extra['CLUSTER_SPEC'] = json.dumps({'cluster': pools,
                                                'task': {'type': pool, 'index': index}})
        os.makedirs(extra['TMPDIR'], exist_ok=True)
        envs.append(job_env(tmp_path / 'hp' / name / 'output.metrics', **extra))
    return envs


class Cluster:
    """The processes of one start of the cluster, and their logs."""

    def __init__(self, args, envs, folder, name, extra=None):
        """extra: more arguments for some tasks, {task number: [args]}."""
        self.logs = [folder / f'{name}_task{i}.txt' for i in range(len(envs))]
        self.procs = [start_job(args + (extra or {}).get(i, []), env, log)
                      for i, (env, log) in enumerate(zip(envs, self.logs))]

    def log(self, i):
        with open(self.logs[i]) as f:
            return f.read()

    def wait(self, timeout=START_SECONDS + 300):
        deadline = time.time() + timeout
        codes = []
        for proc in self.procs:
            try:
                codes.append(proc.wait(timeout=max(1, deadline - time.time())))
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError('the cluster did not end:\n' + '\n'.join(
                    self.log(i)[-2000:] for i in range(len(self.procs))))
        return codes

    def wait_for(self, i, pattern, timeout=START_SECONDS):
        deadline = time.time() + timeout
        while not re.search(pattern, self.log(i)):
            assert all(p.poll() is None for p in self.procs), '\n'.join(
                self.log(k)[-3000:] for k in range(len(self.procs)))
            assert time.time() < deadline, self.log(i)[-3000:]
            time.sleep(0.2)

    def kill(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def hypertune_lines(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def losses(log):
    """{step: loss} from the progress lines."""
    return {int(m.group(1)): m.group(2) for m in re.finditer(r'step (\d+)/\d+ \| loss (\S+)', log)}


def latest_step(checkpoint_dir):
    path = tf.train.latest_checkpoint(str(checkpoint_dir))
    return int(path.rsplit('-', 1)[1]) if path else 0


def test_the_cluster_trains_as_one_and_only_the_chief_writes(shapes_data, tmp_path):
    out = tmp_path / 'out'
    envs = cluster_envs(tmp_path, 'ai_platform')
    args = data_flags(shapes_data) + TINY_FLAGS + [
        f'--job-dir={out}', '--max_steps=4', '--train_steps_per_eval=2',
        '--max_num_bboxes_in_prediction=20', '--nms_score_threshold=0']
    start = time.time()
    cluster = Cluster(args, envs, tmp_path, 'run')
    codes = cluster.wait()
    print(f'2 tasks, 4 steps, 2 evaluations: {time.time() - start:.0f} s')
    chief, worker = cluster.log(0), cluster.log(1)
    assert codes == [0, 0], chief[-3000:] + worker[-3000:]

    assert 'Devices: CPU on a cluster of 2 tasks (master 1, worker 1, from TF_CONFIG): this ' \
           'task is master 0 (the chief, which writes); 2 replicas in all, ' \
           'MultiWorkerMirroredStrategy.' in chief
    assert 'this task is worker 0; 2 replicas in all' in worker
    assert 'Training data over 2 tasks: each reads its share of the 2 files' in chief
    # One training: the step advances once per global step, and both tasks see the same
    # loss at each step (the gradients of both shares, all-reduced).
    assert latest_step(out / 'checkpoints') == 4
    assert sorted(losses(chief)) == sorted(losses(worker)) == [1, 2, 3, 4]
    assert losses(chief) == losses(worker)

    # One writer.
    assert sorted(p.name for p in out.iterdir()) == ['checkpoints', 'model']
    with open(out / 'checkpoints' / 'evaluations.json') as f:
        evaluations = json.load(f)['evaluations']
    assert [e['step'] for e in evaluations] == [2, 4]
    lines = hypertune_lines(tmp_path / 'hp' / 'master0' / 'output.metrics')
    assert [line['global_step'] for line in lines] == ['2', '4']
    assert hypertune_lines(tmp_path / 'hp' / 'worker0' / 'output.metrics') is None
    assert 'eval at step 2/4' in chief and 'eval at step' not in worker
    assert 'Done: the chief (master 0) ended the job.' in worker
    assert os.listdir(tmp_path / 'tmp' / 'worker0') == []  # its scratch folders, removed

    # The chief evaluated the whole validation set: `evaluate` on its export agrees.
    result = subprocess.run(
        [sys.executable, '-m', 'object_detection_algo', 'evaluate', '--model_dir',
         str(out / 'model'), '--data_path', shapes_data['val'], '--output_dir',
         str(tmp_path / 'evaluate')], cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'})
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out / 'model' / 'metrics.json') as f:
        card = json.load(f)
    with open(tmp_path / 'evaluate' / 'metrics.json') as f:
        report = json.load(f)
    assert report['num_images'] == 8
    for name in COCO_METRICS:
        assert report['metrics'][name] == pytest.approx(card['metrics'][name], abs=0.005), name
    # Not a comparison of zeros (a 4-step model may match no box): the chief's
    # evaluation met every true box of the set, not one task's share.
    assert {row['id']: row['num_boxes'] for row in card['per_class']} == \
        {row['id']: row['num_boxes'] for row in report['per_class']}
    assert sum(row['num_boxes'] for row in card['per_class']) == report['num_boxes']


def test_sigterm_then_a_killed_worker_then_a_restart_that_resumes(shapes_data, tmp_path):
    """Vertex AI's cluster (chief + worker pool 1, CLUSTER_SPEC, AIP_* folders)."""
    base = tmp_path / 'vertex'
    envs = [dict(env, AIP_MODEL_DIR=f'{base}/model/', AIP_CHECKPOINT_DIR=f'{base}/checkpoints/',
                 AIP_TENSORBOARD_LOG_DIR=f'{base}/logs/')
            for env in cluster_envs(tmp_path, 'vertex')]
    checkpoints = base / 'checkpoints'
    args = data_flags(shapes_data) + TINY_FLAGS + ['--max_steps=200',
                                                   '--train_steps_per_eval=200']

    # 1. SIGTERM on the worker: every task stops after the same loop, with a checkpoint.
    first = Cluster(args + ['--checkpoint_every_steps=1000'], envs, tmp_path, 'sigterm')
    first.wait_for(1, r'step 2/200 \| loss')
    first.procs[1].send_signal(signal.SIGTERM)
    assert first.wait(timeout=120) == [143, 143], first.log(0)[-3000:] + first.log(1)[-3000:]
    stopped = latest_step(checkpoints)
    assert stopped >= 2
    assert 'Another task of the cluster got SIGTERM' in first.log(0)
    assert f'Stopped by SIGTERM at step {stopped}; the checkpoint is saved' in first.log(0)
    assert not (base / 'model').exists()  # no evaluation happened

    # 2. A restart resumes; then the worker is killed: the chief stops with a clear error.
    second = Cluster(args + ['--checkpoint_every_steps=1'], envs, tmp_path, 'killed')
    second.wait_for(0, rf'step {stopped + 2}/200 \| loss')
    assert f'Resuming from the checkpoint at step {stopped}' in second.log(0)
    assert f'Ready at step {stopped}.' in second.log(1)
    second.procs[1].send_signal(signal.SIGKILL)
    killed = time.time()
    codes = second.wait(timeout=120)
    waited = time.time() - killed
    print(f'the chief stopped {waited:.1f} s after the worker was killed')
    assert codes == [4, -signal.SIGKILL], second.log(0)[-3000:]
    resumed = latest_step(checkpoints)
    assert resumed > stopped
    assert re.search(r'error: this task \(chief 0\) lost worker 0 of the cluster \(.*\): it '
                     r'crashed, was stopped or cannot be reached\. Every task stops\. Start the '
                     rf'whole cluster again to resume from the chief\'s checkpoint at step '
                     rf'{resumed}\.\n', second.log(0)), second.log(0)[-3000:]
    assert 'Traceback' not in second.log(0)

    # 3. The whole cluster again: it resumes from the chief's checkpoint and finishes. The
    # worker, started with another learning rate by mistake, trains with the chief's.
    end = resumed + 2
    third = Cluster(data_flags(shapes_data) + TINY_FLAGS + [
        f'--max_steps={end}', f'--train_steps_per_eval={end}'], envs, tmp_path, 'restart',
        extra={1: ['--initial_learning_rate=0.5']})
    assert third.wait() == [0, 0], third.log(0)[-3000:] + third.log(1)[-3000:]
    assert f'Resuming from the checkpoint at step {resumed}' in third.log(0)
    assert re.search(r'This task was started with other values than the chief for '
                     r"--initial_learning_rate(, --stepwise_learning_rate_levels)?: it trains "
                     r"with the chief's\.", third.log(1))  # (the levels follow the rate)
    assert losses(third.log(0)) == losses(third.log(1))
    assert f'step {resumed + 1}/{end} | loss' in third.log(1)
    assert f'step {resumed}/' not in third.log(1)  # nothing redone
    assert latest_step(checkpoints) == end
    with open(checkpoints / 'evaluations.json') as f:
        assert [e['step'] for e in json.load(f)['evaluations']] == [end]
    assert (base / 'model' / 'saved_model.pb').exists()
    assert [line['global_step'] for line in hypertune_lines(
        tmp_path / 'hp' / 'chief0' / 'output.metrics')] == [str(end)]


def test_bad_records_stop_every_task_with_the_chiefs_status(shapes_data, tmp_path):
    rng = np.random.RandomState(1)
    data = tmp_path / 'data'
    data.mkdir()
    for path in tf.io.gfile.glob(shapes_data['train']):
        (data / path.rsplit('/', 1)[1]).symlink_to(path)
    with tf.io.TFRecordWriter(str(data / 'train-bad.tfrecord')) as writer:
        image = synthetic.draw_image(rng, size=128)[0]
        writer.write(synthetic.make_example(synthetic.encode(image), [(10, 10, 60, 60)], [0],
                                            128, 128, source_id='9001').SerializeToString())
    args = [f'--training_data_path={data}/train-*',
            f'--validation_data_path={shapes_data["val"]}', f'--job-dir={tmp_path / "out"}',
            *TINY_FLAGS, '--max_steps=2']
    cluster = Cluster(args, cluster_envs(tmp_path), tmp_path, 'bad')
    assert cluster.wait() == [3, 3], cluster.log(0)[-3000:] + cluster.log(1)[-3000:]
    message = f'--training_data_path={data}/train-*: 1 error(s) in the data check'
    assert f'error: {message}' in cluster.log(0)
    assert f'error: the chief (master 0) stopped the job: {message}' in cluster.log(1)
    for i in range(2):
        assert '| loss ' not in cluster.log(i) and 'Traceback' not in cluster.log(i)


def test_a_batch_that_does_not_split_over_the_cluster_is_refused(shapes_data, tmp_path):
    args = data_flags(shapes_data) + TINY_FLAGS + [f'--job-dir={tmp_path / "out"}',
                                                   '--max_steps=2', '--train_batch_size=3']
    cluster = Cluster(args, cluster_envs(tmp_path), tmp_path, 'batch')
    assert cluster.wait() == [2, 2], cluster.log(0)[-3000:] + cluster.log(1)[-3000:]
    message = ('--train_batch_size=3 does not split over the 2 replicas of the cluster (2 tasks '
               'x 1 device(s) each): pass a multiple of 2, e.g. 2.')
    assert f'error: {message}' in cluster.log(0)
    assert f'error: the chief (master 0) stopped the job: {message}' in cluster.log(1)
    assert 'Data check' not in cluster.log(0)  # refused before the data is read


def test_a_cluster_with_a_parameter_server_is_refused_at_once(shapes_data, tmp_path):
    ports = free_ports(3)
    spec = {'master': [f'127.0.0.1:{ports[0]}'], 'worker': [f'127.0.0.1:{ports[1]}'],
            'ps': [f'127.0.0.1:{ports[2]}']}
    env = job_env(tmp_path / 'hp' / 'output.metrics',
                  TF_CONFIG=json.dumps({'cluster': spec, 'task': {'type': 'master', 'index': 0}}))
    start = time.time()
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'entrypoint.py'),
                             *data_flags(shapes_data), *TINY_FLAGS, '--max_steps=2',
                             f'--job-dir={tmp_path / "out"}'], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert time.time() - start < 20  # before TensorFlow is imported
    assert result.stderr.startswith('error: TF_CONFIG describes a cluster with ps task(s)')
    assert 'This job trains on one machine, or a chief (AI Platform: master; Vertex AI: worker ' \
           'pool 0) with workers' in result.stderr
    assert not (tmp_path / 'out').exists()


def test_a_bad_record_met_mid_job_stops_every_task_and_the_chief_names_it(shapes_data,
                                                                         tmp_path):
    """Records 2-11 of an extra training file are not images (enough for the shuffled
    pipeline to meet one, see test_preflight); the data check's sample (2 records per
    file) misses them. Whichever task meets one, both stop with status 3 and
    the chief reads every record to name them."""
    from test_preflight import write_records
    data = tmp_path / 'train'
    data.mkdir()
    for path in tf.io.gfile.glob(shapes_data['train']):
        (data / path.rsplit('/', 1)[1]).symlink_to(path)
    bad_file = data / 'train-late.tfrecord'
    write_records(bad_file, np.random.RandomState(3), bad=range(2, 12), count=12)
    out = tmp_path / 'out'
    args = [f'--training_data_path={data}/*', f'--validation_data_path={shapes_data["val"]}',
            f'--job-dir={out}', *TINY_FLAGS, '--preflight_max_records=6', '--max_steps=40',
            '--train_steps_per_eval=40', '--train_batch_size=4']  # meets it sooner
    cluster = Cluster(args, cluster_envs(tmp_path), tmp_path, 'late')
    codes = cluster.wait()
    chief, worker = cluster.log(0), cluster.log(1)
    assert codes == [3, 3], chief[-3000:] + worker[-3000:]
    assert 'Data check passed' in chief  # the sample missed it
    [line] = [x for x in chief.splitlines() if x.startswith('error: ')]
    assert line.startswith(f'error: --training_data_path={data}/*: the input pipeline failed on '
                           'a record the check before training let through ('), line
    assert 'Unknown image file format' in line and line.endswith(
        'Every record checked now: 10 error(s):'), line
    assert f"{bad_file} record 2 (source_id '7002', late_2.jpg): image/encoded (12 bytes) " \
           'does not decode' in chief
    assert 'The cluster stopped near step' in chief
    report = json.loads((out / 'checkpoints' / 'data_failure_report.json').read_text())
    assert report['training_data_path']['counts_by_rule']['undecodable_image'] == 10
    [line] = [x for x in worker.splitlines() if x.startswith('error: ')]
    assert line.startswith('error: the input pipeline failed during training (Unknown image '
                           'file format. One of JPEG, PNG, GIF, BMP, WebP required.). The chief'
                           ), line
    assert line.endswith('The chief (master 0) reads every record of --training_data_path and '
                         'names the bad ones in its log and in data_failure_report.json beside '
                         'the checkpoints.'), line
