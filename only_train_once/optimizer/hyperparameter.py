"""Default hyper-parameters of the optimizers, per gradient variant (SPEC section 5.1)."""

from typing import Dict

#: The gradient variants every optimizer of this package supports (SPEC 5.2).
SUPPORT_GRADIENT_ESTIMATES = ["sgd", "adam", "adamw"]

#: Values substituted for ``None`` constructor arguments. ``lr``, ``lmbda``, ``lmbda_amplify`` and
#: ``hat_lmbda_coeff`` are kept for scripts that read them; no optimizer here uses them.
DEFAULT_OPT_PARAMS: Dict[str, Dict[str, float]] = {
    "sgd": {
        "lr": 1e-1,
        "first_momentum": 0.0,
        "second_momentum": 0.0,
        "dampening": 0.0,
        "weight_decay": 0.0,
        "lmbda": 1e-3,
        "lmbda_amplify": 2,
        "hat_lmbda_coeff": 10,
    },
    "adam": {
        "lr": 1e-3,
        "first_momentum": 0.9,
        "second_momentum": 0.999,
        "dampening": 0.0,
        "weight_decay": 0.0,
        "lmbda": 1e-2,
        "lmbda_amplify": 20,
        "hat_lmbda_coeff": 1e3,
    },
    "adamw": {
        "lr": 1e-3,
        "first_momentum": 0.9,
        "second_momentum": 0.999,
        "dampening": 0.0,
        "weight_decay": 1e-2,
        "lmbda": 1e-2,
        "lmbda_amplify": 20,
        "hat_lmbda_coeff": 1e3,
    },
}

#: Adam moment initialisation (SPEC 12.4 O15). ``"standard"``: zero-initialised, bias-corrected moments, as
#: ``torch.optim.Adam``. ``"reference"``: the first buffer value is the gradient itself (first Adam step
#: ``≈ 0.316 * sign(g)`` for the default betas). Momentum SGD is the same in both (torch's SGD behaviour).
MOMENT_INITIALIZATIONS = ("standard", "reference")
