from .atomic import atomic_write
from .checkpointer import Checkpointer, PeriodicCheckpointer
from .conversion import Conversion
from .download import cache_dir, cached_download
from .formats import (
    WEIGHTS_FORMATS,
    WeightsFile,
    choose_weights_format,
    convert_weights_file,
    load_backbone_weights,
    place_state_dict,
    read_weights_file,
)
from .metadata import read_checkpoint_config, read_checkpoint_metadata, read_checkpoint_record
from .paths import resolve_weights_path

__all__ = [
    "WEIGHTS_FORMATS",
    "Checkpointer",
    "Conversion",
    "PeriodicCheckpointer",
    "WeightsFile",
    "atomic_write",
    "cache_dir",
    "cached_download",
    "choose_weights_format",
    "convert_weights_file",
    "load_backbone_weights",
    "place_state_dict",
    "read_checkpoint_config",
    "read_checkpoint_metadata",
    "read_checkpoint_record",
    "read_weights_file",
    "resolve_weights_path",
]
