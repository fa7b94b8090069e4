"""--precision: the dtype the model computes in, and why. Weights stay float32
(Keras mixed precision); the exported model is float32 either way.

  auto      bfloat16 on a TPU; float16 with dynamic loss scaling on GPUs with
            tensor cores (compute capability 7.0 and up), float32 on older
            ones; bfloat16 on CPUs with native bfloat16 (AMX or AVX-512 BF16),
            float32 on the others (there bfloat16 is emulated: several times
            slower).
  float32, bfloat16, float16
            as asked; refused where the device cannot run it: float16 on a TPU
            or a CPU, bfloat16 on GPUs below compute capability 8.0.

`choose` is a pure decision; `cpu_flags` and `gpu_capabilities` read the machine.
"""

import dataclasses
from typing import Iterable, Optional, Sequence, Tuple

from object_detection_algo.errors import UsageError

CHOICES = ('auto', 'float32', 'bfloat16', 'float16')
TENSOR_CORES = (7, 0)  # float16 matrix units (Volta and later)
NATIVE_BFLOAT16_GPU = (8, 0)  # Ampere and later
NATIVE_BFLOAT16_CPU = {'amx_bf16': 'AMX', 'avx512_bf16': 'AVX-512 BF16'}  # /proc/cpuinfo flags


@dataclasses.dataclass(frozen=True)
class PrecisionChoice:
    dtype: str  # float32, bfloat16, float16
    reason: str

    @property
    def policy(self) -> str:
        """The Keras mixed-precision policy (Model Garden's runtime dtype)."""
        return self.dtype


def _native_bfloat16(cpu_flags: Iterable[str]) -> Optional[str]:
    found = [name for flag, name in NATIVE_BFLOAT16_CPU.items() if flag in set(cpu_flags)]
    return ' and '.join(found) or None


def _capability(capabilities: Sequence[Tuple[int, int]]) -> Optional[Tuple[int, int]]:
    """The lowest compute capability: every GPU must run the choice."""
    return min(capabilities) if capabilities else None


def _shown(capability: Tuple[int, int]) -> str:
    return f'{capability[0]}.{capability[1]}'


def choose(requested: str, device_kind: str, gpu_capabilities: Sequence[Tuple[int, int]] = (),
           cpu_flags: Iterable[str] = ()) -> PrecisionChoice:
    """The precision for `requested` on these devices; a UsageError for a value the
    devices cannot run."""
    if device_kind == 'tpu':
        if requested == 'float16':
            raise UsageError('--precision=float16: a TPU has no float16 arithmetic. Use '
                             '--precision=bfloat16 (the default there) or float32.')
        if requested == 'auto':
            return PrecisionChoice('bfloat16', 'auto: a TPU computes in bfloat16')
        return PrecisionChoice(requested, 'as asked')
    if device_kind == 'gpu':
        capability = _capability(gpu_capabilities)
        if capability is None:  # details unknown: stay safe
            if requested == 'auto':
                return PrecisionChoice('float32', 'auto: the GPU compute capability is unknown')
            return PrecisionChoice(requested, 'as asked')
        if requested == 'bfloat16' and capability < NATIVE_BFLOAT16_GPU:
            raise UsageError(
                f'--precision=bfloat16: a GPU of compute capability {_shown(capability)} has '
                f'no bfloat16 arithmetic (it needs {_shown(NATIVE_BFLOAT16_GPU)}). Use '
                '--precision=float16 or auto.')
        if requested == 'auto':
            if capability >= TENSOR_CORES:
                return PrecisionChoice('float16', f'auto: compute capability '
                                       f'{_shown(capability)} has tensor cores; dynamic loss '
                                       'scaling')
            return PrecisionChoice('float32', f'auto: compute capability {_shown(capability)} '
                                   f'has no tensor cores (they start at {_shown(TENSOR_CORES)})')
        return PrecisionChoice(requested, 'as asked')
    native = _native_bfloat16(cpu_flags)
    if requested == 'float16':
        raise UsageError('--precision=float16: CPUs run float16 emulated, far slower than '
                         'float32. Use --precision=auto, float32 or (on CPUs with AMX or '
                         'AVX-512 BF16) bfloat16.')
    if requested == 'auto':
        if native:
            return PrecisionChoice('bfloat16', f'auto: the CPU has {native}')
        return PrecisionChoice('float32', 'auto: the CPU has no native bfloat16 (AMX or '
                               'AVX-512 BF16)')
    if requested == 'bfloat16' and not native:
        return PrecisionChoice('bfloat16', 'as asked, although this CPU has no native '
                               'bfloat16: expect several times slower steps than float32')
    return PrecisionChoice(requested, 'as asked')


def cpu_flags(path: str = '/proc/cpuinfo') -> frozenset:
    """The CPU's feature flags (Linux); empty where they cannot be read."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith('flags'):
                    return frozenset(line.split(':', 1)[1].split())
    except OSError:
        pass
    return frozenset()


def gpu_capabilities() -> Tuple[Tuple[int, int], ...]:
    """Compute capability of each visible GPU, where TensorFlow reports it."""
    import tensorflow as tf
    found = []
    for gpu in tf.config.list_physical_devices('GPU'):
        capability = tf.config.experimental.get_device_details(gpu).get('compute_capability')
        if capability:
            found.append(tuple(capability))
    return tuple(found)
