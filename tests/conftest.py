"""Test-wide JAX set-up: 8 fake CPU devices, for the sharding tests."""
from jaxnoisy.train.devices import use_cpu_cores

# Must run before any JAX computation.
use_cpu_cores(8)
