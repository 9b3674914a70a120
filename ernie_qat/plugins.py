"""The plugins a config enables, built from the registries of ernie_qat.train.hooks."""
from typing import List

from ernie_qat.train.hooks import (INTERVENTIONS, LOSS_TERMS, STEP_STRATEGIES, STRUCTURAL, TRANSFORMS,
                                   ModelTransform, PluginError, Plugins)


def _built(registry, cfg, role: str = "") -> list:
    """What the registry's builders make of `cfg`; with `role`, builders registered with another role do not run
    (so reloading a checkpoint never builds a training-only transform, such as compiling the training kernels)."""
    import ernie_qat.methods  # noqa: F401  (fills the registries)
    built = [build(cfg) for name, build in registry.items() if not role or registry.roles.get(name, role) == role]
    return [plugin for item in built if item is not None for plugin in (item if isinstance(item, list) else [item])]


def build_transforms(cfg, role: str = STRUCTURAL) -> List[ModelTransform]:
    """The config's model transforms of `role` (structural: what reloading a checkpoint re-applies), in order."""
    return [t for t in Plugins(transforms=_built(TRANSFORMS, cfg, role)).ordered_transforms() if t.role == role]


def build_plugins(cfg) -> Plugins:
    """Every plugin the config enables: transforms of both roles, loss terms, interventions, the step strategy.

    Raises:
        PluginError: more than one optimizer-step strategy is enabled.
    """
    strategies = _built(STEP_STRATEGIES, cfg)
    if len(strategies) > 1:
        raise PluginError(f"more than one optimizer-step strategy enabled: {[s.name for s in strategies]}; "
                          "choose one")
    plugins = Plugins(transforms=_built(TRANSFORMS, cfg), loss_terms=_built(LOSS_TERMS, cfg),
                      interventions=_built(INTERVENTIONS, cfg), ground_truth_weight=cfg.distill.ground_truth_weight)
    if strategies:
        plugins.step_strategy = strategies[0]
    return plugins
