"""CSV (one box per row: file name, label, box; pixels or normalized; any
column order) to dataset_writer entries. A row with a file name and an empty
label and box is an image without boxes.

    data/
      boxes.csv        --csv: filename,label,xmin,ymin,xmax,ymax (or the --columns order)
      images/a.jpg     --images_dir (the filename column is relative to it)
"""

import csv
import posixpath
from typing import List, Optional, Sequence, Tuple

from object_detection_algo.data.dataset_writer import Box, ConversionError, ImageEntry, Summary

ROLES = ('filename', 'label', 'xmin', 'ymin', 'xmax', 'ymax')
DEFAULT_COLUMNS = 'filename,label,xmin,ymin,xmax,ymax'


def parse_columns(text: str) -> List[str]:
    """The role of each column, in order; `-` (or any other name) marks a column to ignore."""
    columns = [c.strip() for c in text.split(',')]
    missing = [r for r in ROLES if r not in columns]
    repeated = {c for c in columns if c in ROLES and columns.count(c) > 1}
    if missing or repeated:
        raise ConversionError(
            f'--columns={text}: every one of {",".join(ROLES)} must name exactly one column '
            f'(missing: {",".join(missing) or "none"}; repeated: {",".join(sorted(repeated)) or "none"}).')
    return columns


def entries(csv_path: str, images_dir: str, summary: Summary,
            columns: Sequence[str] = tuple(DEFAULT_COLUMNS.split(',')),
            normalized: bool = False, class_names: Optional[List[str]] = None
            ) -> Tuple[List[ImageEntry], List[str]]:
    """(entries, class names: the given ones, else the labels seen, sorted).
    A first row whose box columns are not numbers is a header."""
    import tensorflow as tf
    name = posixpath.basename(csv_path)
    if not tf.io.gfile.exists(csv_path):
        raise ConversionError(f'{csv_path}: no such file.')
    with tf.io.gfile.GFile(csv_path) as f:
        rows = list(csv.reader(f))
    at = {role: columns.index(role) for role in ROLES}
    by_file = {}
    seen = set()
    for line_number, row in enumerate(rows, 1):
        if not any(cell.strip() for cell in row):
            continue
        origin = f'{name} line {line_number}'
        if len(row) < len(columns):
            summary.drop_box('bad row', f'{origin}: {len(row)} columns, expected {len(columns)} '
                             f'({",".join(columns)})')
            continue
        cell = {role: row[i].strip() for role, i in at.items()}
        box_cells = [cell[r] for r in ('ymin', 'xmin', 'ymax', 'xmax')]
        try:
            coords = [float(c) for c in box_cells]
        except ValueError:
            if line_number == 1:
                continue  # a header
            if not cell['label'] and not any(box_cells):
                by_file.setdefault(cell['filename'], (origin, []))  # an image without boxes
                continue
            summary.drop_box('bad row', f'{origin}: box {box_cells} is not four numbers')
            continue
        entry_boxes = by_file.setdefault(cell['filename'], (origin, []))[1]
        entry_boxes.append(Box(*coords, cell['label'], origin))
        seen.add(cell['label'])
    if not by_file:
        raise ConversionError(f'{csv_path}: no rows with a file name and a box.')
    found = [ImageEntry(image_path=posixpath.join(images_dir, filename), filename=filename,
                        origin=origin, boxes=boxes, normalized=normalized)
             for filename, (origin, boxes) in sorted(by_file.items())]
    return found, class_names or sorted(seen)
