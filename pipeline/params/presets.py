"""The named rain presets: the one definition of what `small`, `medium`, `large` and `random` mean.

A rain entry in params.yaml (synthesize.suites.*.presets, train.rain.presets) may name any of
PRESETS; pipeline.params.synthesis validates against it and the engine (pipeline.synthesis) draws from
PRESET_CONFIGS.
"""

from __future__ import annotations

from pipeline.params.rain import RainConfig

# The authors' presets (method.md, "Rain synthesis"); beta ~ U[0.7, 1.0] for all of them.
PRESET_CONFIGS: dict[str, RainConfig] = {
    "small": RainConfig(
        name="small", amount=(0.002, 0.004), width=[1, 3], width_probs=[0.5, 0.5],
        length=(25, 35), angle=[(-10, 10)],
    ),
    "medium": RainConfig(
        name="medium", amount=(0.005, 0.007), width=[3, 5, 7], width_probs=[0.25, 0.5, 0.25],
        length=(35, 45), angle=[(-30, 30)],
    ),
    "large": RainConfig(
        name="large", amount=(0.008, 0.010), width=[7, 9], width_probs=[0.5, 0.5],
        length=(45, 55), angle=[(-60, 60)],
    ),
    "random": RainConfig(
        name="random", amount=(0.002, 0.010), width=[1, 3, 5, 7, 9],
        length=(25, 55), angle=[(-60, 60)],
    ),
}
PRESETS = tuple(PRESET_CONFIGS)
