"""jaxnoisy: learning with noisy labels in JAX and Optax."""

__version__ = "0.1.0"

from jaxnoisy.ncsam import (NCSAMState, flip_targets, ncsam, ncsam_gradients,
                            ncsam_perturbation, ncsam_strength)
from jaxnoisy.sam import (GSAMState, SAMState, asam, global_norm, gsam, gsam_direction,
                          perturbed_gradient, sam, sam_perturbation)
from jaxnoisy.saner import (SANERState, saner, saner_down_weight, saner_group_fractions,
                            saner_masks, saner_reweight)

__all__ = [
    "GSAMState", "NCSAMState", "SAMState", "SANERState", "asam", "flip_targets",
    "global_norm", "gsam", "gsam_direction", "ncsam", "ncsam_gradients",
    "ncsam_perturbation", "ncsam_strength", "perturbed_gradient", "sam",
    "sam_perturbation", "saner", "saner_down_weight", "saner_group_fractions",
    "saner_masks", "saner_reweight",
]
