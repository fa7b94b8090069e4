"""Where a training step's time goes, in one process, for a precision: the
input pipeline alone (decode, augment, anchor labels, batch), training steps
on one batch held in memory (forward, backward, optimizer), training steps on
the real pipeline, one evaluation split into inference and COCO scoring, and
the first and a later export of the best model.

    .venv/bin/python bench/profile_training.py [--precision float32] [--steps 45]

The demo's config (ResNet-18, 128 px, FPN 3-5, 64 filters) at batch 16.
"""

import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def timed(fn):
    start = time.time()
    result = fn()
    return time.time() - start, result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--precision', default='float32', choices=('float32', 'bfloat16'))
    parser.add_argument('--steps', type=int, default=45)
    parser.add_argument('--batch', type=int, default=16)
    args = parser.parse_args()

    from object_detection_algo import logs
    logs.configure(0)
    import tensorflow as tf
    from official.core import train_utils
    from official.modeling import performance
    from object_detection_algo.adapters.retinanet_task import RetinaNetTask
    from object_detection_algo.data import synthetic
    from object_detection_algo.demo import DEMO_FLAGS
    from object_detection_algo.training import best_model, experiment, flag_table

    work = tempfile.mkdtemp(prefix='profile_')
    data = synthetic.write_dataset(os.path.join(work, 'data'), num_train=256, num_val=64)
    raw = {k: str(v) for k, v in DEMO_FLAGS.items()}
    raw.update({'training_data_path': data['train'], 'validation_data_path': data['val'],
                'job-dir': work, 'train_batch_size': str(args.batch),
                'max_steps': str(10 * args.steps)})
    settings = flag_table.resolve(raw)
    params = experiment.build(settings, tf.io.gfile.glob(data['train']),
                              tf.io.gfile.glob(data['val']), validation_steps=-1,
                              dtype=args.precision)
    params.trainer.steps_per_loop = args.steps
    performance.set_mixed_precision_policy(args.precision)
    task = RetinaNetTask(params.task)
    trainer = train_utils.create_trainer(params, task, train=True, evaluate=True)
    n = args.steps

    pipeline = iter(task.build_inputs(params.task.train_data))
    next(pipeline)
    seconds, _ = timed(lambda: [next(pipeline) for _ in range(n)])
    input_rate = n / seconds

    def steps_per_second(iterator):
        trainer._train_iter = iterator  # noqa: the trainer's own iterator, replaced
        seconds, _ = timed(lambda: trainer.train(tf.constant(n)))
        return n / seconds

    one_batch = iter(task.build_inputs(params.task.train_data).take(1).cache().repeat())
    real = iter(task.build_inputs(params.task.train_data))
    steps_per_second(real)  # traces, warms oneDNN's kernels
    rates = {'one': [], 'real': []}
    for _ in range(2):  # alternated, the better of two: the machine is shared
        rates['one'].append(steps_per_second(one_batch))
        rates['real'].append(steps_per_second(real))
    compute_rate, real_rate = max(rates['one']), max(rates['real'])

    trainer.evaluate(tf.constant(1))  # traces
    scoring = []  # the seconds pycocotools takes inside the evaluation
    score = task.coco_metric.evaluate
    task.coco_metric.evaluate = lambda: (lambda t: (scoring.append(t[0]), t[1])[1])(
        timed(score))
    evaluation_seconds, _ = timed(lambda: trainer.evaluate(tf.constant(-1)))
    scoring_seconds = scoring[-1]

    checkpoint = tf.train.Checkpoint(model=trainer.model).write(os.path.join(work, 'ckpt'))
    exporter = best_model.Exporter(params)
    first_export, _ = timed(lambda: exporter.export(checkpoint, os.path.join(work, 'e1')))
    later_export, _ = timed(lambda: exporter.export(checkpoint, os.path.join(work, 'e2')))

    step_ms = 1000 / real_rate
    print(f'\n{args.precision}, batch {args.batch}, {n} steps a loop, CPU x{os.cpu_count()}')
    print('| part | rate | ms per step |')
    print('|---|---|---|')
    print(f'| input pipeline alone | {input_rate:.1f} batches/s | {1000 / input_rate:.0f} |')
    print(f'| training steps on one batch in memory (forward, backward, optimizer) | '
          f'{compute_rate:.2f} steps/s | {1000 / compute_rate:.0f} |')
    print(f'| training steps on the real pipeline | {real_rate:.2f} steps/s | {step_ms:.0f} |')
    print(f'| evaluation of 64 images (inference and scoring) | {evaluation_seconds:.1f} s | |')
    print(f'| of which COCO scoring (pycocotools) | {scoring_seconds:.1f} s | |')
    print(f'| export, first (builds and traces the serving model) | {first_export:.1f} s | |')
    print(f'| export, later (weights only) | {later_export:.1f} s | |')


if __name__ == '__main__':
    main()
