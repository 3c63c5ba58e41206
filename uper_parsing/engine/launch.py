"""Start a function on one or several processes (one per GPU) with torch.distributed set up.

``train_net.py --num-gpus N`` spawns N processes here; ``torchrun`` starts them itself, and then
``launch`` only joins the process group. Without CUDA the processes use the gloo backend on the
CPU (that is how the multi-process tests run).

A process whose training stopped on request (:class:`TrainingPreempted`) exits with
``PREEMPTED_EXIT_CODE``, and ``launch`` raises ``TrainingPreempted`` in the launching process,
which also passes SIGTERM / SIGUSR1 it receives on to the processes it spawned.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ..utils import comm
from .train_loop import (
    PREEMPTED_EXIT_CODE,
    PREEMPTION_SIGNALS,
    TrainingPreempted,
    restore_signal_handlers,
)

__all__ = ["launch", "DEFAULT_TIMEOUT"]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = timedelta(minutes=30)  # collective-operation timeout


def _find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def _started_by_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def launch(
    main_func: Callable[..., Any],
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str | None = None,
    args: tuple = (),
    timeout: timedelta = DEFAULT_TIMEOUT,
) -> None:
    """Call ``main_func(*args)`` on every process of the job.

    - Started by torchrun (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` set): join the process group
      from the environment and call ``main_func`` in this process.
    - One process in total: call ``main_func`` directly (no process group).
    - Otherwise spawn ``num_gpus_per_machine`` processes on this machine; process ``i`` has global
      rank ``machine_rank * num_gpus_per_machine + i``.

    Args:
        main_func: a module-level function (it is pickled into the spawned processes).
        dist_url: rendezvous address such as ``tcp://10.0.0.1:29500``, the same on every machine;
            ``None`` or ``"auto"`` picks a free local port (single machine only).
        args: positional arguments of ``main_func`` (picklable).

    Raises:
        TrainingPreempted: a spawned process stopped training on request (the others did too).
    """
    if _started_by_torchrun():
        _run_from_torchrun(main_func, args, timeout)
        return
    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1:
        main_func(*args)
        return
    if dist_url in (None, "auto"):
        if num_machines != 1:
            raise ValueError("dist_url must be given explicitly when num_machines > 1")
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    context = mp.start_processes(
        _distributed_worker,
        nprocs=num_gpus_per_machine,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout),
        daemon=False,
        start_method="spawn",
        join=False,
    )
    with _forwarding_signals([p.pid for p in context.processes], PREEMPTION_SIGNALS):
        try:
            # the grace period lets the other processes, which agreed to stop, exit by themselves
            while not context.join(grace_period=60):
                pass
        except mp.ProcessExitedException as error:
            if error.exit_code == PREEMPTED_EXIT_CODE:
                raise TrainingPreempted() from None
            raise


@contextlib.contextmanager
def _forwarding_signals(pids: Sequence[int], signals: Sequence[int]) -> Iterator[None]:
    """Send ``signals`` this process receives on to ``pids`` (a scheduler may signal only the
    launching process); the previous handlers are restored afterwards."""

    def forward(signum: int, frame: object) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    if threading.current_thread() is not threading.main_thread():  # only it may set handlers
        yield
        return
    previous = {sig: signal.signal(sig, forward) for sig in signals}
    try:
        yield
    finally:
        restore_signal_handlers(previous)


def _run_from_torchrun(main_func: Callable[..., Any], args: tuple, timeout: timedelta) -> None:
    local_rank = int(os.environ["LOCAL_RANK"])
    initialized_here = not dist.is_initialized()
    if initialized_here:
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=_backend(), init_method="env://", timeout=timeout)
    comm.synchronize()
    try:
        main_func(*args)
    finally:
        if initialized_here:
            dist.destroy_process_group()


def _distributed_worker(
    local_rank: int,
    main_func: Callable[..., Any],
    world_size: int,
    num_gpus_per_machine: int,
    machine_rank: int,
    dist_url: str,
    args: tuple,
    timeout: timedelta,
) -> None:
    global_rank = machine_rank * num_gpus_per_machine + local_rank
    os.environ.update(
        {
            "LOCAL_RANK": str(local_rank),
            "RANK": str(global_rank),
            "WORLD_SIZE": str(world_size),
            "LOCAL_WORLD_SIZE": str(num_gpus_per_machine),
        }
    )
    if torch.cuda.is_available():
        if num_gpus_per_machine > torch.cuda.device_count():
            raise RuntimeError(
                f"{num_gpus_per_machine} processes per machine requested but only "
                f"{torch.cuda.device_count()} GPUs are visible"
            )
        torch.cuda.set_device(local_rank)
    try:
        dist.init_process_group(
            backend=_backend(),
            init_method=dist_url,
            world_size=world_size,
            rank=global_rank,
            timeout=timeout,
        )
    except Exception:
        logger.error("Process group URL: %s", dist_url)
        raise
    comm.synchronize()
    exit_code = 0
    try:
        main_func(*args)
    except TrainingPreempted as stop:
        logger.info("%s", stop)
        exit_code = PREEMPTED_EXIT_CODE
    finally:
        dist.destroy_process_group()
    _exit_quietly(exit_code)


def _exit_quietly(exit_code: int) -> None:
    """End a spawned worker whose work is done and written (``exit_code`` 0, or
    ``PREEMPTED_EXIT_CODE``: saved after a stop request). gloo sometimes aborts during
    interpreter shutdown after ``destroy_process_group`` (SIGABRT, seen about once in 10-20
    two-process runs), which ``start_processes`` would report as a failed run; flushing the logs
    and leaving with ``os._exit`` skips that shutdown. Errors never reach this point."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)
