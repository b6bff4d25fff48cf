"""Devices: CPU host devices (data parallelism over a CPU-only machine's cores) and
joining a multi-process run."""

import os


def use_cpu_cores(n: int | None = None) -> None:
  """Exposes ``n`` (default: every core) CPU host devices; call before JAX starts.

  Only the CPU backend is affected: on a GPU/TPU machine the accelerators stay the
  default devices. Once JAX has started (e.g. the CLI called from a running program)
  the devices are left as they are.
  """
  import jax

  try:
    jax.config.update("jax_num_cpu_devices", n or os.cpu_count() or 1)
  except RuntimeError:  # backends already initialised: too late to change
    pass


def join_processes(coordinator: str | None = None, num_processes: int | None = None,
                   process_id: int | None = None) -> None:
  """``jax.distributed.initialize``: this process joins a multi-process run.

  With no arguments JAX detects the cluster (SLURM, Open MPI, TPU pods); otherwise
  every process passes the same ``coordinator`` ("host:port" of process 0) and
  ``num_processes`` and its own ``process_id``. Call before JAX runs anything. Every
  process then runs the same program on the global mesh; on CPU the collectives
  across processes go through Gloo.
  """
  import jax

  if num_processes is not None and (num_processes < 1 or process_id is None
                                    or not 0 <= process_id < num_processes):
    raise ValueError(f"process_id must be in [0, {num_processes}), got {process_id}")
  jax.distributed.initialize(coordinator, num_processes, process_id)
