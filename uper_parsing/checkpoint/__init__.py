from .atomic import atomic_write
from .checkpointer import Checkpointer, PeriodicCheckpointer

__all__ = ["Checkpointer", "PeriodicCheckpointer", "atomic_write"]
