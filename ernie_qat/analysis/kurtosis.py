"""Weight and activation distribution statistics per layer: kurtosis, max|x|/σ, histograms.

Heavy tails (high kurtosis, large max|x|/σ) are what uniform quantization handles badly: the
range must cover the outliers, so the bulk of the values falls on a few levels.
"""
import re
from pathlib import Path
from typing import Dict, List

import numpy as np
import paddle

from ernie_qat.plots import pyplot, write_png
from ernie_qat.ptq.calibrate import InputStats, encoder_layers
from ernie_qat.ptq.ocs import OCSLinear
from ernie_qat.regularizers.kurtosis import kurtosis


def distribution_stats(values: np.ndarray) -> Dict[str, float]:
    """kurtosis (mean of the 4th power of the z-score), max|x|/σ, σ, and the element count."""
    values = values.astype(np.float64).ravel()
    sigma = values.std()
    return {"kurtosis": float(kurtosis(paddle.to_tensor(values))), "max_over_sigma": float(np.abs(values).max() / sigma),
            "sigma": float(sigma), "count": int(values.size)}


def layer_weights(model, include: str) -> Dict[str, np.ndarray]:
    """`<layer>.weight` -> values of the encoder Linear weights whose name matches the regex `include`, named
    as in the FP32 model also in a quantized one (a fake-quant layer's stored weight, an OCS layer's split one)."""
    pattern = re.compile(include)
    weights = {}
    for name, layer in encoder_layers(model):
        if pattern.search(f"{name}.weight"):
            weights[f"{name}.weight"] = (layer.linear if isinstance(layer, OCSLinear) else layer).weight.numpy()
    return weights


def weight_table(weights: Dict[str, np.ndarray]) -> Dict[str, Dict[str, float]]:
    """Name -> `distribution_stats` of each tensor of `layer_weights`."""
    return {name: distribution_stats(values) for name, values in weights.items()}


def activation_table(stats: Dict[str, InputStats]) -> Dict[str, Dict[str, float]]:
    """Layer name -> `distribution_stats` of its calibration input sample (max from all inputs)."""
    table = {}
    for name, layer_stats in stats.items():
        row = distribution_stats(layer_stats.sample)
        row["max_over_sigma"] = layer_stats.absmax / row["sigma"]
        table[name] = row
    return table


def markdown(tables: Dict[str, Dict[str, Dict[str, float]]], columns=("kurtosis", "max_over_sigma")) -> str:
    """One row per tensor, one column per (model label, statistic)."""
    labels = list(tables)
    names = list(dict.fromkeys(name for table in tables.values() for name in table))
    header = "| tensor | " + " | ".join(f"{label}: {column}" for label in labels for column in columns) + " |"
    lines = [header, "|---|" + "---|" * (len(labels) * len(columns))]
    for name in names:
        cells = [f"{tables[label][name][column]:.2f}" if name in tables[label] else ""
                 for label in labels for column in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_histograms(samples: Dict[str, Dict[str, np.ndarray]], names: List[str], path: Path, title: str) -> None:
    """One panel per tensor name: histograms (log counts) of its values in each labelled model, overlaid."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
    for axis, name in zip(axes[0], names):
        for label, values in samples.items():
            if name in values:
                data = values[name].ravel()
                stats = distribution_stats(data)
                axis.hist(data, bins=120, histtype="step", log=True,
                          label=f"{label}: kurt {stats['kurtosis']:.1f}, max/σ {stats['max_over_sigma']:.1f}")
        axis.set_title(name.replace("net.ernie.encoder.", ""), fontsize=8)
        axis.legend(fontsize=7)
    fig.suptitle(title)
    write_png(fig, path)
