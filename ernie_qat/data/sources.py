"""The train / dev / test examples a `DataConfig` names."""
from pathlib import Path
from typing import Dict, List

from ernie_qat.config import DataConfig
from ernie_qat.data.loader import Example, read_examples


def load_splits(cfg: DataConfig, seed: int) -> Dict[str, List[Example]]:
    """Read `train`, `dev` and (if any) `test` examples.

    Files set in the config win over the built-in dataset's files. Without a dev file, a
    stratified `dev_fraction` of train is held out, seeded by `seed`.
    """
    files = {"train": cfg.train_file, "dev": cfg.dev_file, "test": cfg.test_file}
    if cfg.dataset:
        from ernie_qat.data.builtin import prepare_dataset
        folder = prepare_dataset(cfg.dataset)
        files = {name: path or str(folder / f"{name}.jsonl") for name, path in files.items()}
    splits = {name: read_examples(Path(path)) for name, path in files.items() if path}
    if "dev" not in splits:
        splits["train"], splits["dev"] = _hold_out(splits["train"], cfg.dev_fraction, seed)
    return splits


def data_file(spec) -> Path:
    """A data file: a path, or `dataset:split` naming a built-in dataset's split (e.g. `r8:test`)."""
    from ernie_qat.data.builtin import DATASETS, SPLITS, prepare_dataset
    name, sep, split = str(spec).partition(":")
    if sep and name in DATASETS and split in SPLITS:
        return prepare_dataset(name) / f"{split}.jsonl"
    return Path(spec)


def _hold_out(examples: List[Example], fraction: float, seed: int):
    from sklearn.model_selection import train_test_split  # training only: `data_file` serves the deploy tools too
    labels = [e.label for e in examples]
    stratify = labels if min(labels.count(x) for x in set(labels)) >= 2 else None
    return train_test_split(examples, test_size=fraction, random_state=seed, stratify=stratify)
