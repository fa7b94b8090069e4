"""The data check the training job runs before it builds anything: the record
checks over both data globs, logged as one line per set and one per kind of
problem, the JSON report in the checkpoint folder, and a DataError (exit status
3) naming the errors when a record is bad. When the input pipeline later fails
on a record the check's sample did not read, `find_bad_records` reads every
record of that set and reports what it found; the job says what it saved and
stops."""

import dataclasses
import posixpath
import re
from typing import Dict, List, Optional, Sequence

from absl import logging

from object_detection_algo import io_utils
from object_detection_algo.data import record_checks, records
from object_detection_algo.errors import DataError
from object_detection_algo.training.settings import Settings

REPORT_FILE = 'preflight_report.json'  # in the checkpoint folder
FAILURE_REPORT_FILE = 'data_failure_report.json'  # same folder, after a mid-job failure
DATA_FLAGS = ('training_data_path', 'validation_data_path')


def check_settings(settings: Settings) -> record_checks.CheckSettings:
    return record_checks.CheckSettings(
        num_classes=settings.num_classes, image_size=settings.image_size,
        anchor_size=settings.anchor_size, min_level=settings.fpn_min_level,
        max_level=settings.fpn_max_level, aspect_ratios=settings.bbox_aspect_ratios,
        max_boxes=settings.max_num_bboxes_in_training)


def log_report(settings: Settings, flag: str, report: record_checks.Report) -> None:
    """One line for the set, then one per kind of error or warning (errors with
    examples): one event, one line."""
    name = f'Data check of --{flag}={getattr(settings, flag)}'
    logging.info('%s: %s', name, report.one_line())
    for severity, line in report.problem_lines():
        log = logging.error if severity == record_checks.ERROR else logging.warning
        log('%s: %s', name, line)


@dataclasses.dataclass
class DataPlan:
    """What the job reads: the files of each glob, the records it leaves out."""
    files: Dict[str, List[str]]  # flag -> matched files
    skip: Dict[str, List[int]]  # flag -> fingerprints of the records to leave out
    num_eval: int  # validation records evaluated on, skipped ones excluded


def match(settings: Settings) -> Dict[str, List[str]]:
    """{flag: the files its glob matches}; a DataError naming an empty glob."""
    return {flag: records.match_files(getattr(settings, flag), flag) for flag in DATA_FLAGS}


def plan(settings: Settings, files: Dict[str, List[str]], report_dir: str) -> DataPlan:
    """Checks the records of the matched files, counts the validation set."""
    skip, counted = run(settings, files, report_dir)
    eval_files = files['validation_data_path']
    num_eval = counted['validation_data_path']
    if num_eval is None:  # the check read a sample: count them
        num_eval = records.count_records(eval_files)
    num_eval -= len(skip.get('validation_data_path', ()))
    if num_eval <= 0:
        raise DataError(
            f'--validation_data_path={settings.validation_data_path}: the '
            f'{len(eval_files)} matching file(s) hold no usable records.')
    logging.info('Data: %d training file(s), %d validation file(s) with %d records.',
                 len(files['training_data_path']), len(eval_files), num_eval)
    return DataPlan(files=files, skip=skip, num_eval=num_eval)


def run(settings: Settings, files: Dict[str, List[str]], report_dir: str):
    """Checks both sets and writes <report_dir>/preflight_report.json.

    Returns (skip, counted): the fingerprints of the records to leave out per
    flag (only with --skip_bad_records), and the records of each set when all
    were read (else None). Raises DataError naming the errors unless
    --skip_bad_records lets the job go on without the bad records. Writes
    nothing else: checkpoints and the best model are left as they are."""
    check = check_settings(settings)
    skip = settings.skip_bad_records
    limit = None if skip else settings.preflight_max_records or None  # skipping needs all
    reports = {}
    for flag in DATA_FLAGS:
        report = record_checks.validate(files[flag], check, limit)
        reports[flag] = report
        log_report(settings, flag, report)
    io_utils.makedirs(report_dir)
    path = posixpath.join(report_dir, REPORT_FILE)
    io_utils.write_json(path, {flag: dict(r.as_dict(), records_skipped=len(r.bad_records)
                                          if skip and not r.set_errors() else 0)
                               for flag, r in reports.items()})
    bad = {flag: r for flag, r in reports.items() if not r.ok}
    stopping = {flag: r for flag, r in bad.items() if not skip or r.set_errors()}
    if stopping:
        parts = [f'--{flag}={getattr(settings, flag)}: {r.count(record_checks.ERROR)} '
                 f'error(s) in the data check: {_error_counts(r)} (examples in the lines '
                 'above).' for flag, r in stopping.items()]
        if skip:
            codes = sorted({i.code for r in stopping.values() for i in r.set_errors()})
            parts.append(f'--skip_bad_records skips single records; {", ".join(codes)} '
                         'concern(s) a whole file or set and still stop the job.')
        raise DataError(
            '\n'.join(parts) + f'\nNo training was done. Fix the records (`python -m '
            f'object_detection_algo validate` checks them) and start the job again. '
            f'Full report: {path}')
    for flag, r in bad.items():
        if len(r.bad_records) >= r.records:
            raise DataError(
                f'--{flag}={getattr(settings, flag)}: all {r.records} records have errors, '
                f'none is left to use: {_error_counts(r)} (examples in the lines above). '
                f'Full report: {path}')
        logging.warning('--skip_bad_records: training and evaluating without %d of the %d '
                        'records of --%s=%s: those with the errors above (all listed in %s).',
                        len(r.bad_records), r.records, flag, getattr(settings, flag), path)
    logging.info('Data check passed%s; report: %s',
                 ' (bad records skipped)' if bad else '', path)
    return ({flag: r.bad_records for flag, r in bad.items()},
            {flag: r.records if r.complete else None for flag, r in reports.items()})


def _error_counts(report: record_checks.Report) -> str:
    """'box_outside 1, label_out_of_range 2': the errors found, by rule."""
    return ', '.join(f'{code} {n}' for code, n in report.counts().items()
                     if record_checks.RULES[code][0] == record_checks.ERROR)


def pipeline_failure(message: str) -> str:
    """The cause in TensorFlow's message for an error inside tf.data, without
    the graph, node and iterator names around it. Some (seen on a worker of a
    cluster) hold their line breaks escaped ('\\n\\t'): those are spaces too."""
    message = message.replace('\\n', ' ').replace('\\t', ' ')
    text = re.sub(r'\[\[.*?\]\]|\[Op:[^\]]*\]', '', ' '.join(message.split()))
    if 'transformation with iterator: ' in text:
        text = text.rsplit('transformation with iterator: ', 1)[1].split(': ', 1)[-1]
    return text.strip()


@dataclasses.dataclass
class BadRecords:
    report: record_checks.Report  # every record of the set
    path: str  # where the report was written


def find_bad_records(settings: Settings, flag: str, files: List[str], report_dir: str,
                     skipped: Sequence[int] = ()) -> Optional[BadRecords]:
    """After the input pipeline of --flag failed (TensorFlow's message does not
    say on which record): checks every record of the set and writes the report.
    None when no record the pipeline read fails the check (records left out by
    --skip_bad_records do not count): then the failure is not the data's."""
    report = record_checks.validate(files, check_settings(settings))
    if report.ok or set(report.bad_records) <= set(skipped):
        return None
    path = posixpath.join(report_dir, FAILURE_REPORT_FILE)
    io_utils.write_json(path, {flag: report.as_dict()})
    return BadRecords(report, path)
