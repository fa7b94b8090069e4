"""What the commands print. By default: this package's own lines, and every
warning or error once; with absl's `--verbosity` / `-v` 1 or more, also the
libraries' chatter (TensorFlow's C++ start-up banners, Model Garden's and
Orbit's INFO lines, pycocotools' tables), which TensorBoard and the JSON files
hold anyway. Cloud Logging reads stdout/stderr line by line: one event, one
line.

`configure` must run before TensorFlow is imported (its C++ log level is read
once, at import).
"""

import contextlib
import io
import logging
import os
import threading

from absl import logging as absl_logging

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
ENTRYPOINT = os.path.join(os.path.dirname(PACKAGE_DIR), 'entrypoint.py')

# Warnings of the libraries about their own internals, not the job: shown with -v.
# (file, message start); '' matches every message of that file.
CHATTER_WARNINGS = (
    ('save_impl.py', 'Skipping full serialization of TF-Keras layer'),
    ('deprecation.py', ''),  # TensorFlow APIs that Model Garden calls
    ('map_fn.py', 'Setting parallel_iterations > 1 has no effect when executing eagerly'),
    # A restart with nothing left to train restores no optimizer slots: one line per slot.
    ('checkpoint.py', 'Value in checkpoint could not be found in the restored object'),
    ('checkpoint.py', 'Detecting that an object or model or tf.train.Checkpoint is being '
                      'deleted with unrestored values'),
)

_state = {'verbose': False}


def verbose() -> bool:
    return _state['verbose']


class _Filter(logging.Filter):
    """Our INFO lines, everyone's warnings and errors, each distinct warning once."""

    def __init__(self):
        super().__init__()
        self._seen = set()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if _state['verbose']:
            return True
        path = os.path.abspath(record.pathname or '')
        ours = path.startswith(PACKAGE_DIR + os.sep) or path == ENTRYPOINT
        if record.levelno < logging.WARNING:
            return ours
        if record.levelno >= logging.ERROR or ours:
            return True
        name = os.path.basename(path)
        message = record.getMessage()
        if any(name == f and message.startswith(m) for f, m in CHATTER_WARNINGS):
            return False
        with self._lock:
            if message in self._seen:
                return False
            self._seen.add(message)
        return True


_filter = _Filter()


def configure(verbosity: int) -> None:
    """Quiet (verbosity < 1) or everything; before TensorFlow is imported. A
    TF_CPP_MIN_LOG_LEVEL the caller set is kept."""
    _state['verbose'] = verbosity >= 1
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '0' if _state['verbose'] else '3')
    absl_logging.use_absl_handler()
    handler = absl_logging.get_absl_handler()
    if _filter not in handler.filters:
        handler.addFilter(_filter)
    logging.captureWarnings(True)  # Python warnings take the same path, once each


@contextlib.contextmanager
def library_prints():
    """Silences what libraries print to stdout (pycocotools' tables) unless verbose."""
    if _state['verbose']:
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()):
        yield
