"""How far the exported model departs from the trained fake-quant model, and where (docs/int8_parity.md).

    python experiments/int8_parity.py --checkpoint runs/mr_minilm_qat/checkpoints/best --data mr:test \
        --output deploy/mr_int8 --json docs/int8_parity/mr.json

Exports the checkpoint to INT8 (tools/export.py's path, or reads an existing --output), then runs
the trained dygraph model and the exported graph four ways on the data: Paddle Inference FP32 with
its graph passes off (op by op) and on (fused, as deployed), and oneDNN INT8. Each row gives the
argmax agreement with the trained model and the max and mean |Δlogit|. It also counts, in the
checkpoint's own order and in the exported one, the neighbouring weight pairs (k = 2i, 2i + 1) of
the quantized Linear layers that can overflow int16 in oneDNN's int8 GEMM on CPUs without VNNI
(ernie_qat.quant.int16_pairs), and prints the CPU's VNNI/AMX flags.
"""
import argparse
from pathlib import Path

import numpy as np

from ernie_qat import cli
from ernie_qat.atomic import write_json
from ernie_qat.data.batching import encode
from ernie_qat.data.loader import read_examples
from ernie_qat.data.sources import data_file
from ernie_qat.deploy import MODEL_PREFIX, Predictor, read_deploy_config
from ernie_qat.export import export
from ernie_qat.quant.int16_pairs import PAIR_LIMIT, levels
from ernie_qat.quant.saved_model import opened_model
from ernie_qat.train.checkpoint import load_checkpoint
from ernie_qat.train.evaluate import predict_logits

WEIGHT_OPS = ("dequantize_abs_max", "fake_quantize_dequantize_moving_average_abs_max")


def overflowing_pairs(weights) -> int:
    """Neighbour pairs (rows 2i, 2i + 1) and columns of int8 levels [K, N] whose same-sign sum exceeds PAIR_LIMIT."""
    count = 0
    for lv in weights:
        first, second = lv[0::2], lv[1::2]
        count += int(((np.sign(first) == np.sign(second)) & (np.abs(first) + np.abs(second) > PAIR_LIMIT)).sum())
    return count


def checkpoint_levels(model):
    """int8 levels of each fake-quantized Linear weight of the trained model, in its own order."""
    return [levels(layer.weight.numpy()) for layer in model.sublayers() if hasattr(layer, "_fake_quant_weight")]


def exported_levels(folder: Path):
    """int8 levels of each weight the exported graph quantizes, in the exported order."""
    out = []
    with opened_model(str(folder / MODEL_PREFIX)) as saved:
        for op in saved.block.ops:
            if op.type == WEIGHT_OPS[0]:  # a weight stored as int8 levels
                out.append(saved.tensor(op.input("X")[0]).astype(np.float64))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True, help="labelled file or dataset:split")
    parser.add_argument("--output", required=True, help="the INT8 deployment folder (exported here unless it exists)")
    parser.add_argument("--threads", type=cli.positive_int, default=1)
    parser.add_argument("--json", help="write the rows as JSON")
    args = parser.parse_args()
    folder = Path(args.output)
    if not folder.exists():
        export(args.checkpoint, folder, "int8")
    model, tokenizer, labels, cfg = load_checkpoint(args.checkpoint)
    items = encode(read_examples(data_file(args.data)), tokenizer,
                   read_deploy_config(folder)["max_seq_len"], labels)
    trained = predict_logits(model, items, cfg.train.eval_batch_size)
    engines = {"FP32, graph passes off": ("fp32", False), "FP32, graph passes on": ("fp32", True),
               "INT8 (oneDNN)": ("int8", True)}
    rows = []
    for name, (precision, passes) in engines.items():
        logits = Predictor(folder, precision, args.threads, passes=passes).predict_logits(items)
        difference = np.abs(logits - trained)
        rows.append({"engine": name, "agreement": 100.0 * float(np.mean(logits.argmax(1) == trained.argmax(1))),
                     "max_abs_logit_diff": float(difference.max()), "mean_abs_logit_diff": float(difference.mean())})
        print(f"{name:24s} agreement {rows[-1]['agreement']:6.2f}%  max|Δlogit| {difference.max():.4f}  "
              f"mean|Δlogit| {difference.mean():.5f}", flush=True)
    pairs = {"checkpoint_order": overflowing_pairs(checkpoint_levels(model)),
             "exported_order": overflowing_pairs(exported_levels(folder))}
    print(f"weight pairs that can overflow int16 without VNNI: {pairs['checkpoint_order']} in the checkpoint's "
          f"order, {pairs['exported_order']} as exported")
    flags = sorted({f for line in open("/proc/cpuinfo") if line.startswith("flags")
                    for f in line.split(":")[1].split() if f.startswith(("avx512_vnni", "avx_vnni", "amx"))})
    print(f"CPU VNNI/AMX flags: {flags or 'none (int8 GEMM pairs products in saturating int16)'}")
    if args.json:
        write_json(args.json, {"checkpoint": args.checkpoint, "data": args.data, "examples": len(items),
                               "rows": rows, "overflowing_pairs": pairs, "cpu_flags": flags})


if __name__ == "__main__":
    cli.run(main)
