"""Writing a detection dataset as sharded TFRecords (docs/contract.md, "The data"):
the one tf.train.Example builder of the project, the deterministic
train/validation split, the shards, the label map and the converters'
wrote/dropped summary.

A converter turns its format into `ImageEntry`s (an image path, its boxes,
class names and where each came from) and hands them to `write`, which reads
each image once, checks its boxes against the image and writes the records.
"""

import collections
import dataclasses
import io
import posixpath
import random
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from object_detection_algo import io_utils
from object_detection_algo.data import label_map
from object_detection_algo.errors import DataError

LABEL_MAP_FILE = 'label_map.csv'
REPORT_FILE = 'conversion_report.json'
FORMATS = {'JPEG': 'jpeg', 'PNG': 'png'}  # what the decoder takes


def make_example(encoded: bytes, boxes, labels, height: int, width: int,
                 source_id: Optional[str] = None, fmt: str = 'jpeg',
                 with_size: bool = True, class_names: Optional[Sequence[str]] = None,
                 filename: Optional[str] = None, normalized: bool = False,
                 is_crowd: Optional[Sequence[bool]] = None):
    """A tf.train.Example with the keys of docs/contract.md, plus class text (when
    class_names is given: label i is class_names[i-1]), source_id, filename,
    format and, when given, the COCO crowd flags. Boxes are [ymin, xmin, ymax,
    xmax], in pixels unless `normalized`."""
    import tensorflow as tf

    def floats(values):
        return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))

    def ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))

    def strings(values):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))

    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not normalized:
        boxes = boxes / np.array([height, width, height, width], dtype=np.float64)
    feature: Dict[str, tf.train.Feature] = {
        'image/encoded': strings([encoded]),
        'image/format': strings([fmt.encode()]),
        'image/object/bbox/ymin': floats(boxes[:, 0]),
        'image/object/bbox/xmin': floats(boxes[:, 1]),
        'image/object/bbox/ymax': floats(boxes[:, 2]),
        'image/object/bbox/xmax': floats(boxes[:, 3]),
        'image/object/class/label': ints(labels),
    }
    if class_names is not None:
        feature['image/object/class/text'] = strings(
            [class_names[i - 1].encode() for i in labels])
    if is_crowd is not None:
        feature['image/object/is_crowd'] = ints(int(bool(c)) for c in is_crowd)
    if with_size:
        feature['image/height'] = ints([height])
        feature['image/width'] = ints([width])
    if source_id is not None:
        feature['image/source_id'] = strings([source_id.encode()])
    if filename is not None:
        feature['image/filename'] = strings([filename.encode()])
    return tf.train.Example(features=tf.train.Features(feature=feature))


@dataclasses.dataclass
class Box:
    ymin: float
    xmin: float
    ymax: float
    xmax: float
    class_name: str
    origin: str  # where it came from, for messages: "a.xml line 40", "b.csv line 7"
    crowd: bool = False  # COCO iscrowd: ignored in training, matches nothing in evaluation


@dataclasses.dataclass
class ImageEntry:
    image_path: str  # local or gs://
    filename: str  # as written to image/filename
    origin: str  # the annotation that named the image, for messages
    boxes: List[Box]
    normalized: bool  # box coordinates in [0, 1] rather than pixels
    source_id: Optional[str] = None  # numeric ids are best (the COCO evaluator needs numbers)
    split: Optional[str] = None  # 'train' / 'val' (or 'test') when the input fixes it


@dataclasses.dataclass
class Summary:
    """What a conversion wrote and dropped, and why."""
    written: Dict[str, int] = dataclasses.field(default_factory=dict)  # split -> records
    boxes_written: int = 0
    crowd_boxes_written: int = 0
    dropped_records: List[Tuple[str, str]] = dataclasses.field(default_factory=list)  # (reason, where)
    dropped_boxes: List[Tuple[str, str]] = dataclasses.field(default_factory=list)
    kept_invalid_boxes: List[Tuple[str, str]] = dataclasses.field(default_factory=list)
    files: Dict[str, List[str]] = dataclasses.field(default_factory=dict)
    label_map: str = ''
    notes: List[str] = dataclasses.field(default_factory=list)  # how the input was read

    def drop_record(self, reason: str, where: str) -> None:
        self.dropped_records.append((reason, where))

    def drop_box(self, reason: str, where: str) -> None:
        self.dropped_boxes.append((reason, where))

    def as_dict(self) -> dict:
        def counted(items):
            return {k: {'count': len(v), 'where': v} for k, v in _grouped(items).items()}
        return {'records_written': dict(self.written), 'boxes_written': self.boxes_written,
                'crowd_boxes_written': self.crowd_boxes_written,
                'records_dropped': counted(self.dropped_records),
                'boxes_dropped': counted(self.dropped_boxes),
                'invalid_boxes_kept': counted(self.kept_invalid_boxes),
                'files': self.files, 'label_map': self.label_map, 'notes': self.notes}

    def text(self, examples: int = 3) -> str:
        lines = ['Wrote ' + ', '.join(f'{n} {split} records' for split, n in self.written.items())
                 + f' ({sum(self.written.values())} images, {self.boxes_written} boxes).']
        if self.crowd_boxes_written:
            lines.append(f'Crowd boxes (iscrowd=1) among them: {self.crowd_boxes_written}, '
                         'written with image/object/is_crowd=1.')
        for title, items in (('Dropped records', self.dropped_records),
                             ('Dropped boxes', self.dropped_boxes),
                             ('Kept invalid boxes (--keep_invalid_boxes)', self.kept_invalid_boxes)):
            if title.startswith('Kept') and not items:
                continue
            lines.append(f'{title}: {len(items)}' + (':' if items else '.'))
            for reason, wheres in _grouped(items).items():
                shown = '; '.join(wheres[:examples])
                more = f'; ... {len(wheres) - examples} more' if len(wheres) > examples else ''
                lines.append(f'  {len(wheres)} {reason}: {shown}{more}')
        lines.append(f'Label map: {self.label_map}')
        lines.extend(f'Note: {note}' for note in self.notes)
        return '\n'.join(lines)


def _grouped(items: List[Tuple[str, str]]) -> Dict[str, List[str]]:
    out = collections.defaultdict(list)
    for reason, where in items:
        out[reason].append(where)
    return dict(sorted(out.items()))


class ConversionError(DataError):
    """Input that cannot be converted at all (no annotations, bad options)."""


def read_names(path: str) -> List[str]:
    """Class names, one per line (YOLO's names file; --class_names)."""
    if not io_utils.exists(path):
        raise ConversionError(f'class names file {path}: no such file.')
    names = [line.strip() for line in io_utils.read_text(path).splitlines() if line.strip()]
    if len(set(names)) != len(names):
        raise ConversionError(f'class names file {path}: a name is repeated.')
    if not names:
        raise ConversionError(f'class names file {path} is empty.')
    return names


def split_entries(entries: List[ImageEntry], val_fraction: float, seed: int
                  ) -> Dict[str, List[ImageEntry]]:
    """Entries with a fixed split keep it; the others are shuffled with `seed`
    (in a stable order: by file name) and the first val_fraction of them go
    to validation. Always 'train' and 'val', then any other fixed split ('test')."""
    fixed = {'train': [], 'val': []}
    for entry in entries:
        if entry.split is not None:
            fixed.setdefault(entry.split, []).append(entry)
    free = sorted((e for e in entries if e.split is None), key=lambda e: e.filename)
    random.Random(seed).shuffle(free)
    num_val = int(round(len(free) * val_fraction))
    fixed['train'] += free[num_val:]
    fixed['val'] += free[:num_val]
    return fixed


def _image_info(data: bytes) -> Tuple[int, int, str]:
    """(height, width, format) from the image header; ValueError if not JPEG/PNG."""
    from PIL import Image
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt, (width, height) = image.format, image.size
    except Exception as e:  # Pillow raises many kinds on bad bytes
        raise ValueError(f'not a readable image ({e})') from None
    if fmt not in FORMATS:
        raise ValueError(f'{fmt} image: the data must be JPEG or PNG')
    return height, width, FORMATS[fmt]


# Coordinates this far outside the image are rounding in the source file
# (YOLO's 6 decimals, 1-based VOC pixels) and are moved onto the edge.
EDGE_TOLERANCE = {True: 1e-4, False: 0.5}  # normalized, pixels


def _box_problem(box: Box, height: int, width: int, normalized: bool) -> Tuple[str, str, str]:
    """('', '', '') for a good box, else (kind, reason, detail); kind is
    'outside' or 'degenerate'. Coordinates within EDGE_TOLERANCE outside are
    moved onto the edge."""
    limit_y, limit_x = (1.0, 1.0) if normalized else (height, width)
    tolerance = EDGE_TOLERANCE[normalized]
    for name, limit in (('ymin', limit_y), ('xmin', limit_x), ('ymax', limit_y), ('xmax', limit_x)):
        value = getattr(box, name)
        if -tolerance <= value < 0 or limit < value <= limit + tolerance:
            setattr(box, name, min(max(value, 0.0), limit))
    inside = (0 <= box.ymin <= limit_y and 0 <= box.ymax <= limit_y
              and 0 <= box.xmin <= limit_x and 0 <= box.xmax <= limit_x)  # False for NaN
    if not inside:
        unit = 'normalized' if normalized else f'pixels, image {width}x{height}'
        return 'outside', 'box outside the image', (
            f'xmin={box.xmin:g}, ymin={box.ymin:g}, xmax={box.xmax:g}, ymax={box.ymax:g}; {unit}')
    if box.xmin == box.xmax or box.ymin == box.ymax:
        return 'degenerate', 'zero-area box', ''
    if box.xmin > box.xmax or box.ymin > box.ymax:
        return 'degenerate', 'box with min > max', ''
    return '', '', ''


def write(entries: Iterable[ImageEntry], class_names: Sequence[str], out_dir: str,
          val_fraction: float = 0.2, seed: int = 0, num_shards: int = 2,
          keep_invalid_boxes: bool = False, summary: Optional[Summary] = None) -> Summary:
    """Writes <out_dir>/{train,val}-NNNNN-of-NNNNN.tfrecord (and test-* when entries
    are fixed to 'test') and label_map.csv.

    Records get source_id 1..N in file-name order unless the entry has one.
    Missing or unreadable images drop the record; boxes outside the image or
    of an unknown class are dropped (the image is kept); zero-area and
    inverted boxes too, unless keep_invalid_boxes. The same input gives the
    same files, byte for byte.
    """
    import tensorflow as tf

    summary = summary or Summary()
    class_ids = {name: i for i, name in enumerate(class_names, 1)}
    entries = sorted(entries, key=lambda e: e.filename)
    for number, entry in enumerate(entries, 1):
        if entry.source_id is None:
            entry.source_id = str(number)
    tf.io.gfile.makedirs(out_dir)
    for split, items in split_entries(entries, val_fraction, seed).items():
        shards = max(1, min(num_shards, len(items)))
        paths = [posixpath.join(out_dir, f'{split}-{i:05d}-of-{shards:05d}.tfrecord')
                 for i in range(shards)]
        writers = [tf.io.TFRecordWriter(p) for p in paths]
        written = 0
        try:
            for entry in items:
                example = _entry_example(entry, class_ids, class_names, keep_invalid_boxes,
                                         summary)
                if example is not None:
                    writers[written % shards].write(example.SerializeToString())
                    written += 1
        finally:
            for w in writers:
                w.close()
        summary.written[split] = written
        summary.files[split] = paths
    summary.label_map = posixpath.join(out_dir, LABEL_MAP_FILE)
    label_map.write(summary.label_map, class_names)
    io_utils.write_json(posixpath.join(out_dir, REPORT_FILE), summary.as_dict())
    return summary


def _entry_example(entry: ImageEntry, class_ids: Dict[str, int], class_names: Sequence[str],
                   keep_invalid_boxes: bool, summary: Summary):
    import tensorflow as tf
    if not tf.io.gfile.exists(entry.image_path):
        summary.drop_record('missing image', f'{entry.origin}: {entry.image_path} not found')
        return None
    with tf.io.gfile.GFile(entry.image_path, 'rb') as f:
        data = f.read()
    try:
        height, width, fmt = _image_info(data)
    except ValueError as e:
        summary.drop_record('unreadable image', f'{entry.origin}: {entry.image_path}: {e}')
        return None
    boxes, labels, crowd = [], [], []
    for box in entry.boxes:
        if box.class_name not in class_ids:
            summary.drop_box('unknown class', f'{box.origin}: class {box.class_name!r} is not '
                             f'in the class names ({", ".join(class_names)})')
            continue
        kind, reason, detail = _box_problem(box, height, width, entry.normalized)
        where = f'{box.origin} ({detail})' if detail else box.origin
        if kind == 'outside' or (kind == 'degenerate' and not keep_invalid_boxes):
            summary.drop_box(reason, where)
            continue
        if kind:
            summary.kept_invalid_boxes.append((reason, where))
        boxes.append((box.ymin, box.xmin, box.ymax, box.xmax))
        labels.append(class_ids[box.class_name])
        crowd.append(box.crowd)
    summary.boxes_written += len(boxes)
    summary.crowd_boxes_written += sum(crowd)
    return make_example(data, boxes, labels, height, width, source_id=entry.source_id,
                        fmt=fmt, class_names=class_names, filename=entry.filename,
                        normalized=entry.normalized, is_crowd=crowd if any(crowd) else None)
