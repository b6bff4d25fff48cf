"""Test-wide JAX set-up: 8 fake CPU devices (sharding tests) and float64 off by default."""
import jax

# Must run before any JAX computation: the sharding tests need several devices.
jax.config.update("jax_num_cpu_devices", 8)
