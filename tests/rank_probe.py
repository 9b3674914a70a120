"""tools/train.py, plus what tests/test_distributed.py needs to see inside each rank of a launched run.

    python -m paddle.distributed.launch --nproc_per_node 2 tests/rank_probe.py --config CFG [-o KEY=VALUE]
        [--resume] [--states DIR] [--nan-at STEP --nan-rank RANK]

--states DIR   after each evaluation every rank saves its model's parameters and buffers (quantizer scales,
               moving-average state, step sizes included) as DIR/rank<r>-step<s>.npz
--nan-at STEP  the loss is NaN at STEP (counted from 0) on rank --nan-rank alone
"""
import argparse
import json
import os
from pathlib import Path

import numpy as np

from ernie_qat import cli


def main() -> None:
    parser = argparse.ArgumentParser()
    cli.add_config_args(parser)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--states", type=Path)
    parser.add_argument("--nan-at", type=int)
    parser.add_argument("--nan-rank", type=int, default=1)
    args = parser.parse_args()
    cfg = cli.config_from_args(args)

    import paddle
    from ernie_qat.plugins import build_plugins
    from ernie_qat.train.hooks import TRAINING, LossTerm, ModelTransform
    from ernie_qat.train.trainer import fit
    rank = int(os.environ.get("PADDLE_TRAINER_ID", "0"))

    class SaveStates(ModelTransform):
        name, role, order = "save_states", TRAINING, 99

        def on_evaluate(self, model, step, metrics):
            args.states.mkdir(parents=True, exist_ok=True)
            np.savez(args.states / f"rank{rank}-step{step}.npz",
                     **{key: value.numpy() for key, value in model.state_dict().items()})

    class NaNAt(LossTerm):
        name = "nan"

        def __call__(self, model, outputs, batch, step):
            return paddle.to_tensor(float("nan") if step == args.nan_at else 0.0), {}

    plugins = build_plugins(cfg)
    if args.states:
        plugins.transforms.append(SaveStates())
    if args.nan_at is not None and rank == args.nan_rank:
        plugins.loss_terms.append(NaNAt())
    print(json.dumps(fit(cfg, plugins, resume=args.resume)))


if __name__ == "__main__":
    cli.run(main)
