"""Pascal VOC (one XML file per image, pixel boxes) to dataset_writer entries.

    VOC2012/
      Annotations/2008_000008.xml        --annotations_dir (<filename> names the image)
      JPEGImages/2008_000008.jpg         --images_dir
      ImageSets/Main/train.txt, val.txt  --train_list, --val_list (optional: image ids)
"""

import posixpath
import re
import xml.etree.ElementTree as ET
from typing import List, Optional, Set, Tuple

from object_detection_algo.data.dataset_writer import Box, ConversionError, ImageEntry, Summary


def _read(path: str) -> str:
    import tensorflow as tf
    with tf.io.gfile.GFile(path) as f:
        return f.read()


def _object_lines(text: str) -> List[int]:
    """Line number of each <object> element, in document order (ElementTree has none)."""
    return [text.count('\n', 0, m.start()) + 1 for m in re.finditer(r'<object[\s>]', text)]


def _split_ids(path: Optional[str]) -> Set[str]:
    """Image ids (file names without extension) listed one per line, as VOC ImageSets."""
    if not path:
        return set()
    return {line.split()[0] for line in _read(path).splitlines() if line.strip()}


def parse_annotation(path: str, images_dir: str) -> Tuple[ImageEntry, List[str]]:
    """One entry; a file that cannot be used raises ValueError naming it."""
    text = _read(path)
    name = posixpath.basename(path)
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise ValueError(f'{name}: not valid XML ({e})') from None
    filename = (root.findtext('filename') or '').strip()
    if not filename:
        raise ValueError(f'{name}: no <filename>')
    boxes, names = [], []
    for number, (obj, line) in enumerate(zip(root.iter('object'), _object_lines(text)), 1):
        origin = f'{name} line {line} (object {number})'
        label = (obj.findtext('name') or '').strip()
        try:
            xmin, ymin, xmax, ymax = (float(obj.findtext(f'bndbox/{k}'))
                                      for k in ('xmin', 'ymin', 'xmax', 'ymax'))
        except (TypeError, ValueError):
            raise ValueError(f'{origin}: <bndbox> needs numeric xmin, ymin, xmax, ymax') from None
        boxes.append(Box(ymin, xmin, ymax, xmax, label, origin))
        names.append(label)
    entry = ImageEntry(image_path=posixpath.join(images_dir, filename), filename=filename,
                       origin=name, boxes=boxes, normalized=False)
    return entry, names


def entries(annotations_dir: str, images_dir: str, summary: Summary,
            train_list: Optional[str] = None, val_list: Optional[str] = None
            ) -> Tuple[List[ImageEntry], List[str]]:
    """Entries for every XML in annotations_dir (or only the listed ones when
    split lists are given) and the class names found, sorted. Unusable
    annotation files are dropped into the summary."""
    import tensorflow as tf
    paths = sorted(tf.io.gfile.glob(posixpath.join(annotations_dir, '*.xml')))
    if not paths:
        raise ConversionError(f'{annotations_dir}: no .xml annotation files.')
    train_ids, val_ids = _split_ids(train_list), _split_ids(val_list)
    found, names = [], set()
    for path in paths:
        image_id = posixpath.basename(path)[:-len('.xml')]
        split = 'val' if image_id in val_ids else 'train' if image_id in train_ids else None
        if (train_ids or val_ids) and split is None:
            continue  # split lists given: only the images they name
        try:
            entry, classes = parse_annotation(path, images_dir)
        except ValueError as e:
            summary.drop_record('bad annotation', str(e))
            continue
        entry.split = split
        found.append(entry)
        names.update(classes)
    return found, sorted(names)
