"""Meta-learning methods guided by a small clean subset: pure step functions."""

from jaxnoisy.meta.amsgrad import TorchAMSGradState, torch_amsgrad
from jaxnoisy.meta.correction import (BomeMLCResult, EBOMLCResult, LabelCorrectionNet,
                                      MLCResult, bome_lambda, bome_mlc_step,
                                      corrected_accuracy, corrected_labels_loss,
                                      ebomlc_beta, ebomlc_step,
                                      ebomlc_upper_loss, lcn_init, mlc_step,
                                      sgd_direction, soft_cross_entropy)
from jaxnoisy.meta.fbr import (check_fbr_clean_set, fbr_persistent_weights, fbr_scores,
                               fbr_weights)
from jaxnoisy.meta.phases import (clean_loss_and_gradient, coupling, perturb_params,
                                   phase_diagnostics, score_summary, sign_flip_share,
                                   weight_phase_stats)
from jaxnoisy.meta.reweight import (Linearized, MetaReweightResult, check_clean_size,
                                    check_labels, cross_entropy_loss_fn, l2rw_normalize,
                                    l2rw_scores, l2rw_weights, linearize,
                                    lookahead_clean_loss, meta_reweight_step, mwnet_init,
                                    mwnet_step, mwnet_weights, surrogate_agreement,
                                    weight_auc, weight_diagnostics, weighted_gradient,
                                    weighted_loss)

__all__ = [
    "Linearized", "MetaReweightResult", "check_clean_size", "check_labels",
    "cross_entropy_loss_fn", "l2rw_normalize", "l2rw_scores", "l2rw_weights", "linearize",
    "lookahead_clean_loss", "meta_reweight_step", "mwnet_init", "mwnet_step",
    "mwnet_weights", "surrogate_agreement", "weight_auc", "weight_diagnostics",
    "weighted_gradient", "weighted_loss",
    "BomeMLCResult", "EBOMLCResult", "LabelCorrectionNet", "MLCResult", "bome_lambda",
    "bome_mlc_step", "corrected_accuracy", "corrected_labels_loss", "ebomlc_beta",
    "ebomlc_step", "ebomlc_upper_loss", "lcn_init", "mlc_step", "sgd_direction", "soft_cross_entropy",
    "check_fbr_clean_set", "fbr_persistent_weights", "fbr_scores", "fbr_weights",
    "clean_loss_and_gradient", "coupling", "perturb_params", "phase_diagnostics",
    "score_summary", "sign_flip_share", "weight_phase_stats",
    "TorchAMSGradState", "torch_amsgrad",
]
