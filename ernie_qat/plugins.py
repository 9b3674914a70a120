"""The plugins a config enables. Importing each method module here registers its builders.

Transforms apply in registration order: OCS's layer structure must exist before QAT wraps it.
"""
from ernie_qat.ptq import ocs  # noqa: F401  (registers the OCS structure transform)
from ernie_qat.quant import qat  # noqa: F401  (registers the QAT transform)
from ernie_qat.regularizers import kurtosis  # noqa: F401  (registers the kurtosis loss term)
from ernie_qat.train.hooks import LOSS_TERMS, STEP_STRATEGIES, TRANSFORMS, Plugins


def build_transforms(cfg) -> list:
    """The model transforms the config enables, in registration order."""
    return [t for t in (build(cfg) for build in TRANSFORMS.values()) if t is not None]


def build_plugins(cfg) -> Plugins:
    """Transforms, loss terms and the step strategy the config enables."""
    strategies = [s for s in (build(cfg) for build in STEP_STRATEGIES.values()) if s is not None]
    if len(strategies) > 1:
        raise ValueError(f"more than one optimizer-step strategy enabled: {strategies}")
    plugins = Plugins(transforms=build_transforms(cfg),
                      loss_terms=[t for t in (build(cfg) for build in LOSS_TERMS.values()) if t is not None])
    if strategies:
        plugins.step_strategy = strategies[0]
    return plugins
