"""The project's errors and exit statuses, in one place.

Every problem a user can fix is one of three kinds, and each carries the exit
status the training job ends with:

  UsageError    2  a flag, argument or environment variable that cannot be used
  DataError     3  records or files that cannot be used (named in the message)
  StorageError  3  a storage path that cannot be read or written

A job that is one task of a cluster also ends with 4 when another task was
lost (ClusterError), and a task that follows the chief with the chief's status
(ChiefStopped).

Each command catches `JobError` in one place and prints `error: <message>`.
Pure Python: no TensorFlow.
"""

import sys
from typing import Optional

EXIT_OK = 0
EXIT_PROBLEMS_FOUND = 1  # validate found bad records; predict could not answer some
EXIT_USAGE = 2
EXIT_DATA = 3
EXIT_CLUSTER = 4  # a task of the training cluster was lost; every task stops
EXIT_PREEMPTED = 143  # 128 + SIGTERM, as a scheduler expects after a stop


class JobError(Exception):
    """A problem the message names, with what to do about it."""
    exit_status = 1


class UsageError(JobError):
    exit_status = EXIT_USAGE


class DataError(JobError):
    exit_status = EXIT_DATA


class StorageError(JobError):
    exit_status = EXIT_DATA


class ClusterError(JobError):
    """A task of the cluster was lost, or the cluster cannot be used."""
    exit_status = EXIT_CLUSTER


class ChiefStopped(JobError):
    """The chief ended the job with an error; this task ends with its status."""

    def __init__(self, message: str, exit_status: int):
        super().__init__(message)
        self.exit_status = exit_status


def report(error: Exception, exit_status: Optional[int] = None) -> int:
    """Prints `error: <message>` on stderr, once; returns the exit status: the
    error's own, unless the command documents another."""
    sys.stderr.write(f'error: {error}\n')
    if exit_status is None:
        exit_status = getattr(error, 'exit_status', 1)
    return exit_status
