"""The data check the training job runs before it builds anything: the
validator over both data globs, the JSON report in the checkpoint folder, and
a DataError (exit status 3) with the summary when a record is bad. When the
input pipeline later fails on a record the check's sample did not read, the
same validator reads every record of that set to name it."""

import dataclasses
import posixpath
import re
from typing import Any, Dict, List, Optional, Sequence

from absl import logging

from object_detection_algo import export, flag_table, records, validation

REPORT_FILE = 'preflight_report.json'  # in the checkpoint folder
FAILURE_REPORT_FILE = 'data_failure_report.json'  # same folder, after a mid-job failure


def check_settings(settings: Dict[str, Any]) -> validation.Settings:
    return validation.Settings(
        num_classes=settings['num_classes'], image_size=flag_table.padded_image_size(settings),
        anchor_size=settings['anchor_size'], min_level=settings['fpn_min_level'])


@dataclasses.dataclass
class Outcome:
    skip: Dict[str, List[int]]  # flag -> fingerprints of the records to leave out
    records: Dict[str, Optional[int]]  # flag -> records in the set, when all were read


def run(settings: Dict[str, Any], train_files: List[str], eval_files: List[str],
        report_dir: str) -> Outcome:
    """Validates both sets and writes <report_dir>/preflight_report.json.
    Raises records.DataError with the summary on errors, unless
    --skip_bad_records lets the job go on without the bad records (listed in
    the outcome by validation.fingerprint).
    Writes nothing else: checkpoints and the best model are left as they are."""
    check = check_settings(settings)
    skip = settings.get('skip_bad_records', False)
    limit = None if skip else settings['preflight_max_records'] or None  # skipping needs all
    reports = {}
    for flag, files in (('training_data_path', train_files),
                        ('validation_data_path', eval_files)):
        report = validation.validate(files, check, limit)
        reports[flag] = report
        if report.ok:  # a failed check is logged whole below
            logging.info('Data check of --%s=%s:\n%s', flag, settings[flag], report.summary())
    import tensorflow as tf
    tf.io.gfile.makedirs(report_dir)
    path = posixpath.join(report_dir, REPORT_FILE)
    export.write_json(path, {flag: dict(r.as_dict(), records_skipped=len(r.bad_records)
                                        if skip and not r.set_errors() else 0)
                             for flag, r in reports.items()})
    bad = {flag: r for flag, r in reports.items() if not r.ok}
    stopping = {flag: r for flag, r in bad.items() if not skip or r.set_errors()}
    if stopping:
        parts = [f'--{flag}={settings[flag]}: {r.count(validation.ERROR)} error(s) in the '
                 f'data check:\n{r.summary()}' for flag, r in stopping.items()]
        if skip:
            codes = sorted({i.code for r in stopping.values() for i in r.set_errors()})
            parts.append(f'--skip_bad_records skips single records; {", ".join(codes)} '
                         'concern(s) a whole file or set and still stop the job.')
        raise records.DataError(
            '\n'.join(parts) + f'\nNo training was done. Fix the records (`python -m '
            f'object_detection_algo validate` checks them) and start the job again. '
            f'Full report: {path}')
    for flag, r in bad.items():
        if len(r.bad_records) >= r.records:
            raise records.DataError(
                f'--{flag}={settings[flag]}: all {r.records} records have errors, none is '
                f'left to use:\n{r.summary()}\nFull report: {path}')
        logging.warning('--skip_bad_records: training and evaluating without %d of the %d '
                        'records of --%s=%s, the records with errors below.\n%s',
                        len(r.bad_records), r.records, flag, settings[flag], r.summary())
    logging.info('Data check passed%s; report: %s',
                 ' (bad records skipped)' if bad else '', path)
    return Outcome(skip={flag: r.bad_records for flag, r in bad.items()},
                   records={flag: r.records if r.complete else None
                            for flag, r in reports.items()})


def pipeline_failure(message: str) -> str:
    """The cause in TensorFlow's message for an error inside tf.data, without
    the graph, node and iterator names around it."""
    text = re.sub(r'\[\[.*?\]\]|\[Op:[^\]]*\]', '', ' '.join(message.split()))
    if 'transformation with iterator: ' in text:
        text = text.rsplit('transformation with iterator: ', 1)[1].split(': ', 1)[-1]
    return text.strip()


def name_bad_records(settings: Dict[str, Any], flag: str, files: List[str], failure: str,
                     report_dir: str, saved: str, skipped: Sequence[int] = ()
                     ) -> Optional[records.DataError]:
    """After the input pipeline of --flag failed with `failure` (TensorFlow's
    message does not say which record): checks every record of the set and
    returns a DataError naming the bad ones, with `saved` (what was kept) and
    what to do, or None when no record the pipeline read fails the check (records
    left out by --skip_bad_records do not count): the failure is not the data's."""
    logging.error('The input pipeline of --%s failed: %s\nReading every record of its %d '
                  'file(s) to find the bad one(s). %s', flag, failure, len(files), saved)
    report = validation.validate(files, check_settings(settings))
    if report.ok or set(report.bad_records) <= set(skipped):
        return None
    path = posixpath.join(report_dir, FAILURE_REPORT_FILE)
    export.write_json(path, {flag: report.as_dict()})
    return records.DataError(
        f'--{flag}={settings[flag]}: the input pipeline failed on a record the check before '
        f'training let through ({failure}). Every record checked now: '
        f'{report.count(validation.ERROR)} error(s):\n{report.summary()}\n{saved} Fix or '
        f'remove the records and start the job again. Full report: {path}')
