"""The resolved flags of one training job, as a frozen dataclass: one typed
field per row of flag_table.FLAGS_TABLE, in its order (`--job-dir` is
`job_dir`). `flag_table.resolve` makes it; tests/test_flags.py keeps the
fields and the table in step. Pure Python: no TensorFlow."""

import dataclasses
import math
from typing import Any, Dict, Optional, Tuple


def flag_name(field: str) -> str:
    """The flag a field comes from: job_dir is --job-dir, the rest are spelt alike."""
    return 'job-dir' if field == 'job_dir' else field


@dataclasses.dataclass(frozen=True)
class Settings:
    training_data_path: str
    validation_data_path: str
    job_dir: Optional[str]
    num_classes: int
    max_steps: int
    train_batch_size: int
    num_eval_images: int
    train_steps_per_eval: int
    image_size: Tuple[int, int]
    resnet_depth: int
    fpn_type: str
    fpn_min_level: int
    fpn_max_level: int
    anchor_size: float
    bbox_aspect_ratios: Tuple[float, ...]
    max_num_bboxes_in_training: int
    max_num_bboxes_in_prediction: int
    nms_iou_threshold: float
    nms_score_threshold: float
    focal_loss_alpha: float
    focal_loss_gamma: float
    huber_loss_delta: float
    detection_loss_weight: float
    aug_rand_hflip: bool
    aug_scale_min: float
    aug_scale_max: float
    auto_augmentation: bool
    initial_learning_rate: float
    warmup_learning_rate: float
    warmup_steps: int
    learning_rate_decay_type: str
    stepwise_learning_rate_steps: Tuple[int, ...]
    stepwise_learning_rate_levels: Tuple[float, ...]
    optimizer_type: str
    optimizer_arguments: Dict[str, Any]
    weight_decay: float
    log_every_steps: int
    checkpoint_every_steps: int
    head_num_filters: int
    head_num_convs: int
    precision: str
    preflight_max_records: int
    skip_bad_records: bool
    init_checkpoint: str
    init_checkpoint_modules: Optional[str]
    allow_data_change: bool

    @classmethod
    def from_flags(cls, values: Dict[str, Any]) -> 'Settings':
        """From {flag name: resolved value}."""
        return cls(**{f.name: values[flag_name(f.name)] for f in dataclasses.fields(cls)})

    def as_flags(self) -> Dict[str, Any]:
        """{flag name: value}, as metrics.json records them."""
        return {flag_name(k): v for k, v in dataclasses.asdict(self).items()}

    @property
    def input_size(self) -> Tuple[int, int]:
        """image_size rounded up to a multiple of 2^fpn_max_level, as the model needs."""
        stride = 2 ** self.fpn_max_level
        return tuple(int(math.ceil(s / stride) * stride) for s in self.image_size)
