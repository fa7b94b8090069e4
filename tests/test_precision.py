"""--precision: `auto` as a pure decision for each kind of device, the refusals,
and tiny jobs in the precisions this machine runs."""

import json
import time

import pytest
import tensorflow as tf

from conftest import TINY_FLAGS, data_flags, job_env, run_job
from object_detection_algo.errors import UsageError
from object_detection_algo.training import experiment, flag_table, precision

AVX512_BF16 = {'avx512f', 'avx512_bf16'}
AMX = {'amx_tile', 'amx_bf16', 'avx512_bf16'}
AVX2_ONLY = {'avx2', 'fma'}


@pytest.mark.parametrize('kind, capabilities, flags, dtype, why', [
    ('tpu', (), (), 'bfloat16', 'a TPU computes in bfloat16'),
    ('gpu', [(7, 0)], (), 'float16', 'compute capability 7.0 has tensor cores'),
    ('gpu', [(8, 6), (7, 5)], (), 'float16', '7.5 has tensor cores'),  # the lowest decides
    ('gpu', [(6, 1)], (), 'float32', '6.1 has no tensor cores'),
    ('gpu', [(8, 0), (6, 0)], (), 'float32', '6.0 has no tensor cores'),
    ('gpu', [], (), 'float32', 'compute capability is unknown'),
    ('cpu', (), AMX, 'bfloat16', 'the CPU has AMX and AVX-512 BF16'),
    ('cpu', (), AVX512_BF16, 'bfloat16', 'the CPU has AVX-512 BF16'),
    ('cpu', (), AVX2_ONLY, 'float32', 'no native bfloat16'),
])
def test_auto(kind, capabilities, flags, dtype, why):
    choice = precision.choose('auto', kind, capabilities, flags)
    assert choice.dtype == dtype and why in choice.reason and choice.reason.startswith('auto')


@pytest.mark.parametrize('requested, kind, capabilities, flags, message', [
    ('float16', 'tpu', (), (), 'a TPU has no float16 arithmetic'),
    ('float16', 'cpu', (), AMX, 'CPUs run float16 emulated'),
    ('bfloat16', 'gpu', [(7, 5)], (), 'compute capability 7.5 has no bfloat16 arithmetic '
                                      '(it needs 8.0)'),
])
def test_what_the_devices_cannot_run_is_refused(requested, kind, capabilities, flags, message):
    with pytest.raises(UsageError, match=f'--precision={requested}: .*' + message.replace(
            '(', r'\(').replace(')', r'\)')):
        precision.choose(requested, kind, capabilities, flags)


@pytest.mark.parametrize('requested, kind, capabilities, flags', [
    ('float32', 'tpu', (), ()), ('bfloat16', 'tpu', (), ()), ('bfloat16', 'gpu', [(8, 0)], ()),
    ('float16', 'gpu', [(6, 1)], ()), ('float32', 'gpu', [(9, 0)], ()),
    ('float32', 'cpu', (), AMX), ('bfloat16', 'cpu', (), AVX512_BF16),
])
def test_explicit_values_the_devices_run_are_kept(requested, kind, capabilities, flags):
    choice = precision.choose(requested, kind, capabilities, flags)
    assert choice.dtype == requested and choice.reason == 'as asked'


def test_bfloat16_on_a_cpu_without_it_runs_with_a_warning_in_the_reason():
    choice = precision.choose('bfloat16', 'cpu', (), AVX2_ONLY)
    assert choice.dtype == 'bfloat16' and 'several times slower' in choice.reason


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / 'cpuinfo'
    cpuinfo.write_text('processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16 amx_tile\n\n'
                       'processor\t: 1\nflags\t\t: fpu avx2 avx512_bf16 amx_tile\n')
    assert {'avx2', 'avx512_bf16', 'amx_tile'} <= precision.cpu_flags(str(cpuinfo))
    assert precision.cpu_flags(str(tmp_path / 'missing')) == frozenset()


def test_the_precision_reaches_model_gardens_runtime_and_data():
    settings = flag_table.resolve({'training_data_path': 'a', 'validation_data_path': 'b',
                                   'num_classes': '3', 'max_steps': '900', 'job-dir': '/tmp/x'})
    params = experiment.build(settings, ['a'], ['b'], validation_steps=1, dtype='bfloat16')
    assert params.runtime.mixed_precision_dtype == 'bfloat16'
    assert params.task.train_data.dtype == params.task.validation_data.dtype == 'bfloat16'


def test_float16_on_this_cpu_is_refused_before_the_data_is_read(shapes_data, tmp_path):
    start = time.time()
    code, log = run_job(data_flags(shapes_data) + TINY_FLAGS + [
        f'--job-dir={tmp_path / "out"}', '--max_steps=1', '--precision=float16'],
        job_env(tmp_path / 'hp'), tmp_path / 'log.txt')
    print(f'refused in {time.time() - start:.1f} s')
    assert code == 2, log[-3000:]
    assert 'error: --precision=float16: CPUs run float16 emulated' in log
    assert 'Data check' not in log


def test_a_tiny_job_in_the_precision_auto_picks_here(shapes_data, tmp_path):
    """auto on this machine's CPU (bfloat16 where it has AMX or AVX-512 BF16); where
    auto picks float32, bfloat16 is asked for explicitly, so a mixed-precision job runs."""
    expected = precision.choose('auto', 'cpu', (), precision.cpu_flags())
    asked = 'auto' if expected.dtype == 'bfloat16' else 'bfloat16'
    out = tmp_path / 'out'
    code, log = run_job(data_flags(shapes_data) + TINY_FLAGS + [
        f'--job-dir={out}', '--max_steps=2', '--train_steps_per_eval=2',
        f'--precision={asked}', '--nms_score_threshold=0'],
        job_env(tmp_path / 'hp'), tmp_path / 'log.txt')
    assert code == 0, log[-3000:]
    reason = expected.reason if asked == 'auto' else precision.choose(
        'bfloat16', 'cpu', (), precision.cpu_flags()).reason
    assert f'precision bfloat16 ({reason}).' in log
    # Weights are kept in float32 and the exported model serves float32.
    reader = tf.train.load_checkpoint(str(out / 'checkpoints'))
    dtypes = reader.get_variable_to_dtype_map()
    kernels = [n for n in dtypes if n.endswith('kernel/.ATTRIBUTES/VARIABLE_VALUE')]
    assert kernels and all(dtypes[n] == tf.float32 for n in kernels)
    serve = tf.saved_model.load(str(out / 'model')).signatures['serving_default']
    assert all(spec.dtype in (tf.float32, tf.string)
               for spec in serve.structured_outputs.values())
    with open(out / 'model' / 'metrics.json') as f:
        assert json.load(f)['flags']['precision'] == asked
