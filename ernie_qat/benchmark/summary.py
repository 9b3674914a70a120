"""An FP32 and an INT8 export side by side, measured on the spot: the closing summary of `make demo`.

Both predictors label a labelled split (accuracy, macro-F1, argmax agreement); the folders' sizes are their
files' bytes; latency is one text of the split's median length through `Predictor.predict` (tokenizing
included), timed in turns (`time_in_turns`): a second or two in all. The CPU's model and int8 dot-product
flags are printed with it: without VNNI or AMX, oneDNN's int8 layers are no faster than FP32 at one text.
"""
from pathlib import Path
from typing import Dict, Optional, Sequence

from ernie_qat.atomic import folder_megabytes
from ernie_qat.benchmark.inference import time_in_turns
from ernie_qat.benchmark.machine import int8_dot_product, machine_info
from ernie_qat.data.loader import read_examples
from ernie_qat.data.sources import data_file
from ernie_qat.deploy import Predictor
from ernie_qat.train.metrics import classification_metrics

LATENCY_RUNS = 40  # timed calls per predictor (after warm-up)


def compare(folders: Dict[str, Path], data: str, threads: Optional[int] = None) -> dict:
    """{"data", "examples", "agreement" (% same label), "threads", "cpu", "int8_dot_product" (the CPU's VNNI/AMX
    flags, "" if none), and per folder name: accuracy, macro_f1, size_mb, p50_ms} of the deployment `folders` ({"fp32": ..., "int8": ...}) on the labelled `data`
    (a file or `dataset:split`)."""
    examples = read_examples(data_file(data), require_label=True)
    texts, pairs = [e.text for e in examples], [e.text_pair for e in examples]
    predictors = {name: Predictor(folder, threads=threads) for name, folder in folders.items()}
    labels = {name: [p.label for p in predictor.predict(texts, pairs)] for name, predictor in predictors.items()}
    names = sorted({e.label for e in examples} | {label for got in labels.values() for label in got if label})
    gold = [names.index(e.label) for e in examples]
    median = sorted(range(len(texts)), key=lambda i: len(texts[i]))[len(texts) // 2]
    latency = time_in_turns({name: (predictor.predict, ([texts[median]], [pairs[median]]))
                             for name, predictor in predictors.items()}, batch=1, runs=LATENCY_RUNS, warmup=3)
    first, second = list(labels.values())[:2]
    machine = machine_info()
    out = {"data": data, "examples": len(examples), "threads": next(iter(predictors.values())).threads,
           "cpu": machine["cpu"], "int8_dot_product": int8_dot_product(machine),
           "agreement": 100.0 * sum(a == b for a, b in zip(first, second)) / len(examples)}
    for name, got in labels.items():
        metrics = classification_metrics(gold, [names.index(label) if label else -1 for label in got])
        out[name] = {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
                     "size_mb": folder_megabytes(folders[name]), "p50_ms": latency[name]["p50_ms"]}
    return out


def format_summary(summary: dict, folders: Dict[str, Path], next_paths: Sequence[str] = ()) -> str:
    """The summary as a few lines of text: a table of the two folders, then the paths to look at next."""
    fp32, int8 = summary["fp32"], summary["int8"]
    rows = [("", "FP32", "INT8", ""),
            ("accuracy", f"{fp32['accuracy']:.2f}", f"{int8['accuracy']:.2f}",
             f"argmax agreement {summary['agreement']:.2f}%"),
            ("macro-F1", f"{fp32['macro_f1']:.2f}", f"{int8['macro_f1']:.2f}", ""),
            ("folder", f"{fp32['size_mb']:.1f} MB", f"{int8['size_mb']:.1f} MB",
             "INT8 " + _times(fp32["size_mb"] / int8["size_mb"], "smaller", "larger")),
            ("latency p50", f"{fp32['p50_ms']:.1f} ms", f"{int8['p50_ms']:.1f} ms",
             "INT8 " + _times(fp32["p50_ms"] / int8["p50_ms"], "faster", "slower") +
             f" (1 text, {summary['threads']} threads)")]
    lines = [f"Summary on {summary['data']} ({summary['examples']} examples): {folders['fp32']} vs {folders['int8']}"]
    lines += [f"  {a:<12} {b:>9} {c:>9}   {d}".rstrip() for a, b, c, d in rows]
    if summary["int8_dot_product"]:
        lines.append(f"  CPU: {summary['cpu']}, {summary['int8_dot_product']} (oneDNN's fast int8 kernels)")
    else:
        lines.append(f"  CPU: {summary['cpu']}, no VNNI or AMX: int8 layers run oneDNN's GEMM fallback, no faster "
                     "than FP32 at one text; INT8 gains at batches and on VNNI CPUs (docs/int8_speed.md)")
    if next_paths:
        lines += ["Next:"] + [f"  {path}" for path in next_paths]
    return "\n".join(lines)


def _times(ratio: float, better: str, worse: str) -> str:
    """"2.5x faster" for a ratio of 2.5, "2.0x slower" for 0.5."""
    return f"{ratio:.1f}x {better}" if ratio >= 1 else f"{1 / ratio:.1f}x {worse}"
