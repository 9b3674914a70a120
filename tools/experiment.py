"""Run a suite: a grid of training and PTQ cells over methods, formats, datasets and seeds, then report it.

    python tools/experiment.py --suite configs/suites/rt_w8a8.yaml [--only 'qat*-s42' ...] [--dry-run | --report-only]

Each cell is a run of tools/train.py (--resume) or tools/ptq.py in output_dir/<cell>, followed by its
test predictions (test_predictions.json) and a verified oneDNN INT8 export where it deploys (int8/,
int8_verification.json). Finished cells are skipped, a killed one resumes, and a finished cell whose
definition in the suite changed is refused. Ctrl-C stops the current cell after saving its step; the
same command continues. Then output_dir/results.csv (a row per cell) and output_dir/REPORT.md (mean ±
std over seeds, % of FP32, INT8, paired tests against the baseline, dev curves) are written.
The suite format and how to read the report: docs/experiments.md.
"""
import argparse
import fnmatch
import os
import shlex
import sys

from ernie_qat import cli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", required=True, help="the suite file (YAML; docs/experiments.md)")
    parser.add_argument("--only", action="append", metavar="PATTERN",
                        help="run only the cells whose name matches (fnmatch, e.g. '*-s42'; repeatable: the cells run "
                             "in the patterns' order); the report still covers every cell")
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--dry-run", action="store_true", help="print the cells and their overrides, run nothing")
    modes.add_argument("--report-only", action="store_true",
                       help="rebuild results.csv and REPORT.md from what is on disk, run nothing")
    args = parser.parse_args()
    from ernie_qat.errors import UserError
    from ernie_qat.suite.report import collect, fp32_references, write_report, write_results_csv
    from ernie_qat.suite.run import CellsFailed, run_cells
    from ernie_qat.suite.spec import cells, check_finished, load_suite, status

    suite = load_suite(args.suite)
    every = cells(suite)
    chosen = every
    if args.only:  # in the patterns' order, each cell once
        chosen = list({c.name: c for p in args.only for c in every if fnmatch.fnmatchcase(c.name, p)}.values())
    if not chosen:
        raise UserError(f"--only {' '.join(args.only)} matches no cell of {args.suite}: "
                        f"{', '.join(c.name for c in every)}")
    if args.dry_run:
        print(f"{len(chosen)} of {len(every)} cells of {args.suite}, each `python tools/<tool>.py` with:")
        for number, cell in enumerate(chosen, 1):
            arguments = [f"--config {shlex.quote(cell.base)}", *(f"-o {shlex.quote(item)}" for item in cell.overrides)]
            print(f"[{number}/{len(chosen)}] {cell.name} ({cell.tool}, {status(cell)}): {' '.join(arguments)}")
        return
    check_finished(every)
    command = shlex.join([os.path.basename(sys.executable), *sys.argv])
    failed = [] if args.report_only else run_cells(chosen, command)
    outcomes = collect(every)
    fp32 = fp32_references(suite, every)
    write_results_csv(suite.output_dir / "results.csv", suite, outcomes, fp32)
    write_report(suite.output_dir / "REPORT.md", suite, outcomes, fp32, command)
    print(f"wrote {suite.output_dir / 'results.csv'} and {suite.output_dir / 'REPORT.md'} "
          f"({sum(o.status == 'finished' for o in outcomes)} of {len(outcomes)} cells finished)")
    if failed:
        raise CellsFailed(f"{len(failed)} cell{'s' * (len(failed) > 1)} failed: {', '.join(failed)} "
                          "(each tool's error is above); fix the cause and run the same command again")


if __name__ == "__main__":
    cli.run(main)
