"""A small deterministic detection dataset: coloured circles, squares and
triangles on noisy backgrounds, written as TFRecords in the record format of docs/contract.md
format. The bundled default for the demo and the tests."""

import io
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

from object_detection_algo.data import label_map
from object_detection_algo.data.dataset_writer import make_example  # the project's one builder

CLASS_NAMES = ('circle', 'square', 'triangle')


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    y0, x0 = max(a[0], b[0]), max(a[1], b[1])
    y1, x1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, y1 - y0) * max(0.0, x1 - x0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def draw_image(rng: np.random.RandomState, size: int = 128, max_objects: int = 4
               ) -> Tuple[Image.Image, List[Tuple[float, float, float, float]], List[int]]:
    """One image with 1..max_objects shapes; boxes are [ymin, xmin, ymax, xmax] in pixels."""
    base = rng.randint(0, 256, size=3)
    noise = rng.normal(0, 18, size=(size, size, 3))
    pixels = np.clip(base[None, None, :] + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, 'RGB')
    draw = ImageDraw.Draw(image)
    boxes, labels = [], []
    for _ in range(rng.randint(1, max_objects + 1)):
        for _attempt in range(20):
            side = rng.randint(size // 6, size // 2)
            y0, x0 = rng.randint(0, size - side), rng.randint(0, size - side)
            box = (float(y0), float(x0), float(y0 + side), float(x0 + side))
            if all(_iou(box, other) < 0.2 for other in boxes):
                break
        else:
            continue
        label = int(rng.randint(1, len(CLASS_NAMES) + 1))
        colour = tuple(int(c) for c in (base + rng.randint(80, 176, size=3)) % 256)
        x1, y1 = x0 + side - 1, y0 + side - 1
        if label == 1:
            draw.ellipse([x0, y0, x1, y1], fill=colour)
        elif label == 2:
            draw.rectangle([x0, y0, x1, y1], fill=colour)
        else:
            draw.polygon([(x0 + side / 2, y0), (x0, y1), (x1, y1)], fill=colour)
        boxes.append(box)
        labels.append(label)
    return image, boxes, labels


def encode(image: Image.Image, fmt: str = 'jpeg') -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt.upper(), **({'quality': 90} if fmt == 'jpeg' else {}))
    return buffer.getvalue()


def write_split(path_prefix: str, num_images: int, seed: int, size: int = 128,
                num_shards: int = 2, first_id: int = 1) -> List[str]:
    """Writes num_images examples into num_shards files; returns their paths."""
    import tensorflow as tf
    rng = np.random.RandomState(seed)
    paths = [f'{path_prefix}-{i:05d}-of-{num_shards:05d}.tfrecord' for i in range(num_shards)]
    writers = [tf.io.TFRecordWriter(p) for p in paths]
    try:
        for index in range(num_images):
            image, boxes, labels = draw_image(rng, size)
            example = make_example(encode(image), boxes, labels, size, size,
                                   source_id=str(first_id + index), class_names=CLASS_NAMES,
                                   filename=f'shape_{first_id + index:06d}.jpg')
            writers[index % num_shards].write(example.SerializeToString())
    finally:
        for w in writers:
            w.close()
    return paths


def write_dataset(out_dir: str, num_train: int = 512, num_val: int = 128,
                  size: int = 128, seed: int = 0) -> Dict[str, str]:
    """Train and validation splits plus a label map; returns their globs."""
    os.makedirs(out_dir, exist_ok=True)
    write_split(os.path.join(out_dir, 'train'), num_train, seed, size)
    write_split(os.path.join(out_dir, 'val'), num_val, seed + 1, size, first_id=num_train + 1)
    label_map.write(os.path.join(out_dir, 'label_map.csv'), CLASS_NAMES)
    return {'train': os.path.join(out_dir, 'train-*'), 'val': os.path.join(out_dir, 'val-*')}
