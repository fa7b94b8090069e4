"""The cluster a job is a task of, decided from TF_CONFIG / CLUSTER_SPEC as AI
Platform and Vertex AI write them (pure logic, no TensorFlow)."""

import json
import re

import pytest

from object_detection_algo.errors import UsageError
from object_detection_algo.training import cluster, data_check, devices


def tf_config(cluster_spec, task_type, index=0, **task):
    return json.dumps({'cluster': cluster_spec, 'task': dict(task, type=task_type, index=index),
                       'environment': 'cloud', 'job': {}})


AI_PLATFORM = {'master': ['cmle-training-master-a-0:2222'],
               'worker': ['cmle-training-worker-a-0:2222', 'cmle-training-worker-a-1:2222']}
VERTEX = {'chief': ['workerpool0-0:2222'], 'worker': ['workerpool1-0:2222', 'workerpool1-1:2222']}
VERTEX_POOLS = {'workerpool0': ['workerpool0-0:2222'],
                'workerpool1': ['workerpool1-0:2222', 'workerpool1-1:2222']}


def test_ai_platform_master_and_workers():
    for task_type, index, chief in (('master', 0, True), ('worker', 0, False),
                                    ('worker', 1, False)):
        env = {'TF_CONFIG': tf_config(AI_PLATFORM, task_type, index, trial='2')}
        found = cluster.from_env(env)
        assert (found.num_tasks, found.task_type, found.task_index) == (3, task_type, index)
        assert found.is_chief is chief and found.chief == ('master', 0)
        assert found.shape() == 'master 1, worker 2'
        # TensorFlow 2.20 does not know `master`: it gets `chief`, the same task.
        assert found.tensorflow_spec() == {'chief': AI_PLATFORM['master'],
                                           'worker': AI_PLATFORM['worker']}
        assert found.tensorflow_task_type == ('chief' if chief else 'worker')
        choice = devices.choose(env, num_gpus=0)
        assert (choice.kind, choice.cluster) == ('cpu', found)


def test_vertex_chief_and_workers_with_cluster_spec():
    env = {'TF_CONFIG': tf_config(VERTEX, 'worker', 1),
           'CLUSTER_SPEC': json.dumps({'cluster': VERTEX_POOLS,
                                       'task': {'type': 'workerpool1', 'index': 1}})}
    found = cluster.from_env(env)
    assert (found.source, found.task_name, found.is_chief) == ('TF_CONFIG', 'worker 1', False)
    assert found.tensorflow_spec() == VERTEX
    choice = devices.choose(env, num_gpus=2)
    assert choice.kind == 'gpu' and choice.cluster == found
    assert '3 training tasks in TF_CONFIG, 2 GPU(s) here' in choice.reason


def test_cluster_spec_alone_names_the_worker_pools():
    env = {'CLUSTER_SPEC': json.dumps({'cluster': VERTEX_POOLS,
                                       'task': {'type': 'workerpool0', 'index': 0}})}
    found = cluster.from_env(env)
    assert (found.source, found.task_type, found.is_chief) == ('CLUSTER_SPEC', 'chief', True)
    assert found.tensorflow_spec() == VERTEX


def test_workers_alone_make_worker_0_the_chief():
    env = {'TF_CONFIG': tf_config({'worker': ['a:1', 'b:1']}, 'worker', 0)}
    found = cluster.from_env(env)
    assert found.chief == ('worker', 0) and found.is_chief


@pytest.mark.parametrize('env', [
    {},
    # AI Platform writes TF_CONFIG for a one-machine job too: it stays one machine.
    {'TF_CONFIG': tf_config({'master': ['cmle-training-master-a-0:2222']}, 'master', trial='3')},
    {'TF_CONFIG': tf_config({'chief': ['workerpool0-0:2222']}, 'chief'),
     'CLUSTER_SPEC': json.dumps({'cluster': {'workerpool0': ['workerpool0-0:2222']},
                                 'task': {'type': 'workerpool0', 'index': 0}})},
    {'TF_CONFIG': json.dumps({'task': {'type': 'master', 'trial': '3'}})},
])
def test_one_machine_stays_one_machine(env):
    assert cluster.from_env(env) is None
    assert devices.choose(env, num_gpus=4).cluster is None
    assert devices.choose(env, num_gpus=4).kind == 'gpu'


@pytest.mark.parametrize('env', [
    {'TF_CONFIG': tf_config({'master': ['m:2222'], 'worker': ['w:2222'],
                             'tpu_worker': ['10.1.1.1:8470']}, 'master')},
    {'TF_CONFIG': tf_config(AI_PLATFORM, 'master'), 'TPU_NAME': 'my-tpu'},
])
def test_tpu_clusters_are_unchanged(env):
    choice = devices.choose(env, num_gpus=0)
    assert choice.kind == 'tpu' and choice.cluster is None


@pytest.mark.parametrize('cluster_spec, task_type, refused', [
    (dict(AI_PLATFORM, ps=['cmle-training-ps-a-0:2222']), 'master', 'ps'),
    (dict(AI_PLATFORM, ps=['cmle-training-ps-a-0:2222']), 'ps', 'ps'),
    # AI Platform leaves the evaluator out of the cluster; only its task says so.
    (AI_PLATFORM, 'evaluator', 'evaluator'),
    (dict(VERTEX, evaluator=['workerpool3-0:2222']), 'chief', 'evaluator'),
])
def test_parameter_servers_and_evaluators_are_refused(cluster_spec, task_type, refused):
    env = {'TF_CONFIG': tf_config(cluster_spec, task_type)}
    with pytest.raises(UsageError) as error:
        cluster.from_env(env)
    message = str(error.value)
    assert message.startswith(f'TF_CONFIG describes a cluster with {refused} task(s)')
    assert 'a chief (AI Platform: master; Vertex AI: worker pool 0) with workers' in message
    assert 'Remove the parameter servers and evaluators' in message
    with pytest.raises(UsageError):
        devices.choose(env, num_gpus=1)


def test_vertex_parameter_server_pool_is_refused_from_cluster_spec():
    env = {'CLUSTER_SPEC': json.dumps({'cluster': dict(VERTEX_POOLS, workerpool2=['ps-0:2222']),
                                       'task': {'type': 'workerpool0', 'index': 0}})}
    with pytest.raises(UsageError, match='CLUSTER_SPEC describes a cluster with ps task'):
        cluster.from_env(env)


@pytest.mark.parametrize('cluster_spec, task, match', [
    (AI_PLATFORM, {'type': 'worker', 'index': 2}, 'is not one of the cluster'),
    (AI_PLATFORM, {'index': 0}, 'is not one of the cluster'),
    ({'master': ['m:1'], 'chief': ['c:1']}, {'type': 'master', 'index': 0},
     'more than one chief'),
])
def test_a_task_outside_its_cluster_is_refused(cluster_spec, task, match):
    env = {'TF_CONFIG': json.dumps({'cluster': cluster_spec, 'task': task})}
    with pytest.raises(UsageError, match=match):
        cluster.from_env(env)


def test_batch_split_over_the_cluster():
    found = cluster.from_env({'TF_CONFIG': tf_config(AI_PLATFORM, 'worker', 1)})
    assert cluster.batch_error(12, 6, found) is None
    assert cluster.batch_error(16, 6, found) == (
        '--train_batch_size=16 does not split over the 6 replicas of the cluster (3 tasks x 2 '
        'device(s) each): pass a multiple of 6, e.g. 12.')


def test_devices_line_and_sharding_line():
    found = cluster.from_env({'TF_CONFIG': tf_config(AI_PLATFORM, 'master')})
    assert cluster.devices_line(found, 'gpu', 12) == (
        'GPU on a cluster of 3 tasks (master 1, worker 2, from TF_CONFIG): this task is master 0 '
        '(the chief, which writes); 12 replicas in all, MultiWorkerMirroredStrategy')
    assert cluster.sharding_line(10, 3) == (
        'Training data over 3 tasks: each reads its share of the 10 files (about 4 each).')
    assert 'every task reads all records and keeps 1 in 3' in cluster.sharding_line(2, 3)


def test_the_tasks_own_addresses_bypass_an_https_proxy_of_the_environment():
    found = cluster.from_env({'TF_CONFIG': tf_config(AI_PLATFORM, 'worker', 0)})
    hosts = 'cmle-training-master-a-0,cmle-training-worker-a-0,cmle-training-worker-a-1'
    assert cluster.proxy_bypass({'https_proxy': 'http://proxy:3128'}, found) == hosts
    # What the environment exempts already stays exempt, no_grpc_proxy before no_proxy.
    assert cluster.proxy_bypass({'no_proxy': 'metadata, .internal'}, found) == (
        'metadata,.internal,' + hosts)
    assert cluster.proxy_bypass({'no_grpc_proxy': 'a', 'no_proxy': 'b'}, found) == 'a,' + hosts
    local = cluster.from_env({'TF_CONFIG': tf_config(
        {'chief': ['127.0.0.1:2222'], 'worker': ['127.0.0.1:2223', '[::1]:2224']}, 'chief')})
    assert cluster.proxy_bypass({'NO_PROXY': '127.0.0.1'}, local) == '127.0.0.1,::1'


def test_lost_tasks_are_named_as_the_caller_names_them():
    found = cluster.from_env({'TF_CONFIG': tf_config(AI_PLATFORM, 'worker', 0)})
    heartbeat = ('Collective ops is aborted by: The following tasks are unhealthy (stopped '
                 'sending heartbeats):\n/job:worker/replica:0/task:1\nThe tasks have crashed.')
    assert cluster.lost_tasks(heartbeat, found) == 'worker 1'
    closed = ('Socket closed Additional GRPC error information from remote target '
              '/job:chief/replica:0/task:0 while calling /tensorflow.WorkerService/RecvBuf')
    assert cluster.lost_tasks(closed, found) == 'master 0'
    assert cluster.lost_tasks('gs://bucket/x: 503 Service Unavailable', found) is None


def test_the_multi_machine_specs_split_their_batch_over_every_gpu():
    """hparams/: the global batch is a multiple of the GPUs of all machines, every
    machine gets the same arguments, and no parameter server or evaluator is asked for."""
    import os
    import yaml
    from conftest import ROOT
    with open(os.path.join(ROOT, 'hparams', 'ai_platform_gpu_multiworker.yaml')) as f:
        ai_platform = yaml.safe_load(f)['trainingInput']
    assert not ai_platform.get('parameterServerCount') and not ai_platform.get('evaluatorCount')
    gpus = (ai_platform['masterConfig']['acceleratorConfig']['count'] +
            ai_platform['workerCount'] * ai_platform['workerConfig']['acceleratorConfig']['count'])
    with open(os.path.join(ROOT, 'hparams', 'ai_platform_gpu_multiworker.yaml')) as f:
        batch = int(re.search(r'--train_batch_size=(\d+)', f.read()).group(1))
    assert gpus == 4 and batch % gpus == 0
    with open(os.path.join(ROOT, 'hparams', 'vertex_multiworker_job.yaml')) as f:
        pools = yaml.safe_load(f)['workerPoolSpecs']
    assert len(pools) == 2 and pools[0]['replicaCount'] == 1
    assert pools[0]['containerSpec'] == pools[1]['containerSpec']
    gpus = sum(p['replicaCount'] * p['machineSpec']['acceleratorCount'] for p in pools)
    args = dict(a.lstrip('-').split('=', 1) for a in pools[0]['containerSpec']['args'])
    assert gpus == 4 and int(args['train_batch_size']) % gpus == 0


def test_the_cause_of_a_lost_task_without_tensorflows_node_names():
    message = ('{{function_node __wrapped__CollectiveReduceV2_Nordering_token_1_device_/job:chief/'
               'replica:0/task:0/device:CPU:0}} Collective ops is aborted by: Socket closed\n'
               'Additional GRPC error information from remote target /job:worker/replica:0/task:0')
    assert cluster.cause(message) == 'Socket closed'
    message = ('Collective ops is aborted by: Error reported from /job:worker/task:0: The '
               'following tasks are unhealthy (stopped sending heartbeats):\n/job:worker/replica:0'
               '/task:0\nThe tasks have crashed.')
    assert cluster.cause(message) == ('Error reported from /job:worker/task:0: The following '
                                      'tasks are unhealthy (stopped sending heartbeats):')


def test_a_workers_pipeline_failure_without_escaped_line_breaks():
    # As a worker of a cluster test once got it (the chief's copy had real ones).
    message = ('Unknown image file format. One of JPEG, PNG, GIF, BMP, WebP required.'
               '\\n\\t \\n\\t \\n\\t [[{{node DecodeImage}}]]\\n\\t \\n [Op:IteratorGetNext]')
    assert cluster.cause(data_check.pipeline_failure(message)) == (
        'Unknown image file format. One of JPEG, PNG, GIF, BMP, WebP required.')
