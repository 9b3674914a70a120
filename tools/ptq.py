"""Post-training quantization of a fine-tuned FP32 checkpoint: LQ, ACIQ, OCS (ernie_qat.ptq).

    python tools/ptq.py --config configs/r8_minilm_ptq.yaml [-o ptq.weight_range=aciq_laplace -o ptq.weight_bits=4]
        [--verify r8:test] [--overwrite]
    python tools/ptq.py --config configs/r8_minilm_ptq.yaml --grid [--methods lq_absmax ocs] [--bits 8 6 4 3]
        [--granularity per_tensor per_channel] [--verify r8:test] [--markdown docs/ptq_r8.md] [--resume | --overwrite]

One run writes `train.output_dir/checkpoint` (the fake-quantized model, a checkpoint like QAT's)
and `results.json` (dev/test metrics, FP32's, % of FP32 accuracy retained). --verify exports an
8-bit symmetric per-tensor result for the oneDNN INT8 predictor (`output_dir/int8`) and checks it
on the data (other settings are refused before any work). --grid runs every method × granularity
× weight bit-width (activations at `ptq.activation_bits`), evaluated on the test split (dev if
there is none), appending to `output_dir/grid.jsonl`; --markdown writes the table.

`output_dir/identity.json` records what the run read (ernie_qat.ptq.experiment.run_identity). A
folder holding an earlier run is refused unless --overwrite (its outputs are removed first) or,
for a grid, --resume: the grid continues, skipping the runs in grid.jsonl, if its source
checkpoint, config (but the keys the grid varies) and --verify data are the same.
"""
import argparse
import json
from pathlib import Path

from ernie_qat import cli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_config_args(parser)
    parser.add_argument("--grid", action="store_true", help="run methods × granularity × bits")
    parser.add_argument("--methods", nargs="+", help="grid methods (default: all of ernie_qat.ptq.experiment.METHODS)")
    parser.add_argument("--bits", nargs="+", type=int, default=[8, 6, 4, 3], help="grid weight bit-widths")
    parser.add_argument("--granularity", nargs="+", default=["per_tensor", "per_channel"],
                        choices=["per_tensor", "per_channel"], help="grid weight-range granularities")
    parser.add_argument("--verify", metavar="DATA", help="export 8-bit symmetric per-tensor results as oneDNN INT8 "
                                                         "and check them on DATA (dataset:split or a file)")
    parser.add_argument("--markdown", metavar="FILE", help="grid: write the results table here")
    earlier = parser.add_mutually_exclusive_group()
    earlier.add_argument("--resume", action="store_true", help="grid: continue the grid in output_dir (it must "
                                                               "have read the same checkpoint, config and data)")
    earlier.add_argument("--overwrite", action="store_true", help="remove the earlier run in output_dir first")
    args = cli.parse_args(parser)
    if args.resume and not args.grid:
        parser.error("--resume continues a grid (--grid); a single run is redone with --overwrite")
    cfg = cli.config_from_args(args)
    from ernie_qat.atomic import write_json, write_text
    from ernie_qat.export import ExportError
    from ernie_qat.ptq.experiment import (METHODS, PTQSession, append_grid, check_output, deployed_accuracy,
                                          grid_configs, grid_table, read_grid, run_identity, start_output)
    from ernie_qat.ptq.transform import deployable
    if args.verify and not args.grid and not deployable(cfg.ptq):
        raise ExportError(f"--verify: W{cfg.ptq.weight_bits}A{cfg.ptq.activation_bits} {cfg.ptq.granularity} "
                          f"`{cfg.ptq.weight_range}` weights do not export: only 8-bit symmetric per-tensor weights "
                          "with 8-bit activations run as INT8 in Paddle's oneDNN predictor (ptq.weight_bits, "
                          "ptq.activation_bits, ptq.granularity, ptq.weight_range); drop --verify or change them")
    runs = grid_configs(cfg, args.methods or list(METHODS), args.bits, args.granularity) if args.grid else {}
    out = Path(cfg.train.output_dir)
    identity = run_identity(cfg, args.grid, args.verify)
    check_output(out, identity, args.resume, args.overwrite)
    session = PTQSession(cfg, eval_splits=("test",) if args.grid else ("dev", "test"))
    start_output(out, identity, args.overwrite)
    if not args.grid:
        results = session.run(cfg, out / "checkpoint")
        if args.verify:
            results["int8"] = deployed_accuracy(results["checkpoint"], out / "int8", args.verify)
        write_json(out / "results.json", results)
        print(json.dumps(results, indent=1))
        return
    log = out / "grid.jsonl"
    done = read_grid(log)
    for name, run in runs.items():
        if name in done:
            continue
        results = session.run(run, out / name)
        if args.verify and results["deployable"]:
            results["int8"] = deployed_accuracy(results["checkpoint"], out / name / "int8", args.verify)
        append_grid(log, name, results)
        split = "test" if "test" in results else "dev"
        print(f"{name}: {split} accuracy {results[split]['accuracy']:.2f} "
              f"({results['retained'][split]:.1f}% of FP32)", flush=True)
    records = read_grid(log)
    table = grid_table(records, "test" if "test" in next(iter(records.values())) else "dev")
    print(table)
    if args.markdown:
        write_text(args.markdown, table)


if __name__ == "__main__":
    cli.run(main)
