"""The trainer's method table: every method the trainer runs, by name.

A method is a :class:`~jaxnoisy.train.interface.Method`: its hyper-parameter records,
its Optax transform and the gradients that feed it, and the lifecycle hooks it fills.
Adding a method is one module (its records and entry), one line here and one test file;
the config fields, command-line flags and sweepable set derive from the records.
"""

from __future__ import annotations

from jaxnoisy.train import fbr_method, meta_methods, sam_methods
from jaxnoisy.train.interface import Method

#: Every method the trainer runs, by its ``--method`` name.
METHODS: dict[str, Method] = {
    **sam_methods.METHODS,
    **meta_methods.METHODS,
    "fbr": fbr_method.METHOD,
}

# Methods and hyper-parameters that were renamed or replaced: the old spelling fails
# with a message naming the new one.
REPLACED = {
    "feature_reweight": "method 'feature_reweight' was replaced by 'fbr' (the authors' "
                        "Feature-Based Reweighting)",
    "mlc_lookahead": "mlc_lookahead is now mlc_gradient_steps (microsoft/MLC's "
                     "--gradient_steps: K real steps accumulate the LCN's hypergradient)",
    "weight_step": "weight_step belonged to the removed feature_reweight; fbr's "
                   "hyper-parameters are the fbr_* flags",
}
