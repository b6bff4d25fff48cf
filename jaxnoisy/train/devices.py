"""CPU host devices: data parallelism over the cores of a CPU-only machine."""

import os

# XLA aborts the process when a CPU collective waits 40 s for a peer device; on a
# loaded machine (more busy threads than cores) a peer can be descheduled that long.
_COLLECTIVE_FLAGS = ("--xla_cpu_collective_call_terminate_timeout_seconds=1800",
                     "--xla_cpu_collective_call_warn_stuck_timeout_seconds=300")



def use_cpu_cores(n: int | None = None) -> None:
  """Exposes ``n`` (default: every core) CPU host devices; call before JAX starts.

  Only the CPU backend is affected: on a GPU/TPU machine the accelerators stay the
  default devices. Once JAX has started (e.g. the CLI called from a running program)
  the devices are left as they are.
  """
  import jax

  n = n or os.cpu_count() or 1
  flags = os.environ.get("XLA_FLAGS", "")
  missing = [f for f in _COLLECTIVE_FLAGS if f.split("=")[0] not in flags]
  os.environ["XLA_FLAGS"] = " ".join([flags, *missing]).strip()
  try:
    jax.config.update("jax_num_cpu_devices", n)
  except RuntimeError:  # backends already initialised: too late to change
    pass
