from . import hooks
from .defaults import (
    DefaultTrainer,
    create_ddp_model,
    ddp_options,
    default_argument_parser,
    default_setup,
    default_writers,
    resolve_device,
    write_results,
)
from .hooks import HookBase
from .launch import launch
from .phases import train_model
from .predictor import DefaultPredictor, Predictor
from .train_loop import (
    PREEMPTED_EXIT_CODE,
    AMPTrainer,
    SimpleTrainer,
    TrainerBase,
    TrainingPreempted,
)

__all__ = [
    "PREEMPTED_EXIT_CODE",
    "AMPTrainer",
    "DefaultPredictor",
    "DefaultTrainer",
    "HookBase",
    "Predictor",
    "SimpleTrainer",
    "TrainerBase",
    "TrainingPreempted",
    "create_ddp_model",
    "ddp_options",
    "default_argument_parser",
    "default_setup",
    "default_writers",
    "hooks",
    "launch",
    "resolve_device",
    "train_model",
    "write_results",
]
