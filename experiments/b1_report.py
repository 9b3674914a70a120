"""Where the batch-1 MiniLM INT8 call loses to ONNX Runtime: the table of docs/int8_speed.md's batch-1 section.

Reads the `benchmark.json` that `PART=b1 bash experiments/int8_speed.sh` writes (`tools/benchmark.py --shape
minilm --batch 1 --seq-len 4 64 128`, with the ONNX Runtime peer, engines in turns) and prints a Markdown
table per thread count and sequence length: our INT8 p50 and ONNX Runtime INT8's, each with its 4-token p50
subtracted, and our INT8/FP32 speedup with and without those 4-token calls. A 4-token call does almost no
arithmetic (4 rows per GEMM), so its latency is the engine's fixed cost per call: dispatching its ops,
allocating their outputs, feeding and fetching (and, in FP32, streaming 4x the weight bytes). What is left is
the work that grows with the tokens.

    python experiments/b1_report.py docs/int8_speed/vnni/b1/benchmark.json
"""
import json
import sys
from pathlib import Path

FIXED_COST_TOKENS = 4
ENGINES = ("paddle-int8", "ort-int8", "paddle-fp32")  # ours, the peer, our FP32


def table(benchmark: Path) -> str:
    rows = json.loads(benchmark.read_text())["rows"]
    p50 = {(r["engine"], r["threads"], r["seq_len"]): r["p50_ms"] for r in rows if r["batch"] == 1}
    header = ("| threads | tokens | ours (ms) | ORT INT8 (ms) | ORT / ours | ours less its 4-token call (ms) "
              "| ORT less its 4-token call (ms) | INT8/FP32 | INT8/FP32 less 4-token calls |")
    lines = [header, "|---|---|---|---|---|---|---|---|---|"]
    for threads, tokens in sorted({(t, s) for engine, t, s in p50 if engine == "paddle-int8"}):
        ours, ort, fp32 = (p50[(engine, threads, tokens)] for engine in ENGINES)
        if tokens == FIXED_COST_TOKENS:
            lines.append(f"| {threads} | {tokens} (fixed cost) | {ours:.2f} | {ort:.2f} | {ort / ours:.2f} | – | – "
                         f"| {fp32 / ours:.2f}× | – |")
            continue
        ours_work, ort_work, fp32_work = (p50[(engine, threads, tokens)] - p50[(engine, threads, FIXED_COST_TOKENS)]
                                          for engine in ENGINES)
        lines.append(f"| {threads} | {tokens} | {ours:.2f} | {ort:.2f} | {ort / ours:.2f} | {ours_work:.2f} "
                     f"| {ort_work:.2f} | {fp32 / ours:.2f}× | {fp32_work / ours_work:.2f}× |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(table(Path(sys.argv[1])))
