"""A stand-in for Model Garden's published ImageNet ResNet checkpoints: the
same trainer (`python -m official.vision.train --experiment=resnet_imagenet`)
run for a few steps on a few small random images (64 px, 4 a step: smaller makes
the last feature map 1x1 and batch norm blows up), so the checkpoint's layout
(variable names and shapes) is that of the published files. Used by the tests
of --init_checkpoint and by bench/pretrained_bccd.py.

    python tests/imagenet_stand_in.py OUT_DIR [DEPTH]   # prints the checkpoint prefix
"""

import json
import os
import subprocess
import sys

import numpy as np

PUBLISHED_STEP = 28080  # ckpt-28080: the name Model Garden publishes its ResNet-50 under


def write_records(path: str, count: int = 8, size: int = 64, seed: int = 0) -> None:
    import tensorflow as tf
    rng = np.random.default_rng(seed)
    with tf.io.TFRecordWriter(path) as writer:
        for i in range(count):
            pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            feature = {
                'image/encoded': tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[tf.io.encode_jpeg(pixels).numpy()])),
                'image/class/label': tf.train.Feature(int64_list=tf.train.Int64List(
                    value=[i % 10])),
            }
            writer.write(tf.train.Example(
                features=tf.train.Features(feature=feature)).SerializeToString())


def train(out_dir: str, depth: int = 50, steps: int = 2) -> str:
    """Trains the classifier into out_dir/model; returns its checkpoint prefix."""
    os.makedirs(out_dir, exist_ok=True)
    records = os.path.join(out_dir, 'images.tfrecord')
    write_records(records)
    model_dir = os.path.join(out_dir, 'model')
    params = {
        'runtime': {'enable_xla': False, 'distribution_strategy': 'one_device',
                    'num_gpus': 0},
        'task': {'model': {'num_classes': 10, 'input_size': [64, 64, 3],
                           'backbone': {'resnet': {'model_id': depth}}},
                 'train_data': {'input_path': records, 'global_batch_size': 4,
                                'shuffle_buffer_size': 8},
                 'validation_data': {'input_path': records, 'global_batch_size': 2}},
        'trainer': {'train_steps': steps, 'steps_per_loop': 1, 'summary_interval': 1,
                    'checkpoint_interval': steps, 'validation_interval': steps,
                    # ImageNet's schedule is for batches of 4096.
                    'optimizer_config': {
                        'learning_rate': {'type': 'constant',
                                          'constant': {'learning_rate': 0.001}},
                        'warmup': {'type': None}}},
    }
    env = dict(os.environ, TF_USE_LEGACY_KERAS='1', TF_CPP_MIN_LOG_LEVEL='2')
    subprocess.run([sys.executable, '-m', 'official.vision.train',
                    '--experiment=resnet_imagenet', '--mode=train',
                    f'--model_dir={model_dir}', f'--params_override={json.dumps(params)}'],
                   env=env, check=True, capture_output=True)
    import tensorflow as tf
    return tf.train.latest_checkpoint(model_dir)


def as_published(prefix: str, folder: str) -> str:
    """Copies a checkpoint to folder/ckpt-28080.*, the published file's name."""
    import tensorflow as tf
    tf.io.gfile.makedirs(folder)
    target = os.path.join(folder, f'ckpt-{PUBLISHED_STEP}')
    for path in tf.io.gfile.glob(prefix + '.*'):
        tf.io.gfile.copy(path, target + path[len(prefix):], overwrite=True)
    return target


if __name__ == '__main__':
    print(train(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 50))
