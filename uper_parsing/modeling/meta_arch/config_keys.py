"""Config keys each meta-architecture cannot honour, rejected by name (``from_config`` calls
``config.reject_unsupported_keys`` with the class's ``unsupported_keys``) when they hold a
non-default value. Keys that only matter once a switch is on (``TEST.AUG.SCALES``,
``MODEL.AUX_HEAD.CONVS_DIM``) are covered by rejecting the switch."""

from __future__ import annotations

from ...config import UnsupportedKey

__all__ = [
    "AUX_HEAD",
    "INSTANCE_BRANCH",
    "MULTITASK_HEADS",
    "TEST_TIME_AUGMENTATION",
    "UNPADDED_INFERENCE",
    "SLIDING_WINDOW",
]

INSTANCE_BRANCH = tuple(
    UnsupportedKey(group, "an instance branch (Panoptic FPN's anchors, RPN and RoI heads)")
    for group in (
        "MODEL.ANCHOR_GENERATOR",
        "MODEL.RPN",
        "MODEL.ROI_HEADS",
        "MODEL.ROI_BOX_HEAD",
        "MODEL.ROI_MASK_HEAD",
        "MODEL.PANOPTIC_FPN",
    )
)
MULTITASK_HEADS = (
    UnsupportedKey(
        "MODEL.MULTITASK", "unified perceptual parsing heads (UnifiedPerceptualParser's keys)"
    ),
)
AUX_HEAD = UnsupportedKey("MODEL.AUX_HEAD.ENABLED", "an auxiliary head")
TEST_TIME_AUGMENTATION = UnsupportedKey("TEST.AUG.ENABLED", "test-time augmentation")
SLIDING_WINDOW = UnsupportedKey("TEST.MODE", "sliding-window inference")
UNPADDED_INFERENCE = UnsupportedKey(
    "TEST.PAD_TO_DIVISIBILITY", "unpadded inference (it pads every batch to its size divisibility)"
)
