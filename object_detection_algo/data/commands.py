"""The `validate` and `convert` commands of `python -m object_detection_algo`:
their arguments and what they run (the work is in record_checks.py and the
converters/ modules). Exit statuses: validate 0 clean, 1 errors found, 2 bad
arguments; convert 0 written, 2 input it cannot convert."""

import posixpath
from typing import Tuple

from object_detection_algo import errors

VAL_FRACTION = 0.2  # when the input has no validation set of its own


def add_parsers(sub) -> None:
    val = sub.add_parser(
        'validate', help='check TFRecords before training (exit 0: no errors, 1: errors)',
        description='Streams the records and reports problems by file, record (from 0) and '
                    'source_id. Exit status 0 when no errors (warnings and info allowed), 1 when '
                    'errors were found, 2 on bad arguments.')
    val.add_argument('--data_path', required=True, help='TFRecord glob, local or gs://')
    val.add_argument('--num_classes', type=int, required=True)
    val.add_argument('--image_size', default='640,640',
                     help='model input H,W (as the job flag; one number: square) for box '
                          'sizes and the anchor coverage')
    val.add_argument('--anchor_size', type=float, default=4.0, help='as the job flag')
    val.add_argument('--fpn_min_level', type=int, default=3, help='as the job flag')
    val.add_argument('--fpn_max_level', type=int, default=7, help='as the job flag')
    val.add_argument('--bbox_aspect_ratios', default='1.0,2.0,0.5',
                     help='anchor width/height ratios, comma-separated (as the job flag)')
    val.add_argument('--max_num_bboxes_in_training', type=int, default=100,
                     help='boxes per image the job keeps (as the job flag); more are warned')
    val.add_argument('--max_records', type=int, default=None,
                     help='check a sample of at most this many records, spread over the files')
    val.add_argument('--report', help='also write the full report as JSON here')
    val.add_argument('--examples', type=int, default=3, help='examples printed per problem')

    conv = sub.add_parser('convert', help='convert VOC / COCO / YOLO / CSV to TFRecords')
    fmt = conv.add_subparsers(dest='source_format', required=True)
    voc = fmt.add_parser('voc', help='Pascal VOC: a folder of XML files and one of images')
    voc.add_argument('--annotations_dir', required=True)
    voc.add_argument('--images_dir', required=True)
    voc.add_argument('--train_list', help='image ids for training, one per line (VOC ImageSets)')
    voc.add_argument('--val_list', help='image ids for validation, one per line')
    coco = fmt.add_parser('coco', help='COCO instances JSON and its image folder')
    coco.add_argument('--instances', required=True, help='instances_*.json')
    coco.add_argument('--images_dir', required=True)
    coco.add_argument('--val_instances',
                      help='instances JSON of the validation set: its images become val-*, '
                           'those of --instances train-*')
    coco.add_argument('--val_images_dir', help='image folder of --val_instances')
    yolo = fmt.add_parser('yolo', help='YOLO txt files and a class names file, or a data.yaml')
    yolo.add_argument('--data', help="Ultralytics' data.yaml (path, train, val, names): "
                                     'instead of the folder and names flags')
    yolo.add_argument('--images_dir')
    yolo.add_argument('--labels_dir', help='folder of the .txt files (default: images_dir)')
    yolo.add_argument('--names', help='class names, one per line (class 0 first)')
    yolo.add_argument('--val_images_dir',
                      help='images of the validation set: they become val-*, those of '
                           '--images_dir train-*')
    yolo.add_argument('--val_labels_dir', help='folder of their .txt files (default: '
                                               'val_images_dir)')
    table = fmt.add_parser('csv', help='CSV, one box per row')
    table.add_argument('--csv', required=True)
    table.add_argument('--images_dir', required=True)
    table.add_argument('--columns', default='filename,label,xmin,ymin,xmax,ymax',
                       help='the role of each column in order; other names (e.g. -) are ignored')
    table.add_argument('--normalized', action='store_true',
                       help='box coordinates are in [0, 1] (default: pixels)')
    for parser in (voc, coco, yolo, table):
        parser.add_argument('--out', required=True, help='output folder, local or gs://')
        if parser is not coco and parser is not yolo:
            parser.add_argument('--class_names',
                                help='class names, one per line, in label order (default: the '
                                     'names found, sorted); other names are reported and dropped')
        parser.add_argument('--val_fraction', type=float, default=None,
                            help=f'share of images for validation (default {VAL_FRACTION}; '
                                 'ignored with split lists; not with a validation set of its '
                                 'own)')
        parser.add_argument('--seed', type=int, default=0, help='seed of the train/val split')
        parser.add_argument('--num_shards', type=int, default=2, help='files per split')
        parser.add_argument('--keep_invalid_boxes', action='store_true',
                            help='write zero-area and min > max boxes as they are (training '
                                 'rejects them; for reproducing a defect with validate)')


def run(args) -> int:
    if args.command == 'validate':
        return _validate(args)
    return _convert(args)


def _image_size(text: str) -> Tuple[int, int]:
    """H,W as the job's --image_size takes it; one number is a square."""
    try:
        size = tuple(int(p) for p in text.replace(' ', '').split(',') if p)
    except ValueError:
        size = ()
    size = size * 2 if len(size) == 1 else size
    if len(size) != 2 or min(size) < 1:
        raise errors.UsageError(f'--image_size={text}: needs two whole numbers >= 1, '
                                'height and width.')
    return size


def _aspect_ratios(text: str) -> Tuple[float, ...]:
    try:
        ratios = tuple(float(p) for p in text.replace(' ', '').split(',') if p)
    except ValueError:
        ratios = ()
    if not ratios or min(ratios) <= 0:
        raise errors.UsageError(f'--bbox_aspect_ratios={text}: needs numbers > 0, '
                                'comma-separated.')
    return ratios


def _check_anchor_flags(args) -> None:
    """The limits the job puts on the same flags (flag_table.py), as UsageErrors."""
    if args.anchor_size <= 0:
        raise errors.UsageError(f'--anchor_size={args.anchor_size:g}: must be > 0.')
    if not 3 <= args.fpn_min_level <= args.fpn_max_level <= 7:
        raise errors.UsageError(
            f'--fpn_min_level={args.fpn_min_level}, --fpn_max_level={args.fpn_max_level}: '
            'allowed 3 <= fpn_min_level <= fpn_max_level <= 7.')


def _validate(args) -> int:
    try:
        size = _image_size(args.image_size)
        ratios = _aspect_ratios(args.bbox_aspect_ratios)
        _check_anchor_flags(args)
    except errors.UsageError as e:
        return errors.report(e)
    for name in ('num_classes', 'max_records', 'max_num_bboxes_in_training'):
        value = getattr(args, name)
        if value is not None and value < 1:
            return errors.report(errors.UsageError(f'--{name}={value}: must be >= 1.'))
    from object_detection_algo import io_utils
    from object_detection_algo.data import record_checks, records
    settings = record_checks.CheckSettings(
        num_classes=args.num_classes, image_size=size, anchor_size=args.anchor_size,
        min_level=args.fpn_min_level, max_level=args.fpn_max_level, aspect_ratios=ratios,
        max_boxes=args.max_num_bboxes_in_training)
    try:
        files = records.match_files(args.data_path, 'data_path')
    except errors.JobError as e:
        return errors.report(e, errors.EXIT_USAGE)
    report = record_checks.validate(files, settings, args.max_records)
    print(report.summary(args.examples))
    if args.report:
        io_utils.write_json(args.report, report.as_dict())
        print(f'Full report: {args.report}')
    return errors.EXIT_OK if report.ok else errors.EXIT_PROBLEMS_FOUND


def _separate_val_flag(args) -> str:
    """The flag that gives the validation set apart, if one was given ('' if not)."""
    for flag in ('data', 'val_instances', 'val_images_dir', 'val_labels_dir'):
        if getattr(args, flag, None):
            return flag
    return ''


def _checked_val_fraction(args) -> float:
    """The share of images to split off for validation, once the flag combinations
    argparse cannot check are found right (else a UsageError naming the flags)."""
    separate = _separate_val_flag(args)
    if separate and args.val_fraction is not None:
        raise errors.UsageError(
            f'--val_fraction and --{separate} both given: --{separate} gives the validation '
            'set, so nothing is left to split; drop --val_fraction.')
    fraction = VAL_FRACTION if args.val_fraction is None else args.val_fraction
    if not 0 <= fraction < 1 or args.num_shards < 1:
        raise errors.UsageError(
            '--val_fraction must be in [0, 1) and --num_shards >= 1. A validation set of its '
            'own is given with --val_instances (coco), --val_images_dir or --data (yolo).')
    if args.source_format == 'coco' and bool(args.val_instances) != bool(args.val_images_dir):
        raise errors.UsageError('--val_instances and --val_images_dir go together: the '
                                'validation instances JSON and its image folder.')
    if args.source_format == 'yolo':
        _check_yolo_inputs(args)
    return fraction


def _check_yolo_inputs(args) -> None:
    given = [f for f in ('images_dir', 'labels_dir', 'names', 'val_images_dir',
                         'val_labels_dir') if getattr(args, f)]
    if args.data and given:
        raise errors.UsageError(f'--data and --{given[0]}: data.yaml names the folders and '
                                'the classes; give either --data or the folder flags.')
    if not args.data and not (args.images_dir and args.names):
        raise errors.UsageError('convert yolo needs --data=data.yaml, or --images_dir and '
                                '--names.')
    if args.val_labels_dir and not args.val_images_dir:
        raise errors.UsageError('--val_labels_dir needs --val_images_dir.')


def _yolo_entries(args, summary):
    from object_detection_algo.data import dataset_writer as dw
    from object_detection_algo.data.converters import from_yolo
    if args.data:
        return (*from_yolo.data_yaml_entries(args.data, summary), None)
    names = dw.read_names(args.names)
    found = from_yolo.entries(args.images_dir, names, summary, args.labels_dir,
                              'train' if args.val_images_dir else None)
    if args.val_images_dir:
        found += from_yolo.entries(args.val_images_dir, names, summary, args.val_labels_dir,
                                   'val')
    return found, names, None


def _entries(args, summary, names):
    """(entries, class names found, COCO's id map or None) of the source format."""
    if args.source_format == 'voc':
        from object_detection_algo.data.converters import from_voc
        return (*from_voc.entries(args.annotations_dir, args.images_dir, summary,
                                  args.train_list, args.val_list), None)
    if args.source_format == 'coco':
        from object_detection_algo.data.converters import from_coco
        return from_coco.entries(args.instances, args.images_dir, summary,
                                 args.val_instances, args.val_images_dir)
    if args.source_format == 'yolo':
        return _yolo_entries(args, summary)
    from object_detection_algo.data.converters import from_csv
    columns = from_csv.parse_columns(args.columns)
    return (*from_csv.entries(args.csv, args.images_dir, summary, columns, args.normalized,
                              names), None)


def _convert(args) -> int:
    import time
    import tensorflow as tf  # noqa: F401  (its import is not conversion time)
    from object_detection_algo.data import dataset_writer as dw
    start = time.time()
    summary = dw.Summary()
    try:
        val_fraction = _checked_val_fraction(args)
    except errors.UsageError as e:
        return errors.report(e)
    try:
        names = dw.read_names(args.class_names) if getattr(args, 'class_names', None) else None
        entries, found, coco_ids = _entries(args, summary, names)
    except errors.JobError as e:
        return errors.report(e, errors.EXIT_USAGE)
    dw.write(entries, names or found, args.out, val_fraction, args.seed,
             args.num_shards, args.keep_invalid_boxes, summary)
    if coco_ids is not None:
        from object_detection_algo.data.converters import from_coco
        path = posixpath.join(args.out, from_coco.CATEGORY_MAP_FILE)
        from_coco.write_category_map(path, found, coco_ids)
        print(f'COCO category ids -> 1..{len(found)}: {path}')
    seconds = time.time() - start
    print(summary.text())
    print(f'Report: {posixpath.join(args.out, dw.REPORT_FILE)}')
    print(f'{len(entries)} images in {seconds:.1f} s ({len(entries) / seconds:.1f} images/s).')
    return errors.EXIT_OK
