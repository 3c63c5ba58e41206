"""Logging set-up: console on the main process, a file per process."""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["setup_logger"]

_FORMAT = "[%(asctime)s] %(name)s %(levelname)s: %(message)s"
_DATE_FORMAT = "%m/%d %H:%M:%S"
_HANDLER_TAG = "_uper_parsing_handler"  # marks the handlers this module installed


def _log_file(output: str, distributed_rank: int) -> str:
    filename = output if output.endswith((".txt", ".log")) else os.path.join(output, "log.txt")
    if distributed_rank > 0:
        filename = f"{filename}.rank{distributed_rank}"
    return filename


def setup_logger(
    output: str | None = None,
    distributed_rank: int = 0,
    name: str = "uper_parsing",
    *,
    configure_stdout: bool = True,
) -> logging.Logger:
    """Configure the logger ``name`` and return it.

    The main process (``distributed_rank == 0``) logs to stdout; every process logs to a file when
    ``output`` is given: ``output`` itself if it ends in ``.txt`` / ``.log``, else
    ``output/log.txt``; processes of rank N > 0 append ``.rankN``.

    Calling it again replaces the handlers a previous call installed (so repeated set-ups, e.g. in
    tests, never duplicate lines or keep old files open). Messages do not propagate to the root
    logger, so they are not printed twice.
    """
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    for handler in [h for h in logger.handlers if getattr(h, _HANDLER_TAG, False)]:
        logger.removeHandler(handler)
        handler.close()

    formatter = logging.Formatter(_FORMAT, datefmt=_DATE_FORMAT)
    if configure_stdout and distributed_rank == 0:
        console = logging.StreamHandler(stream=sys.stdout)
        console.setLevel(logging.DEBUG)
        console.setFormatter(formatter)
        setattr(console, _HANDLER_TAG, True)
        logger.addHandler(console)
    if output:
        filename = _log_file(output, distributed_rank)
        os.makedirs(os.path.dirname(os.path.abspath(filename)), exist_ok=True)
        file_handler = logging.FileHandler(filename, mode="a", encoding="utf-8")
        file_handler.setLevel(logging.DEBUG)
        file_handler.setFormatter(formatter)
        setattr(file_handler, _HANDLER_TAG, True)
        logger.addHandler(file_handler)
    return logger
