"""CPU host devices: data parallelism over the cores of a CPU-only machine."""

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
