"""The settings that define one detector: variant, classes, input size, depth multiplier."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from include.errors import ConfigError

VARIANTS = ("cpu", "edgetpu", "dsp", "gpu")
MIN_INPUT_SIZE = 33  # the TFOD SSD meta-architecture's minimum image side
INPUT_SIZE_MULTIPLE = 32  # C5 has stride 32: a multiple of 32 tiles every feature map exactly


@dataclass(frozen=True)
class ModelSpec:
    variant: str = "cpu"
    num_classes: int = 90
    input_size: int = 320
    depth_multiplier: float = 1.0

    def __post_init__(self):
        validate_spec(self.variant, self.num_classes, self.input_size, self.depth_multiplier)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        return cls(variant=d["variant"], num_classes=int(d["num_classes"]),
                   input_size=int(d["input_size"]), depth_multiplier=float(d["depth_multiplier"]))


def validate_spec(variant, num_classes, input_size, depth_multiplier) -> None:
    if variant not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r}; allowed values: {', '.join(VARIANTS)}.",
                          where="variant", fix="pass one of the allowed variants.")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive whole number, got {num_classes!r}.",
                          where="num_classes",
                          fix="give the number of object classes (without background), e.g. 90 for COCO.")
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < MIN_INPUT_SIZE \
            or input_size % INPUT_SIZE_MULTIPLE:
        raise ConfigError(
            f"input_size must be a whole number >= {MIN_INPUT_SIZE} and a multiple of "
            f"{INPUT_SIZE_MULTIPLE} (the network's largest stride), got {input_size!r}.",
            where="input_size",
            fix="use e.g. 128, 192, 256 or 320 (the published MobileDets use 320).")
    if not isinstance(depth_multiplier, (int, float)) or isinstance(depth_multiplier, bool) \
            or not depth_multiplier > 0:
        raise ConfigError(f"depth_multiplier must be a positive number, got {depth_multiplier!r}.",
                          where="depth_multiplier", fix="use 1.0 for the published sizes, "
                          "or a smaller value such as 0.25 for small test models.")
