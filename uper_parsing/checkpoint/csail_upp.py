"""Convert CSAIL's unified perceptual parsing model (CSAILVision/unifiedparsing, the Broden+
UPerNet-50 of the UPerNet paper: ``encoder_epoch_40.pth`` + ``decoder_epoch_40.pth``) to this
project's UnifiedPerceptualParser built without texture
(``configs/broden/csail_upp_upernet50.yaml``).

Names (``models/models.py``, ``models/resnet.py`` of that repository):

- encoder ``resnet50``: the deep-base ResNet-50 of CSAIL's semantic models -> ``backbone.*``
  (the rules of :mod:`uper_parsing.checkpoint.csail`);
- decoder ``upernet``: ``ppm_conv`` / ``ppm_last_conv`` / ``fpn_in`` / ``fpn_out`` -> the
  ``trunk`` (a UPerNetHead) as for CSAIL's semantic UPerNet, ``conv_fusion`` ->
  ``trunk.fpn_bottleneck``; each ``<task>_head`` is a 3x3 conv + BN + ReLU (``.0``) then a 1x1
  classifier: ``object_head`` / ``part_head`` / ``material_head`` -> ``heads.<task>.convs.0`` and
  ``heads.<task>.classifier``; ``scene_head.0`` -> ``heads.scene.conv``, ``scene_head.2`` (a 1x1
  Conv2d after the global pool, (K, C, 1, 1)) -> ``heads.scene.classifier``, an nn.Linear (K, C).

Classifier channels are matched to the target metadata's classes by name:

- object and material: CSAIL's channel k is label k of ``object.csv`` / ``material.csv``, whose
  label 0 "-" is the background; trained with ``NLLLoss(ignore_index=0)``, that channel is never
  trained, so its row is dropped (our classes are CSAIL's labels 1..K-1);
- scene: channel k is label k of ``scene.csv``;
- part: CSAIL concatenates, per row of ``object_part_hierarchy.csv``, that object's part list
  ("-" first); our global part ids follow the metadata's ``part_classes`` ("<object>/<part>",
  each object's "<object>/-" first): the rows are reordered when the orders differ.

Every edit is listed in ``Conversion.edited``; the metadata travels in ``Conversion.metadata``.
CSAIL's PPM pools with PrRoIPool (``MODEL.SEM_SEG_HEAD.PPM_POOL "prroi"``) and convolves each bin
after upsampling (``PPM_CONV_AFTER_UPSAMPLE True``).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import torch

from ..data.datasets.broden_plus_categories import (
    BRODEN_PLUS_MATERIALS,
    BRODEN_PLUS_OBJECT_PARTS,
    BRODEN_PLUS_OBJECTS,
    BRODEN_PLUS_PARTS,
    BRODEN_PLUS_SCENES,
    broden_plus_metadata,
)
from .conversion import Conversion, Rule, as_tensors
from .csail import (
    ENCODER_RULES,
    SYNC_BN_IGNORED,
    affine_rule,
    conv_norm_act_rules,
    rename_csail_part,
    split_csail_state_dict,
    upernet_pyramid_rules,
)

__all__ = [
    "convert_csail_upp_file",
    "convert_csail_upp_state_dicts",
    "csail_part_channels",
    "is_csail_upp_state_dict",
]

SOURCE_FORMAT = "csail-upp"
_BACKGROUND = "-"

_MARKER = re.compile(r"(decoder\.)?(scene_head|object_head|part_head|material_head|conv_fusion)\.")

_TRUNK = "trunk."
_DECODER_RULES: list[Rule] = [
    *upernet_pyramid_rules(_TRUNK),
    *conv_norm_act_rules(r"conv_fusion", _TRUNK + "fpn_bottleneck"),
    *conv_norm_act_rules(r"scene_head\.0", "heads.scene.conv"),
    affine_rule(r"scene_head\.2", "heads.scene.classifier"),
    *(
        rule
        for task in ("object", "part", "material")
        for rule in (
            *conv_norm_act_rules(rf"{task}_head\.0", f"heads.{task}.convs.0"),
            affine_rule(rf"{task}_head\.1", f"heads.{task}.classifier"),
        )
    ),
]


def csail_part_channels() -> list[str]:
    """Names ("<object>/<part>") of the part head's channels of CSAIL's Broden+ model, in order:
    per row of ``object_part_hierarchy.csv``, the object's part list ("-" first)."""
    return [
        f"{BRODEN_PLUS_OBJECTS[obj]}/{BRODEN_PLUS_PARTS[part]}"
        for obj, parts in BRODEN_PLUS_OBJECT_PARTS
        for part in parts
    ]


# task -> (metadata key of the target classes, CSAIL's channel names, channels it may drop)
_CLASSIFIERS: dict[str, tuple[str, Sequence[str], Collection[str]]] = {
    "object": ("object_classes", BRODEN_PLUS_OBJECTS, (_BACKGROUND,)),
    "part": ("part_classes", csail_part_channels(), ()),
    "material": ("material_classes", BRODEN_PLUS_MATERIALS, (_BACKGROUND,)),
    "scene": ("scene_classes", BRODEN_PLUS_SCENES, ()),
}


def is_csail_upp_state_dict(keys: Iterable[str]) -> bool:
    """Whether ``keys`` hold a CSAIL unified-parsing decoder (``scene_head``, ``object_head``,
    ``part_head``, ``material_head``, ``conv_fusion``), also under a SegmentationModule's
    ``decoder.``."""
    return any(_MARKER.match(k) for k in keys)


def _row_order(
    source: Sequence[str], target: Sequence[str], droppable: Collection[str], what: str
) -> tuple[list[int], list[str]]:
    """Indices of ``target``'s names among ``source``'s, and the dropped source names.

    Raises:
        ValueError naming the target classes CSAIL has no channel for, or the channels other
        than ``droppable`` that no target class takes.
    """
    position = {name: i for i, name in enumerate(source)}
    missing = [name for name in target if name not in position]
    if missing:
        raise ValueError(f"{what}: CSAIL's model has no channel for the classes {missing[:10]}")
    wanted = set(target)
    dropped = [name for name in source if name not in wanted]
    unexpected = [name for name in dropped if name not in droppable]
    if unexpected:
        raise ValueError(
            f"{what}: CSAIL's channels {unexpected[:10]} are no class of the target metadata"
        )
    return [position[name] for name in target], dropped


def _edit_classifier(
    state: dict[str, torch.Tensor], task: str, metadata: Mapping[str, Any]
) -> dict[str, str]:
    """Keep and order the rows of ``heads.<task>.classifier`` as the metadata's classes (the
    scene's (K, C, 1, 1) weight becomes (K, C)). Returns {key: what was done}."""
    meta_key, channels, droppable = _CLASSIFIERS[task]
    prefix = f"heads.{task}.classifier."
    if prefix + "weight" not in state:
        return {}
    if state[prefix + "weight"].shape[0] != len(channels):
        raise ValueError(
            f"CSAIL {task}_head has {state[prefix + 'weight'].shape[0]} channels; its Broden+ "
            f"model has {len(channels)}"
        )
    order, dropped = _row_order(channels, metadata[meta_key], droppable, f"{task} classifier")
    notes = []
    if dropped:
        rows = ", ".join(f"{channels.index(n)} ('{n}')" for n in dropped)
        notes.append(f"row {rows} dropped (CSAIL's background, never trained: ignore_index=0)")
    if [i for i, name in enumerate(channels) if name not in set(dropped)] != order:
        notes.append(f"rows reordered to the metadata's {meta_key}")
    if order != list(range(len(channels))):
        index = torch.tensor(order, dtype=torch.long)
        for name in ("weight", "bias"):
            state[prefix + name] = state[prefix + name].index_select(0, index)
    weight = state[prefix + "weight"]
    if task == "scene" and weight.dim() == 4:
        state[prefix + "weight"] = weight.flatten(1)
        notes.append("1x1 conv weight (K, C, 1, 1) -> linear (K, C)")
    return {prefix + name: "; ".join(notes) for name in ("weight", "bias") if notes}


def convert_csail_upp_state_dicts(
    encoder: Mapping[str, Any],
    decoder: Mapping[str, Any],
    *,
    metadata: Mapping[str, Any] | None = None,
    author: str = "CSAIL",
) -> Conversion:
    """Rename CSAIL's unified-parsing encoder and decoder to a UnifiedPerceptualParser's names
    and fit the classifiers to ``metadata``'s classes (see the module doc).

    Args:
        encoder, decoder: CSAIL state dicts (either may be empty: the other part alone).
        metadata: multi-task metadata of the target parser (``object_classes``,
            ``part_classes``, ``material_classes``, ``scene_classes``); default: Broden+'s
            (:func:`~uper_parsing.data.datasets.broden_plus_categories.broden_plus_metadata`).

    Returns:
        Conversion (``kind == "model"``): ``renamed`` names the sources as a SegmentationModule
        does (``encoder.*``, ``decoder.*``); ``ignored`` holds only SyncBN bookkeeping;
        ``edited`` the classifier rows dropped / reordered and the scene reshape; ``metadata``
        the target metadata.

    Raises:
        ValueError naming the keys that are neither mappable nor safe to drop, or the classes
        that do not match CSAIL's channels.
    """
    meta = dict(broden_plus_metadata() if metadata is None else metadata)
    enc, dec = as_tensors(encoder), as_tensors(decoder)
    state, renamed, dropped = rename_csail_part(
        enc, ENCODER_RULES, SYNC_BN_IGNORED, "backbone.", "encoder"
    )
    dec_state, dec_renamed, dec_dropped = rename_csail_part(
        dec, _DECODER_RULES, SYNC_BN_IGNORED, "", "decoder"
    )
    state.update(dec_state)
    renamed.update(dec_renamed)
    edited: dict[str, str] = {}
    for task in _CLASSIFIERS:
        edited.update(_edit_classifier(state, task, meta))
    return Conversion(
        state,
        "model",
        SOURCE_FORMAT,
        author,
        renamed,
        dropped + dec_dropped,
        filled=[],
        edited=edited,
        metadata=meta,
    )


def convert_csail_upp_file(state: Mapping[str, Any], *, author: str) -> Conversion:
    """One CSAIL file: a SegmentationModule's state dict (``encoder.*`` and ``decoder.*``), or
    an encoder's or a decoder's alone (the other part stays empty)."""
    encoder, decoder = split_csail_state_dict(state)
    return convert_csail_upp_state_dicts(encoder, decoder, author=author)
