"""Prediction throughput of an exported model on CPU: our `predict` pipeline
(instances in, JSON lines out) against bare `serving_default` calls on the
same images, at batch 1 and batch 16, one after the other in one go.

    .venv/bin/python bench/predict_throughput.py --model_dir demo_output/job/model [--images 128] [--repeats 3]
"""

import argparse
import io
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--model_dir', required=True)
    parser.add_argument('--images', type=int, default=128)
    parser.add_argument('--repeats', type=int, default=3, help='timed runs; the median is shown')
    parser.add_argument('--size', type=int, default=128)
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf
    from object_detection_algo.data import synthetic
    from object_detection_algo.serving import instances, model_client, predict

    rng = np.random.RandomState(0)
    images = [synthetic.encode(synthetic.draw_image(rng, args.size)[0])
              for _ in range(args.images)]
    keys = [str(i) for i in range(args.images)]
    serve = model_client.load(args.model_dir)
    model_client.predict(serve, images[:2], keys[:2])  # trace once, outside the clock

    def bare(batch):
        for i in range(0, len(images), batch):
            serve(encoded_image=tf.constant(images[i:i + batch]),
                  key=tf.constant(keys[i:i + batch]))

    def ours(batch):
        stream = (instances.Instance(k, image, k) for k, image in zip(keys, images))
        sink = io.StringIO()
        for answer in predict.answer(serve, stream, batch, None, None, None):
            sink.write(repr(answer))

    print(f'{args.images} images of {args.size}x{args.size} px, model {args.model_dir}')
    for batch in (1, 16):
        for name, fn in (('serving_default', bare), ('predict', ours)):
            fn(batch)  # warm up this batch shape
            rates = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                fn(batch)
                rates.append(args.images / (time.perf_counter() - start))
            print(f'batch {batch:2d}  {name:16s} {sorted(rates)[len(rates) // 2]:6.1f} images/s '
                  f'(runs: {", ".join(f"{r:.1f}" for r in rates)})')


if __name__ == '__main__':
    main()
