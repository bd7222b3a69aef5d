"""Joining the multi-process JAX runtime (one process per host), before anything else touches a device.

A single-process run needs nothing. With several processes every one of them calls `initialize()` first; the
settings come from arguments (gin: `distributed_initialize.num_processes = 2`), else from the environment:

    NANOCODE_COORDINATOR=10.0.0.1:1234 NANOCODE_NUM_PROCESSES=2 NANOCODE_PROCESS_ID=0 nanocode pretrain ...

On TPU pods, SLURM and other clusters JAX finds them itself: `distributed_initialize.auto = True` (pod.gin) calls
`jax.distributed.initialize()` with whatever was not given explicitly.
"""

from __future__ import annotations

import os

import jax
from absl import logging as absl_logging

from nanocode.core.errors import ConfigError
from nanocode.core.registry import register_config

ENV_COORDINATOR = "NANOCODE_COORDINATOR"
ENV_NUM_PROCESSES = "NANOCODE_NUM_PROCESSES"
ENV_PROCESS_ID = "NANOCODE_PROCESS_ID"


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"${name}={raw!r} is not an integer") from None


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    auto: bool = False,
    initialization_timeout: int = 300,
) -> bool:
    """Join the distributed runtime when more than one process is configured; True if this run is distributed.

    Idempotent: a second call (or a call after someone else initialised JAX's runtime) does nothing.
    """
    if jax.distributed.is_initialized():
        return True
    coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR) or None
    num_processes = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
    process_id = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
    if not auto and (num_processes is None or num_processes <= 1):
        return False  # one process: nothing to join
    if not auto:
        if coordinator_address is None or process_id is None:
            missing = "coordinator_address" if coordinator_address is None else "process_id"
            raise ConfigError(
                f"{num_processes} processes configured but no {missing}: set distributed_initialize.{missing} "
                f"or ${ENV_COORDINATOR if missing == 'coordinator_address' else ENV_PROCESS_ID}"
            )
        if not 0 <= process_id < num_processes:
            raise ConfigError(f"process_id {process_id} is outside 0..{num_processes - 1}")
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
            initialization_timeout=initialization_timeout,
        )
    except (RuntimeError, ValueError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"jax.distributed.initialize failed: {reason}") from e
    quiet_other_processes()
    return True


def quiet_other_processes() -> None:
    """JAX and orbax log through absl: on a 64-host pod every warning would arrive 64 times. Process 0 keeps
    absl's warnings; the others report errors only (their own failures still reach their stderr)."""
    if jax.process_index() != 0:
        absl_logging.set_verbosity(absl_logging.ERROR)


# Gin wiring for cluster files (pod.gin): `distributed_initialize.auto = True`; trainers call
# `nanocode.core.config.build(initialize)` first thing so those bindings apply.
register_config(initialize, "distributed_initialize")


def process_index() -> int:
    return jax.process_index()


def process_count() -> int:
    return jax.process_count()


def is_main() -> bool:
    """The process that logs, writes run files and prints progress (orbax coordinates checkpoint writes itself)."""
    return jax.process_index() == 0
