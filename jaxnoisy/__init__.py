"""jaxnoisy: learning with noisy labels in JAX and Optax."""

__version__ = "0.1.0"

from jaxnoisy.sam import SAMState, asam, global_norm, perturbed_gradient, sam, sam_perturbation

__all__ = ["SAMState", "asam", "global_norm", "perturbed_gradient", "sam", "sam_perturbation"]
