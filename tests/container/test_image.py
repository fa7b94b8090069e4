"""The image, built and run for real (issue 18).

The project's Dockerfile is built with podman on a stand-in base (Debian bookworm's Python
3.11 made with mmdebstrap: TensorFlow's own base cannot be pulled without a registry), with
the packages from a wheelhouse made here and no network in the build. Then, against that
image, as its default user unless said otherwise and with `--network=none` throughout (a
job on local data needs no network):

- a job is stopped during training with `podman stop` (SIGTERM to the entrypoint as PID 1,
  as AI Platform and Vertex AI stop a preempted job): it saves a checkpoint within the grace
  period and exits 143; the same command started again resumes from it and finishes, with
  checkpoints, `model/` and the hypertune file in the mounted folder, all owned by uid 1000;
- the predict and evaluate commands docs/container.md gives work on that model;
- a code change rebuilds without reinstalling the packages;
- `--init_checkpoint=auto` finds the ImageNet ResNet-50 the build put into the image (a
  stand-in made by tests/imagenet_stand_in.py, put where cloudbuild.yaml puts the real one),
  in a job started with another uid (`-u`, as docs/container.md starts workstation jobs).

Not part of the default run (pytest.ini deselects the `container` marker). Run alone, as
root, after `.ci/container` or `apt-get install podman runc mmdebstrap`:

    python -m pytest -q -s -m container tests/container

It prints the build time, the image size and each step's time. Set CONTAINER_TEST_WORK to
a folder to keep the stand-in base, the wheelhouse and the logs there between runs.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from job_runner import ROOT, TINY_FLAGS

pytestmark = pytest.mark.container

HERE = os.path.dirname(os.path.abspath(__file__))
BASE = 'localhost/object-detection-standin-base:bookworm'
IMAGE = 'localhost/object-detection:container-test'
STEPS = 100  # enough training left after the stop for SIGTERM to land in it
JOB_ARGS = ['--training_data_path=/work/data/train-*', '--validation_data_path=/work/data/val-*',
            *TINY_FLAGS, '--job-dir=/work/job', f'--max_steps={STEPS}',
            f'--train_steps_per_eval={STEPS}', '--checkpoint_every_steps=1000',
            # An untrained model scores ~0.01: keep its boxes so predict has some to return.
            '--max_num_bboxes_in_prediction=20', '--nms_score_threshold=0']
METRICS_FILE = '/work/hypertune/output.metrics'
# Where cloudbuild.yaml puts the published checkpoint, in the build context and the image.
PRETRAINED = 'pretrained/resnet50_imagenet'
IMAGE_PRETRAINED = f'/opt/object_detection/{PRETRAINED}/ckpt-28080'
GRACE_SECONDS = 30  # about what a preempted VM gets between SIGTERM and its end


def say(what):
    print(f'container test: {what}', flush=True)


def podman(*args, log=None, timeout=1800, check=True):
    """podman with runc (crun fails on hybrid cgroups) and, unless the caller set one,
    the repository's containers.conf (runc fails on the default rlimits)."""
    env = dict(os.environ)
    env.setdefault('CONTAINERS_CONF', os.path.join(HERE, 'containers.conf'))
    out = open(log, 'w') if log else subprocess.PIPE
    try:
        result = subprocess.run(['podman', '--runtime', 'runc', *args], env=env, text=True,
                                stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
    finally:
        if log:
            out.close()
    text = open(log).read() if log else result.stdout
    if check and result.returncode != 0:
        pytest.fail(f'podman {" ".join(args[:3])} ... exited {result.returncode}:\n'
                    f'{text[-4000:]}', pytrace=False)
    return result.returncode, text


def timed(what, fn, *args, **kwargs):
    start = time.monotonic()
    result = fn(*args, **kwargs)
    say(f'{what}: {time.monotonic() - start:.0f} s')
    return result


def run(cmd, what, **kwargs):
    result = subprocess.run(cmd, text=True, capture_output=True, **kwargs)
    if result.returncode != 0:
        pytest.fail(f'{what} exited {result.returncode}:\n{result.stdout[-2000:]}'
                    f'{result.stderr[-3000:]}', pytrace=False)
    return result.stdout


@pytest.fixture(scope='module')
def work():
    missing = [t for t in ('podman', 'runc', 'mmdebstrap') if not shutil.which(t)]
    if missing or os.geteuid() != 0:
        pytest.fail(f'needs root and podman, runc, mmdebstrap (missing: {missing or "root"}); '
                    '.ci/container installs them', pytrace=False)
    if sys.version_info[:2] != (3, 11):
        pytest.fail('the wheelhouse is made with this Python and installed into the base\'s '
                    f'Python 3.11; this is {sys.version.split()[0]}', pytrace=False)
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # this process's TensorFlow: quiet
    kept = os.environ.get('CONTAINER_TEST_WORK')
    path = kept or tempfile.mkdtemp(prefix='container-test-')
    os.makedirs(path, exist_ok=True)
    yield path
    if not kept:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope='module')
def context(work):
    """A copy of the checkout as a fresh clone would have it (tracked and new files, not
    what .gitignore names), so a local pretrained/ checkpoint is neither used nor touched."""
    path = os.path.join(work, 'context')
    shutil.rmtree(path, ignore_errors=True)
    files = run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'],
                'git ls-files', cwd=ROOT).split('\0')
    for name in filter(None, files):
        if os.path.isfile(os.path.join(ROOT, name)):  # deleted but not yet committed: skip
            os.makedirs(os.path.dirname(os.path.join(path, name)), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, name), os.path.join(path, name))
    timed('ImageNet ResNet-50 stand-in into the context', add_imagenet_stand_in, work, path)
    return path


def add_imagenet_stand_in(work, context):
    """A checkpoint with the published ResNet-50's layout, under the published name."""
    import imagenet_stand_in
    made = os.path.join(work, 'imagenet', 'published')
    if not os.path.exists(os.path.join(made, 'ckpt-28080.index')):
        prefix = imagenet_stand_in.train(os.path.join(work, 'imagenet', 'train'), 50)
        imagenet_stand_in.as_published(prefix, made)
    shutil.copytree(made, os.path.join(context, PRETRAINED))


def make_base(work):
    """Debian bookworm with Python 3.11 and pip, imported as BASE. Debian marks its
    Python as externally managed; TensorFlow's base (pip-installed Python) does not."""
    tar = os.path.join(work, 'base.tar')
    if not os.path.exists(tar):
        run(['mmdebstrap', '--variant=minbase', '--format=tar',
             '--include=python3,python3-pip,ca-certificates',
             '--customize-hook=rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED',
             'bookworm', tar + '.part'], 'mmdebstrap')
        os.rename(tar + '.part', tar)
    podman('import', tar, BASE)


def make_wheelhouse(work, context):
    """The pinned packages as wheels, and a pip config that installs only from them,
    in a folder mounted over /root during the build: nothing of it stays in the image."""
    pip_home = os.path.join(work, 'pip-home')
    wheels = os.path.join(pip_home, 'wheels')
    if not os.path.isdir(wheels):
        run([sys.executable, '-m', 'pip', 'wheel', '-q', '--progress-bar', 'off',
             '-r', 'requirements.txt', '-w', wheels + '.part'], 'pip wheel', cwd=context)
        os.rename(wheels + '.part', wheels)
    os.makedirs(os.path.join(pip_home, '.config', 'pip'), exist_ok=True)
    with open(os.path.join(pip_home, '.config', 'pip', 'pip.conf'), 'w') as f:
        f.write('[global]\nno-index = true\nfind-links = /root/wheels\n')
    return pip_home


def build(context, pip_home, tag, log, *extra):
    return podman('build', '--pull=never', '--network=none', f'--volume={pip_home}:/root:ro',
                  f'--build-arg=BASE_IMAGE={BASE}', f'--tag={tag}', *extra, context, log=log)


@pytest.fixture(scope='module')
def image(work, context):
    timed('stand-in base (mmdebstrap, podman import)', make_base, work)
    pip_home = timed('wheelhouse (pip wheel)', make_wheelhouse, work, context)
    timed('build (podman build --no-cache)', build, context, pip_home, IMAGE,
          os.path.join(work, 'build.log'), '--no-cache')
    _, size = podman('image', 'inspect', '--format={{.Size}}', IMAGE)
    _, base_size = podman('image', 'inspect', '--format={{.Size}}', BASE)
    say(f'image size: {int(size) / 1e9:.2f} GB (stand-in base {int(base_size) / 1e9:.2f} GB)')
    yield {'tag': IMAGE, 'context': context, 'pip_home': pip_home}
    podman('rmi', '--force', IMAGE, IMAGE + '-code-change', BASE, check=False)


@pytest.fixture(scope='module')
def mount(work):
    """The folder mounted at /work: the synthetic dataset and an image, written here by
    root; the job, as uid 1000, writes beside them."""
    sys.path.insert(0, ROOT)
    import numpy as np
    from object_detection_algo.data import synthetic
    path = os.path.join(work, 'mount')
    shutil.rmtree(path, ignore_errors=True)
    synthetic.write_dataset(os.path.join(path, 'data'), num_train=32, num_val=8, size=128, seed=7)
    with open(os.path.join(path, 'sample.jpg'), 'wb') as f:
        f.write(synthetic.encode(synthetic.draw_image(np.random.RandomState(3))[0]))
    os.chown(path, 1000, 1000)
    return path


def job_command(mount, name):
    return ['run', '--rm', '--replace', f'--name={name}', '--network=none',
            f'--volume={mount}:/work', f'--env=CLOUD_ML_HP_METRIC_FILE={METRICS_FILE}',
            IMAGE, *JOB_ARGS]


def assert_written_by_uid_1000(top):
    assert os.path.exists(top), f'{top} was not written'
    others = [f'{os.path.join(d, n)} (uid {os.stat(os.path.join(d, n)).st_uid})'
              for d, dirs, files in os.walk(top) for n in [*dirs, *files]
              if os.stat(os.path.join(d, n)).st_uid != 1000]
    assert os.stat(top).st_uid == 1000 and not others, f'not owned by uid 1000: {others}'


def latest_checkpoint_step(mount):
    with open(os.path.join(mount, 'job', 'checkpoints', 'checkpoint')) as f:
        first = f.readline()  # model_checkpoint_path: "ckpt-N"
    return int(first.split('ckpt-')[1].rstrip('"\n'))


@pytest.fixture(scope='module')
def stopped_job(image, mount, work):
    """The job, stopped with `podman stop` once it has trained a few steps."""
    name = 'object-detection-container-test'
    log_path = os.path.join(work, 'stopped_job.log')
    env = dict(os.environ)
    env.setdefault('CONTAINERS_CONF', os.path.join(HERE, 'containers.conf'))
    start = time.monotonic()
    with open(log_path, 'w') as log:
        proc = subprocess.Popen(['podman', '--runtime', 'runc', *job_command(mount, name)],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        while f'step 5/{STEPS} | loss' not in open(log_path).read():
            assert proc.poll() is None, f'exited {proc.returncode} before training step 5:\n' + \
                open(log_path).read()[-4000:]
            assert time.monotonic() - start < 900, 'no training step 5 in 15 minutes'
            time.sleep(0.2)
        say(f'job to training step 5: {time.monotonic() - start:.0f} s')
        stopped = time.monotonic()
        podman('stop', f'--time={GRACE_SECONDS}', name, timeout=GRACE_SECONDS + 60)
        code = proc.wait(timeout=60)
        stop_seconds = time.monotonic() - stopped
    finally:
        if proc.poll() is None:
            proc.kill()
        podman('rm', '--force', name, check=False)
    say(f'podman stop to exit: {stop_seconds:.1f} s (exit status {code})')
    return {'code': code, 'log': open(log_path).read(), 'stop_seconds': stop_seconds}


@pytest.fixture(scope='module')
def finished_job(stopped_job, mount, work):
    """The same command again, after the stop."""
    code, log = timed('the same job started again, to the end', podman,
                      *job_command(mount, 'object-detection-container-test'),
                      log=os.path.join(work, 'finished_job.log'), timeout=900, check=False)
    return {'code': code, 'log': log}


def test_sigterm_saves_a_checkpoint_within_the_grace_period_and_exits_143(stopped_job, mount):
    log = stopped_job['log']
    assert stopped_job['code'] == 143, (
        f'exit status {stopped_job["code"]} after podman stop (137: SIGKILL after the '
        f'{GRACE_SECONDS} s grace period, the signal never reached the job):\n{log[-4000:]}')
    assert stopped_job['stop_seconds'] < GRACE_SECONDS
    step = latest_checkpoint_step(mount)
    assert f'Stopped by SIGTERM at step {step};' in log, log[-4000:]
    assert 5 <= step < STEPS, f'checkpoint at step {step}: the job ended before the stop'


def test_the_same_command_resumes_from_it_and_finishes(stopped_job, finished_job, mount):
    log = finished_job['log']
    assert finished_job['code'] == 0, log[-4000:]
    stopped_at = int(stopped_job['log'].split('Stopped by SIGTERM at step ')[1].split(';')[0])
    assert f'Resuming from the checkpoint at step {stopped_at} in /work/job/checkpoints' in log
    assert f'Done: {STEPS} steps.' in log, log[-4000:]
    assert latest_checkpoint_step(mount) == STEPS


def test_outputs_in_the_mounted_folder_owned_by_uid_1000(finished_job, mount):
    assert finished_job['code'] == 0
    assert os.path.exists(os.path.join(mount, 'job', 'model', 'saved_model.pb'))
    assert os.path.exists(os.path.join(mount, 'job', 'checkpoints', 'evaluations.json'))
    with open(os.path.join(mount, 'hypertune', 'output.metrics')) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    assert [line['global_step'] for line in lines] == [str(STEPS)], lines
    assert 0.0 <= float(lines[-1]['AP']) <= 1.0
    for top in ('job', 'hypertune'):
        assert_written_by_uid_1000(os.path.join(mount, top))


def test_exported_model_has_the_documented_signature(finished_job, mount):
    import tensorflow as tf
    serve = tf.saved_model.load(os.path.join(mount, 'job', 'model')).signatures['serving_default']
    assert set(serve.structured_input_signature[1]) == {'encoded_image', 'key'}
    with open(os.path.join(mount, 'sample.jpg'), 'rb') as f:
        out = serve(encoded_image=tf.constant([f.read()]), key=tf.constant(['a']))
    assert set(out) == {'detection_boxes', 'detection_classes', 'detection_scores',
                        'num_detections', 'key'}
    assert out['detection_boxes'].shape == (1, 20, 4)
    assert list(out['key'].numpy()) == [b'a']


def in_container(mount, *args, what):
    """A command as docs/container.md gives it: python3 -m ... in the image."""
    return timed(what, podman, 'run', '--rm', '--network=none', f'--volume={mount}:/work',
                 '--entrypoint=python3', IMAGE, '-m', 'object_detection_algo', *args,
                 timeout=600)[1]


def test_predict_in_the_container(finished_job, mount):
    out = in_container(mount, 'predict', '--model_dir', '/work/job/model', '--label_map',
                       '/work/data/label_map.csv', '--draw_dir', '/work/drawn',
                       '/work/sample.jpg', what='predict in the container')
    [answer] = [json.loads(line) for line in out.splitlines() if line.startswith('{')]
    assert answer['key'] == '/work/sample.jpg'
    assert len(answer['detection_boxes']) == 20 and len(answer['detection_class_names']) == 20
    assert 'predict: 1 instances, 0 failed' in out
    assert_written_by_uid_1000(os.path.join(mount, 'drawn', 'sample.png'))


def test_evaluate_in_the_container(finished_job, mount):
    out = in_container(mount, 'evaluate', '--model_dir', '/work/job/model', '--data_path',
                       '/work/data/val-*', '--label_map', '/work/data/label_map.csv',
                       '--output_dir', '/work/evaluation', what='evaluate in the container')
    assert 'Evaluated /work/job/model on 8 images' in out, out[-3000:]
    with open(os.path.join(mount, 'evaluation', 'metrics.json')) as f:
        assert 'AP' in json.load(f)['metrics']
    assert_written_by_uid_1000(os.path.join(mount, 'evaluation'))


def test_a_code_change_reuses_the_packages_layer(image, work):
    """Layer order: requirements before code, so editing the package does not reinstall."""
    context = image['context']
    with open(os.path.join(context, 'object_detection_algo', '__init__.py'), 'a') as f:
        f.write('# a code change\n')
    _, log = timed('rebuild after a code change', build, context, image['pip_home'],
                   IMAGE + '-code-change', os.path.join(work, 'rebuild.log'))
    [pip_step] = [s for s in log.split('STEP ') if 'pip install' in s.split('\n')[0]]
    assert 'Using cache' in pip_step, pip_step[-2000:]
    copy_step = [s for s in log.split('STEP ') if 'COPY object_detection_algo/' in s][0]
    assert 'Using cache' not in copy_step, 'the code change was not seen:\n' + copy_step


def test_init_checkpoint_auto_finds_the_imagenet_weights_in_the_image(image, mount, work):
    """With the network off, as for a job without public network access; started as
    docs/container.md starts a workstation job, with the caller's own uid (-u), and with
    the default hypertune file (/tmp/hypertune in the image)."""
    os.makedirs(os.path.join(mount, 'resnet50'))
    os.chown(os.path.join(mount, 'resnet50'), 4321, 4321)
    args = [a for a in JOB_ARGS if not a.startswith(('--resnet_depth', '--job-dir',
                                                     '--max_steps', '--train_steps_per_eval'))]
    _, log = timed('ResNet-50 job from the image\'s ImageNet weights', podman, 'run', '--rm',
                   '--network=none', '--user=4321:4321', f'--volume={mount}:/work', IMAGE,
                   *args, '--resnet_depth=50', '--init_checkpoint=auto',
                   '--job-dir=/work/resnet50', '--max_steps=1', '--train_steps_per_eval=1',
                   '-v', '1',  # Model Garden's 'Finished loading' line shows from -v 1
                   log=os.path.join(work, 'resnet50_job.log'), timeout=900)
    assert f'Initial weights: ImageNet ResNet-50 (backbone) from {IMAGE_PRETRAINED}.' in log, \
        log[-4000:]
    assert f'Finished loading pretrained checkpoint from {IMAGE_PRETRAINED}' in log
    with open(os.path.join(mount, 'resnet50', 'model', 'metrics.json')) as f:
        assert json.load(f)['initial_weights']['source'] == 'imagenet'
    assert os.stat(os.path.join(mount, 'resnet50', 'model', 'saved_model.pb')).st_uid == 4321
