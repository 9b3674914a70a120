"""Config files and overrides: defaults, type and range checks, messages naming file and key."""
import subprocess
import sys

import pytest
import yaml

from ernie_qat.config import Config, ConfigError, load_config
from conftest import ROOT


def write(tmp_path, text: str):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_defaults_and_file_values(tmp_path):
    cfg = load_config(write(tmp_path, "data: {dataset: mr}\ntrain: {learning_rate: 3e-5, epochs: 2}\n"))
    assert cfg.train.learning_rate == pytest.approx(3e-5) and isinstance(cfg.train.learning_rate, float)
    assert cfg.train.epochs == 2 and cfg.train.batch_size == 32 and cfg.data.max_seq_len == 128


def test_overrides_parse_and_type_check(tmp_path):
    path = write(tmp_path, "data: {dataset: mr}\n")
    cfg = load_config(path, ["train.learning_rate=3e-5", "data.max_seq_len=64", "train.output_dir=runs/x",
                             "model.random.hidden_size=16"])
    assert (cfg.train.learning_rate, cfg.data.max_seq_len, cfg.train.output_dir) == (3e-5, 64, "runs/x")
    assert cfg.model.random.hidden_size == 16
    # values read as in a YAML file: true/false, exponents without a dot, regexes as strings
    cfg = load_config(path, ["train.freeze_word_embeddings=true", "train.learning_rate=5e-5",
                             "regularizer.method=kurtosis", r"regularizer.include=layers\.0\..*weight$"])
    assert cfg.train.freeze_word_embeddings is True and cfg.train.learning_rate == 5e-5
    assert cfg.regularizer.include == r"layers\.0\..*weight$"
    with pytest.raises(ConfigError, match=r"-o data.max_seq_len=abc.*`data.max_seq_len`: expected int, got 'abc'"):
        load_config(path, ["data.max_seq_len=abc"])
    with pytest.raises(ConfigError, match="unknown key `train.learnig_rate`; did you mean `train.learning_rate`"):
        load_config(path, ["train.learnig_rate=1e-3"])
    with pytest.raises(ConfigError, match="unknown key `train.lr`; expected one of: output_dir, epochs, "):
        load_config(path, ["train.lr=1e-3"])
    with pytest.raises(ConfigError, match="unknown section `trian`; did you mean `train`"):
        load_config(path, ["trian.epochs=1"])
    with pytest.raises(ConfigError, match="expected `section.key=value`"):
        load_config(path, ["train.epochs"])


@pytest.mark.parametrize("text, message", [
    ("train: {learnig_rate: 1e-3}", r"cfg.yaml: unknown key `train.learnig_rate`; did you mean `train.learning_rate`"),
    ("trian: {epochs: 1}", r"unknown key `trian`; did you mean `train`"),
    ("distill: {weight: 1.0}", r"unknown key `distill.weight`; did you mean `distill.logits_weight`"),
    ("export: {int8: true}", r"unknown key `export.int8`; this section takes no keys yet"),
    ("quant: {bits: 8}", r"unknown key `quant.bits`; expected one of: method, weight_bits, "),
    ("quant: {method: qat, weight_bits: 16}", r"`quant.weight_bits` must be in \[2, 8\], got 16"),
    ("quant: {method: lsq}", r"`quant.method` must be one of \['none', 'qat', 'ptq'\], got 'lsq'"),
    ("train: {epochs: three}", r"`train.epochs`: expected int or `auto`, got 'three' \(str\)"),
    ("train: {epochs: true}", r"`train.epochs`: expected int or `auto`, got True \(bool\)"),
    ("train: {epochs: 1.5}", r"`train.epochs`: expected int or `auto`, got 1.5"),
    ("train: 3", r"`train` is a section: expected a mapping, got 3"),
    ("train: {epochs: 0}", r"`train.epochs` must be in \[1, inf\], got 0"),
    ("train: {learning_rate: 0}", r"`train.learning_rate` must be in \(0.0, inf\], got 0.0"),
    ("data: {max_seq_len: 1024}", r"`data.max_seq_len` must be in \[8, 512\], got 1024"),
    ("train: {select_metric: f1}", r"`train.select_metric` must be one of \['accuracy', 'macro_f1', 'mcc'\], got 'f1'"),
    ("data: {dataset: r53}", r"`data.dataset` must be one of \['', 'r8', 'r52', 'mr', 'sms', 'rt'\], got 'r53'"),
    ("version: 2", r"`version` must be in \[1, 1\], got 2"),
    ("train: {learning_rate: .nan}", r"`train.learning_rate` must be a finite number, got nan"),
    ("train: {max_grad_norm: .inf}", r"`train.max_grad_norm` must be a finite number, got inf"),
    ("model: {dropout: -.inf}", r"`model.dropout` must be a finite number, got -inf"),
    ("data: {test_file: }", r"`data.test_file`: expected str, got an empty value; write \"\" for an empty string"),
    ("train: {epochs: }", r"`train.epochs`: expected int or `auto`, got an empty value$"),
    ("- a\n- b", r"expected a mapping of sections, got list"),
    ("train: {epochs: [1", r"invalid YAML"),
    ("train: {epochs: !!int x}", r"invalid YAML: invalid literal for int\(\)"),
    ("train: {epochs: 1}", r"set `data.dataset` \(a built-in dataset\) or `data.train_file`"),
    ("data: {dataset: mr}\nmodel: {name_or_path: random}", r"`model.random.vocab_file` is required"),
])
def test_invalid_files_name_file_and_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(write(tmp_path, text))
    assert str(tmp_path / "cfg.yaml") in str(info.value)


@pytest.mark.parametrize("override, message", [
    ("train.learning_rate=.nan", r"`train.learning_rate` must be a finite number, got nan"),
    ("train.learning_rate=-.inf", r"`train.learning_rate` must be a finite number, got -inf"),
    ("train.learning_rate=1e400", r"`train.learning_rate` must be a finite number, got inf"),
    ("train.weight_decay=1" + "0" * 400, r"`train.weight_decay` must be a finite number, got inf"),
    ("train.epochs=0", r"`train.epochs` must be in \[1, inf\], got 0"),
    ("quant.method=lsq", r"`quant.method` must be one of \['none', 'qat', 'ptq'\], got 'lsq'"),
    ("train=3", r"`train` is a section; set a key inside it, `train.<key>=value`, "
                r"with <key> one of: output_dir, epochs, max_steps, "),
    ("model.random=1", r"`model.random` is a section; set a key inside it, `model.random.<key>=value`, "
                       r"with <key> one of: vocab_file, hidden_size, "),
    ("distill=1", r"`distill` is a section; set a key inside it, `distill.<key>=value`, with <key> one of: teacher,"),
    ("export=1", r"`export` is a section; it takes no keys yet"),
    ("train.batch_size.x=3", r"`train.batch_size` is a value, not a section; set it with `-o train.batch_size=value`"),
    ("train.foo.x=3", r"unknown section `train.foo`; `train` has no sections"),
    ("train.epochs=", r"`train.epochs`: expected int or `auto`, got an empty value$"),
    ("train.fast_dropout=", r"`train.fast_dropout`: expected bool, got an empty value$"),
    ("=3", r"expected `section.key=value`"),
])
def test_override_errors_blame_the_override(tmp_path, override, message):
    path = write(tmp_path, "data: {dataset: mr}\n")
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path, [override])
    assert str(info.value).startswith(f"override `-o {override}`: ")
    assert str(path) not in str(info.value)


def test_file_values_are_checked_before_overrides(tmp_path):
    path = write(tmp_path, "data: {dataset: mr}\ntrain: {epochs: 0}\n")
    with pytest.raises(ConfigError, match=r"cfg.yaml: `train.epochs` must be in \[1, inf\], got 0"):
        load_config(path, ["train.epochs=2"])


def test_string_overrides_are_taken_as_written(tmp_path):
    path = write(tmp_path, "data: {dataset: mr, test_file: test.tsv}\n")
    cfg = load_config(path, ["data.test_file=", "train.output_dir=", "data.dev_file=a=b: 'c' # d",
                             "ptq.checkpoint=5e-5", "model.name_or_path=null"])
    assert (cfg.data.test_file, cfg.train.output_dir, cfg.data.dev_file) == ("", "", "a=b: 'c' # d")
    assert (cfg.ptq.checkpoint, cfg.model.name_or_path) == ("5e-5", "null")


def test_invalid_utf8_file(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_bytes(b"data: {dataset: \xff}\n")
    with pytest.raises(ConfigError, match=r"cfg.yaml: not valid UTF-8 \(byte 0xff at offset 16\)"):
        load_config(path)


def test_missing_file():
    with pytest.raises(ConfigError, match="nope.yaml: cannot read config file"):
        load_config("nope.yaml")


def test_round_trip_through_dict_and_yaml(tmp_path):
    # strings that read as numbers or null when unquoted must come back as strings
    cfg = load_config(write(tmp_path, "data: {dataset: r8}\n"), ["train.seed=7", "train.output_dir=5e-5",
                                                                 "data.test_file=.inf", "ptq.checkpoint=null"])
    cfg.save(tmp_path / "saved.yaml")
    again = load_config(tmp_path / "saved.yaml")
    assert again == cfg and again.to_dict() == yaml.safe_load((tmp_path / "saved.yaml").read_text())
    assert isinstance(again, Config)


@pytest.mark.parametrize("config", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(config):
    load_config(config)


def test_cli_reports_config_errors_with_exit_2_and_no_traceback(tmp_path):
    path = write(tmp_path, "data: {dataset: mr}\ntrain: {batch_size: -1}\n")
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "train.py"), "--config", str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {path}: `train.batch_size` must be in [1, inf], got -1"
