"""The data check the training job runs before it builds anything: the
validator over both data globs, the JSON report in the checkpoint folder, and
a DataError (exit status 3) with the summary when a record is bad."""

import posixpath
from typing import Any, Dict, List

from absl import logging

from object_detection_algo import export, flag_table, records, validation

REPORT_FILE = 'preflight_report.json'  # in the checkpoint folder


def run(settings: Dict[str, Any], train_files: List[str], eval_files: List[str],
        report_dir: str) -> str:
    """Validates both sets; writes <report_dir>/preflight_report.json and
    returns its path. Raises records.DataError with the summary on errors.
    Writes nothing else: checkpoints and the best model are left as they are."""
    check = validation.Settings(
        num_classes=settings['num_classes'], image_size=flag_table.padded_image_size(settings),
        anchor_size=settings['anchor_size'], min_level=settings['fpn_min_level'])
    limit = settings['preflight_max_records'] or None
    reports = {}
    for flag, files in (('training_data_path', train_files),
                        ('validation_data_path', eval_files)):
        report = validation.validate(files, check, limit)
        reports[flag] = report
        if report.ok:  # a failed check is logged whole in the error below
            logging.info('Data check of --%s=%s:\n%s', flag, settings[flag], report.summary())
    import tensorflow as tf
    tf.io.gfile.makedirs(report_dir)
    path = posixpath.join(report_dir, REPORT_FILE)
    export.write_json(path, {flag: r.as_dict() for flag, r in reports.items()})
    bad = {flag: r for flag, r in reports.items() if not r.ok}
    if bad:
        parts = [f'--{flag}={settings[flag]}: {r.count(validation.ERROR)} error(s) in the '
                 f'data check:\n{r.summary()}' for flag, r in bad.items()]
        raise records.DataError(
            '\n'.join(parts) + f'\nNo training was done. Fix the records (`python -m '
            f'object_detection_algo validate` checks them) and start the job again. '
            f'Full report: {path}')
    logging.info('Data check passed; report: %s', path)
    return path
