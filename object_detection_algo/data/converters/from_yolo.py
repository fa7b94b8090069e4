"""YOLO txt (one `class cx cy w h` line per box, normalized, classes from 0)
to dataset_writer entries, from one of two layouts.

Folders and a names file; train and val, when given apart, become train-* and
val-* as they are (else --val_fraction splits the images):

    yolo/
      obj.names          --names: class 0 on the first line
      images/a.jpg       --images_dir
      labels/a.txt       --labels_dir (default: beside the images); no .txt = no boxes
      val/images/b.jpg   --val_images_dir (optional: a validation set of its own)
      val/labels/b.txt   --val_labels_dir (default: beside those images)

Ultralytics' data.yaml (--data), whose `path` (relative: from the YAML's own
folder; absent: that folder) holds the `train`, `val` and optional `test`
image folders (or .txt lists of image paths, or lists of either); each
image's labels are found by turning its last `images` folder into `labels`:

    dataset/
      data.yaml          path: .   train: images/train   val: images/val
                         names: {0: cat, 1: dog}   (or a list: [cat, dog])
      images/train/a.jpg    labels/train/a.txt
      images/val/b.jpg      labels/val/b.txt
      images/test/c.jpg     labels/test/c.txt    (test: written to test-*)
"""

import posixpath
from typing import Dict, List, Optional, Tuple

from object_detection_algo import io_utils
from object_detection_algo.data.dataset_writer import Box, ConversionError, ImageEntry, Summary

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')
YAML_SPLITS = ('train', 'val', 'test')  # test is optional


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


def _entry(image_path: str, label_path: str, label_name: str, class_names: List[str],
           summary: Summary, split: Optional[str]) -> ImageEntry:
    """One image; no label file means no boxes (a negative example)."""
    import tensorflow as tf
    boxes = []
    if tf.io.gfile.exists(label_path):
        with tf.io.gfile.GFile(label_path) as f:
            boxes = _boxes(f.read(), label_name, class_names, summary)
    return ImageEntry(image_path=image_path, filename=posixpath.basename(image_path),
                      origin=label_name, boxes=boxes, normalized=True, split=split)


def _images_in(folder: str) -> List[str]:
    """The JPEG and PNG files of a folder (not its subfolders), sorted, as paths."""
    import tensorflow as tf
    return [posixpath.join(folder, name) for name in sorted(tf.io.gfile.listdir(folder))
            if name.lower().endswith(IMAGE_EXTENSIONS)]


def entries(images_dir: str, class_names: List[str], summary: Summary,
            labels_dir: Optional[str] = None, split: Optional[str] = None) -> List[ImageEntry]:
    """Every image in images_dir; its boxes from <labels_dir>/<stem>.txt (labels_dir
    defaults to images_dir). An image without a .txt is a negative example."""
    import tensorflow as tf
    if not tf.io.gfile.isdir(images_dir):
        raise ConversionError(f'{images_dir}: no such folder (the images of YOLO labels).')
    images = _images_in(images_dir)
    if not images:
        raise ConversionError(f'{images_dir}: no {"/".join(IMAGE_EXTENSIONS)} images.')
    labels_dir = labels_dir or images_dir
    found = []
    for image_path in images:
        label_name = posixpath.splitext(posixpath.basename(image_path))[0] + '.txt'
        found.append(_entry(image_path, posixpath.join(labels_dir, label_name), label_name,
                            class_names, summary, split))
    return found


# data.yaml (Ultralytics)

def _resolve(folder: str, path: str) -> str:
    """`path` as it is when absolute (/..., gs://...), else from `folder`; with
    `.` and `..` worked out (gs:// has no such folders)."""
    full = path if path.startswith('/') or '://' in path else posixpath.join(folder, path)
    scheme, sep, rest = full.rpartition('://')
    return scheme + sep + posixpath.normpath(rest)


def label_path(image_path: str) -> str:
    """Ultralytics' convention: the last folder named `images` becomes `labels`,
    the extension `.txt`; with no such folder, the .txt is beside the image."""
    parts = image_path.split('/')
    folders = parts[:-1]
    if 'images' in folders:
        parts[len(folders) - 1 - folders[::-1].index('images')] = 'labels'
    return posixpath.splitext('/'.join(parts))[0] + '.txt'


def _yaml_names(data: dict, yaml_path: str) -> List[str]:
    """`names` as a list, or as a dict {index: name} covering 0..n-1."""
    names = data['names']
    if isinstance(names, dict):
        try:
            by_index = {int(k): v for k, v in names.items()}
        except (TypeError, ValueError):
            raise ConversionError(f'{yaml_path}: the keys of `names` must be class indices '
                                  '0, 1, ... (e.g. names: {0: cat, 1: dog}).') from None
        missing = sorted(set(range(len(by_index))) - set(by_index))
        if missing:
            raise ConversionError(
                f'{yaml_path}: `names` has {len(by_index)} classes but not index '
                f'{", ".join(map(str, missing))}; give every index 0..{len(by_index) - 1} a name.')
        names = [by_index[i] for i in range(len(by_index))]
    if not isinstance(names, list) or not names:
        raise ConversionError(f'{yaml_path}: `names` must be a list of class names (class 0 '
                              'first) or a dict {index: name}.')
    names = [str(n) for n in names]
    if len(set(names)) != len(names):
        raise ConversionError(f'{yaml_path}: a class name is repeated in `names`.')
    if 'nc' in data and data['nc'] != len(names):
        raise ConversionError(f'{yaml_path}: nc is {data["nc"]} but `names` has {len(names)} '
                              'classes; make them agree (or drop nc).')
    return names


def _split_images(yaml_path: str, root: str, split: str, value) -> List[str]:
    """The image paths of one split: folders and .txt lists (relative lines are
    taken from the list's folder), one or a list of them."""
    import tensorflow as tf
    images = []
    for item in value if isinstance(value, list) else [value]:
        path = _resolve(root, str(item))
        if not tf.io.gfile.exists(path):
            raise ConversionError(
                f'{yaml_path}: {split}: {item} is {path}, which does not exist; fix `{split}` '
                f'or `path` (the dataset folder, from the folder of the YAML file: {root}).')
        if path.endswith('.txt'):
            lines = io_utils.read_text(path).splitlines()
            images += [_resolve(posixpath.dirname(path), line.strip())
                       for line in lines if line.strip()]
        else:
            found = _images_in(path)
            if not found:
                raise ConversionError(f'{yaml_path}: {split}: {path} has no '
                                      f'{"/".join(IMAGE_EXTENSIONS)} images.')
            images += found
    return images


def read_data_yaml(yaml_path: str) -> Tuple[str, Dict[str, List[str]], List[str]]:
    """(dataset root, {split: image paths}, class names) of an Ultralytics data.yaml."""
    import yaml
    if not io_utils.exists(yaml_path):
        raise ConversionError(f'{yaml_path}: no such file (--data takes a YOLO data.yaml).')
    try:
        data = yaml.safe_load(io_utils.read_text(yaml_path))
    except yaml.YAMLError as e:
        raise ConversionError(f'{yaml_path}: not valid YAML ({e}).') from None
    if not isinstance(data, dict):
        raise ConversionError(f'{yaml_path}: expected keys path, train, val and names.')
    missing = [key for key in ('train', 'val', 'names') if not data.get(key)]
    if missing:
        raise ConversionError(
            f'{yaml_path}: no {", ".join(missing)}. A data.yaml needs train and val (image '
            'folders or .txt lists, relative to `path`) and names (class 0 first).')
    names = _yaml_names(data, yaml_path)
    root = _resolve(posixpath.dirname(yaml_path) or '.', str(data.get('path') or '.'))
    splits = {split: _split_images(yaml_path, root, split, data[split])
              for split in YAML_SPLITS if data.get(split)}
    return root, splits, names


def data_yaml_entries(yaml_path: str, summary: Summary) -> Tuple[List[ImageEntry], List[str]]:
    """(entries with their split, class names) of an Ultralytics data.yaml. A
    class index past `names` is an error: the YAML does not describe the labels."""
    root, splits, names = read_data_yaml(yaml_path)
    found = []
    for split, images in splits.items():
        for image_path in images:
            labels = label_path(image_path)
            shown = labels[len(root) + 1:] if labels.startswith(root + '/') else labels
            found.append(_entry(image_path, labels, shown, names, summary, split))
    uncovered = [box for entry in found for box in entry.boxes if box.class_name not in names]
    if uncovered:
        raise ConversionError(
            f'{yaml_path}: `names` covers classes 0..{len(names) - 1}, but {uncovered[0].origin} '
            f'uses class {uncovered[0].class_name} ({len(uncovered)} box(es) use classes past '
            'the names); add the missing names to `names` or fix the labels.')
    summary.notes.append(f'{yaml_path}: dataset folder {root}; ' + '; '.join(
        f'{split}: {len(images)} images' for split, images in splits.items())
        + '; labels from each image path with its last images/ folder made labels/.')
    return found, names
