"""absl flag definitions generated from the flag table, and the parse step that
validates every value before TensorFlow is imported (exit status 2 on error)."""

import os
import re
import sys
from typing import Any, Dict, List, Tuple

from absl import flags

from object_detection_algo import errors
from object_detection_algo.training import cluster, flag_table, outputs
from object_detection_algo.training.settings import Settings

FLAGS = flags.FLAGS


def _help(flag: flag_table.Flag) -> str:
    return f'{flag.help} [{flag.kind}; valid: {flag.valid}]'


def define_flags() -> None:
    """Defines the table's flags once; bools as absl booleans (bare, --no, true/false)."""
    if 'training_data_path' in FLAGS:
        return
    for flag in flag_table.FLAGS_TABLE:
        if flag.kind == 'bool':
            flags.DEFINE_boolean(flag.name, flag.default, _help(flag))
        else:
            flags.DEFINE_string(flag.name, None, _help(flag))
    flags.DEFINE_alias('job_dir', 'job-dir')


def raw_values() -> Dict[str, Any]:
    return {f.name: FLAGS[f.name].value for f in flag_table.FLAGS_TABLE}


def usage_error(message: str) -> None:
    sys.stderr.write(f'error: {message}\nRun with --helpshort for the flags.\n')
    sys.exit(errors.EXIT_USAGE)


def _job_dir_values(argv: List[str]) -> List[str]:
    """The values given to --job-dir and --job_dir, in order (absl keeps the last)."""
    values = []
    for i, arg in enumerate(argv):
        for name in ('--job-dir', '--job_dir'):
            if arg.startswith(name + '='):
                values.append(arg[len(name) + 1:])
            elif arg == name and i + 1 < len(argv):
                values.append(argv[i + 1])
    return values


def _flag_error(error: flags.Error) -> str:
    """absl's message, with its Python tuple for a bad boolean made readable."""
    found = re.match(r"flag --([\w-]+)=(.*): \('Non-boolean argument to boolean flag'", str(error))
    if found:
        name, value = found.groups()
        return (f'--{name}={value} is not valid. Allowed: true, false (any case), or bare '
                f'--{name} / --no{name}.')
    return str(error)


def parse(argv: List[str]) -> List[str]:
    """absl `flags_parser` for app.run: parses, validates, exits 2 on a bad flag."""
    define_flags()
    job_dirs = _job_dir_values(argv)
    if len({v.rstrip('/') for v in job_dirs}) > 1:
        usage_error(f'--job-dir was given {len(job_dirs)} different values '
                    f'({", ".join(job_dirs)}); --job-dir and --job_dir are one flag: give one.')
    try:
        rest = FLAGS(argv)
    except flags.Error as e:
        usage_error(_flag_error(e))
    if len(rest) > 1:
        usage_error(f'unexpected argument(s): {" ".join(rest[1:])} '
                    '(flags are written --name=value)')
    try:
        resolved()
    except errors.UsageError as e:
        usage_error(str(e))
    return rest


def resolved() -> Tuple[Settings, outputs.OutputDirs]:
    """(settings, output dirs) from the parsed flags and the environment; a
    cluster this job cannot train on is refused here too, before TensorFlow."""
    settings = flag_table.resolve(raw_values())
    dirs = outputs.resolve(settings.job_dir, os.environ)
    cluster.from_env(os.environ)
    return settings, dirs
