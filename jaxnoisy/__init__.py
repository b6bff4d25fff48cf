"""jaxnoisy: learning with noisy labels in JAX and Optax."""

__version__ = "0.1.0"

from jaxnoisy import tree
from jaxnoisy.ncsam import (flip_targets, ncsam, ncsam_gradients, ncsam_perturbation,
                            ncsam_strength)
from jaxnoisy.sam import (asam, gsam, gsam_direction, perturbed_gradient, sam,
                          sam_perturbation, sharpness_aware)
from jaxnoisy.sam_variants import (GradientEMAState, fsam, fsam_direction, gradient_ema,
                                   vasso)
from jaxnoisy.saner import (SANERState, samwo, samwo_direction, saner, saner_down_weight,
                            saner_group_fractions, saner_masks, saner_reweight)
from jaxnoisy.tree import global_norm

__all__ = [
    "GradientEMAState", "SANERState", "asam", "flip_targets", "fsam", "fsam_direction",
    "global_norm", "gradient_ema", "gsam", "gsam_direction", "ncsam", "ncsam_gradients",
    "ncsam_perturbation", "ncsam_strength", "perturbed_gradient", "sam",
    "sam_perturbation", "samwo", "samwo_direction", "saner", "saner_down_weight",
    "saner_group_fractions", "saner_masks", "saner_reweight", "sharpness_aware", "tree",
    "vasso",
]

from jaxnoisy.meta import (MetaReweightResult, check_clean_size, l2rw_normalize,
                           l2rw_scores, l2rw_weights, lookahead_clean_loss, meta_reweight_step,
                           mwnet_init, mwnet_step, mwnet_weights, surrogate_agreement,
                           weight_auc, weight_diagnostics, weighted_loss)

__all__ += [
    "MetaReweightResult", "check_clean_size", "l2rw_normalize", "l2rw_scores", "l2rw_weights",
    "lookahead_clean_loss", "meta_reweight_step", "mwnet_init", "mwnet_step",
    "mwnet_weights", "surrogate_agreement", "weight_auc", "weight_diagnostics",
    "weighted_loss",
]

from jaxnoisy.meta import (BomeMLCResult, EBOMLCResult, LabelCorrectionNet, MLCResult,
                           bome_lambda, bome_mlc_step, corrected_accuracy, ebomlc_beta,
                           ebomlc_step, ebomlc_upper_loss, lcn_init, mlc_step,
                           sgd_direction, soft_cross_entropy)

__all__ += [
    "BomeMLCResult", "EBOMLCResult", "LabelCorrectionNet", "MLCResult", "bome_lambda",
    "bome_mlc_step", "corrected_accuracy", "ebomlc_beta", "ebomlc_step",
    "ebomlc_upper_loss", "lcn_init", "mlc_step", "sgd_direction", "soft_cross_entropy",
]

from jaxnoisy.meta import (check_fbr_clean_set, fbr_persistent_weights, fbr_scores,
                           fbr_weights)

__all__ += ["check_fbr_clean_set", "fbr_persistent_weights", "fbr_scores", "fbr_weights"]
