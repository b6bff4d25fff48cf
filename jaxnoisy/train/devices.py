"""CPU host devices: data parallelism over the cores of a CPU-only machine."""

import os

# XLA aborts the process when a CPU collective waits 40 s for a peer device; on a
# loaded machine (more busy threads than cores) a peer can be descheduled that long.
_COLLECTIVE_FLAGS = ("--xla_cpu_collective_call_terminate_timeout_seconds=1800",
                     "--xla_cpu_collective_call_warn_stuck_timeout_seconds=300")
# With several host devices, each device runs its program on a thread of its own; the
# shared intra-op (Eigen) pool is turned off. With it, 2-device runs on 2 cores hung
# twice in a cross-device all-reduce (one device waiting, the other idle). Suspected
# cause: a device's program waits on pool threads that the other device holds while it
# waits in the all-reduce. Speed is unchanged on 2 cores (measured with bench_steps).
_MULTI_DEVICE_FLAGS = ("--xla_cpu_multi_thread_eigen=false",)


def use_cpu_cores(n: int | None = None) -> None:
  """Exposes ``n`` (default: every core) CPU host devices; call before JAX starts.

  Only the CPU backend is affected: on a GPU/TPU machine the accelerators stay the
  default devices. Once JAX has started (e.g. the CLI called from a running program)
  the devices are left as they are.
  """
  import jax

  n = n or os.cpu_count() or 1
  flags = os.environ.get("XLA_FLAGS", "")
  wanted = _COLLECTIVE_FLAGS + (_MULTI_DEVICE_FLAGS if n > 1 else ())
  missing = [f for f in wanted if f.split("=")[0] not in flags]
  os.environ["XLA_FLAGS"] = " ".join([flags, *missing]).strip()
  try:
    jax.config.update("jax_num_cpu_devices", n)
  except RuntimeError:  # backends already initialised: too late to change
    pass
