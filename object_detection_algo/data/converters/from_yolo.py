"""YOLO txt (one `class cx cy w h` line per box, normalized, classes from 0,
a .txt beside each image or in a labels folder) plus a names file, to
dataset_writer entries.

    yolo/
      obj.names          --names: class 0 on the first line
      images/a.jpg       --images_dir
      labels/a.txt       --labels_dir (default: beside the images); no .txt = no boxes
"""

import posixpath
from typing import List, Optional

from object_detection_algo.data.dataset_writer import Box, ConversionError, ImageEntry, Summary

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')


def _boxes(text: str, name: str, class_names: List[str], summary: Summary) -> List[Box]:
    boxes = []
    for line_number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        origin = f'{name} line {line_number}'
        parts = line.split()
        try:
            index, cx, cy, w, h = int(parts[0]), *(float(v) for v in parts[1:5])
            if len(parts) != 5:
                raise ValueError
        except (ValueError, IndexError):
            summary.drop_box('bad line', f'{origin}: {line.strip()!r} is not "class cx cy w h"')
            continue
        # An unknown index keeps a name the writer reports as an unknown class.
        label = class_names[index] if 0 <= index < len(class_names) else f'index {index}'
        boxes.append(Box(cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2, label, origin))
    return boxes


def entries(images_dir: str, names_path: str, summary: Summary,
            labels_dir: Optional[str] = None) -> List[ImageEntry]:
    """Every image in images_dir; its boxes from <labels_dir>/<stem>.txt (labels_dir
    defaults to images_dir). An image without a .txt is a negative example."""
    import tensorflow as tf
    from object_detection_algo.data.dataset_writer import read_names
    class_names = read_names(names_path)
    labels_dir = labels_dir or images_dir
    images = sorted(p for p in tf.io.gfile.listdir(images_dir)
                    if p.lower().endswith(IMAGE_EXTENSIONS))
    if not images:
        raise ConversionError(f'{images_dir}: no {"/".join(IMAGE_EXTENSIONS)} images.')
    found = []
    for filename in images:
        label_name = posixpath.splitext(filename)[0] + '.txt'
        label_path = posixpath.join(labels_dir, label_name)
        boxes = []
        if tf.io.gfile.exists(label_path):
            with tf.io.gfile.GFile(label_path) as f:
                boxes = _boxes(f.read(), label_name, class_names, summary)
        found.append(ImageEntry(image_path=posixpath.join(images_dir, filename),
                                filename=filename, origin=label_name, boxes=boxes,
                                normalized=True))
    return found
