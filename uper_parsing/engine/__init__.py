from . import hooks
from .defaults import (
    DefaultTrainer,
    create_ddp_model,
    default_argument_parser,
    default_setup,
    default_writers,
    resolve_device,
    write_results,
)
from .hooks import HookBase
from .launch import launch
from .phases import train_model
from .train_loop import AMPTrainer, SimpleTrainer, TrainerBase

__all__ = [
    "AMPTrainer",
    "DefaultTrainer",
    "HookBase",
    "SimpleTrainer",
    "TrainerBase",
    "create_ddp_model",
    "default_argument_parser",
    "default_setup",
    "default_writers",
    "hooks",
    "launch",
    "resolve_device",
    "train_model",
    "write_results",
]
