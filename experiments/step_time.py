"""Training-step time of low-bit QAT alone and with the methods around it, on the real model and data.

    python experiments/step_time.py distill|sam|reference [--task mr] [--rounds 4] [--steps 5] [--json FILE]

The toolkit's own step (`train_step`) on the task's real training batches (MR: 32 × up to 64 tokens), each
method configured as a cell of the suite that measures its accuracy (its first seed), so that the timing
follows the suite when the suite changes:
  distill  W2A8 ternary weights: QAT, QAT + KD, QAT + TI with OI or MI active (configs/suites/{task}_distill.yaml);
  sam      W4A8 LSQ weights: QAT, QAT + SAM, SQuAT alternating every step (configs/suites/{task}_sam.yaml);
  reference  W2A8 KD as in our mode (configs/suites/rt_w2a8.yaml), then with batches padded to max_seq_len,
           then in the TI reference's whole mode (configs/suites/rt_w2a8_reference.yaml): where its step cost
           comes from (--task rt).
Methods alternate in rounds (after 2 warm-up steps each) so that a machine's drift hits all alike;
the table gives each method's median and mean step and the ratios to the first (SQuAT's steps
alternate between a SAM step and a plain one: its mean is the cost of a run).
"""
import argparse
import statistics
import time

import paddle

from ernie_qat import cli
from ernie_qat.atomic import write_json
from ernie_qat.config import load_config
from ernie_qat.data.batching import batch_width, collate, encode, train_batches
from ernie_qat.data.loader import LabelVocab
from ernie_qat.data.sources import load_splits
from ernie_qat.env import cpu_settings
from ernie_qat.errors import UserError
from ernie_qat.plugins import build_plugins
from ernie_qat.suite.spec import cells, load_suite
from ernie_qat.train.trainer import build_student, make_optimizer, train_step

OI_THROUGHOUT = ["distill.intervention_schedule=oi", "distill.intervention_steps=1000000"]
MI_THROUGHOUT = ["distill.intervention_schedule=mi", "distill.intervention_steps=1000000"]
COMPARISONS = {  # name -> [(method, suite file, its cell without the seed, overrides on top of the cell's)]
    "distill": [("QAT", "{task}_distill", "w2a8-qat", []), ("QAT + KD", "{task}_distill", "w2a8-kd", []),
                ("QAT + TI, OI active", "{task}_distill", "w2a8-ti", OI_THROUGHOUT),
                ("QAT + TI, MI active", "{task}_distill", "w2a8-ti", MI_THROUGHOUT)],
    "sam": [("QAT", "{task}_sam", "w4a8-qat", []), ("QAT + SAM", "{task}_sam", "w4a8-sam", []),
            ("SQuAT", "{task}_sam", "w4a8-squat", [])],
    "reference": [("KD", "{task}_w2a8", "kd", []),
                  ("KD, padded to max_seq_len", "{task}_w2a8", "kd", ["data.pad_to_max_seq_len=true"]),
                  ("KD, reference mode", "{task}_w2a8_reference", "kd", [])],
}


def cell_config(suite_name: str, cell_name: str, extra):
    """The config of cell `cell_name` at the first seed of configs/suites/`suite_name`.yaml, `extra` overrides last."""
    path = f"configs/suites/{suite_name}.yaml"
    suite = load_suite(path)
    first_seed = {cell.name.rsplit("-s", 1)[0]: cell for cell in cells(suite) if cell.seed == suite.seeds[0]}
    if cell_name not in first_seed:
        raise UserError(f"{path} has no cell {cell_name} (it has {', '.join(first_seed)})")
    cell = first_seed[cell_name]
    return load_config(cell.base, cell.overrides + extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("comparison", choices=COMPARISONS)
    parser.add_argument("--task", default="mr")
    parser.add_argument("--rounds", type=cli.positive_int, default=4)
    parser.add_argument("--steps", type=cli.positive_int, default=5, help="timed steps per method and round")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    runs = {}
    for name, suite_name, cell_name, extra in COMPARISONS[args.comparison]:
        cfg = cell_config(suite_name.format(task=args.task), cell_name, extra)
        plugins = build_plugins(cfg)
        splits = load_splits(cfg.data, cfg.train.seed)
        labels = LabelVocab.from_examples(splits["train"])
        model, tokenizer = build_student(cfg, plugins, labels)
        optimizer, _ = make_optimizer(model, cfg.train, 10_000, [g for p in plugins.all() for g in p.param_groups(model)])
        data = encode(splits["train"], tokenizer, cfg.data.max_seq_len, labels)
        order = train_batches([len(x.input_ids) for x in data], cfg.train.batch_size, cfg.data.bucket_batches, 0, 0)
        batches = [{k: paddle.to_tensor(v) for k, v in
                    collate([data[i] for i in indices], model.pad_token_id,
                            batch_width(cfg.data, [len(data[i].input_ids) for i in indices])).items()}
                   for indices in order[:args.steps]]
        runs[name] = {"model": model, "optimizer": optimizer, "plugins": plugins, "batches": batches, "times": []}
    for run in runs.values():  # warm-up
        for step in range(2):
            train_step(run["model"], run["optimizer"], run["batches"][step % len(run["batches"])], run["plugins"], step)
    for _ in range(args.rounds):
        for run in runs.values():
            for batch in run["batches"]:
                step = 2 + len(run["times"])  # counts on over rounds: SQuAT's objectives alternate evenly
                start = time.perf_counter()
                train_step(run["model"], run["optimizer"], batch, run["plugins"], step)
                run["times"].append(time.perf_counter() - start)
    first = next(iter(runs))
    median, mean = statistics.median(runs[first]["times"]), statistics.mean(runs[first]["times"])
    rows = [{"method": name, "median_s": statistics.median(run["times"]), "ratio": statistics.median(run["times"]) / median,
             "mean_s": statistics.mean(run["times"]), "mean_ratio": statistics.mean(run["times"]) / mean,
             "steps": len(run["times"])} for name, run in runs.items()]
    print(cpu_settings())
    print(f"| method | median step (s) | vs {first} | mean step (s) | vs {first} |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['method']} | {row['median_s']:.3f} | {row['ratio']:.2f}× | {row['mean_s']:.3f} | {row['mean_ratio']:.2f}× |")
    if args.json:
        write_json(args.json, {"environment": cpu_settings(), "task": args.task, "comparison": args.comparison,
                               "rows": rows})


if __name__ == "__main__":
    cli.run(main)
