"""Run configuration: YAML files mapped onto typed dataclasses, one section per concern.

Every default lives here. A YAML file states only what differs from these defaults, and
`-o section.key=value` overrides go on top. Unknown keys, wrong types, non-finite and out-of-range
values raise `ConfigError` naming the source, the key and what was expected, before any work starts.

Example:
    cfg = load_config("configs/r8_minilm_fp32.yaml", ["train.learning_rate=3e-5"])
"""
import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import yaml

from ernie_qat.atomic import write_text
from ernie_qat.data.builtin import DATASETS
from ernie_qat.errors import UserError, did_you_mean

CONFIG_VERSION = 1
METRICS = ("accuracy", "macro_f1", "mcc")
AUTO = "auto"  # the value of a setting the toolkit chooses from the data (`param(auto=True)`)


class ConfigError(UserError):
    """A configuration file or override is invalid; the message says where and why."""


class Methods:
    """The values a section's `method` may take: "none" and the names registered for that section
    (ernie_qat.train.hooks registries), read when a config is checked, not when this module loads."""

    def __init__(self, section: str):
        self.section = section

    def names(self) -> list:
        import ernie_qat.methods  # noqa: F401  (fills the registries)
        from ernie_qat.train.hooks import REGISTRIES
        return ["none"] + [name for registry in REGISTRIES for name in registry.methods(self.section)]

    def __iter__(self):
        return iter(self.names())

    def __contains__(self, value) -> bool:
        return value == "none" or value in self.names()  # "none" needs no method module imported


def param(default: Any, *, low: Optional[float] = None, high: Optional[float] = None,
          low_open: bool = False, choices: Optional[Sequence] = None, auto: bool = False):
    """A config field with its allowed range [low, high] (or (low, high] if `low_open`) or set; with `auto`, the
    field's type is Union[number type, str] and the string AUTO is allowed too."""
    return field(default=default, metadata={"low": low, "high": high, "low_open": low_open, "choices": choices,
                                            "auto": auto})


@dataclass
class RandomModelConfig:
    """Shape of a randomly initialised ERNIE, used when `model.name_or_path` is `random` (tests)."""
    vocab_file: str = ""                                # tokenizer vocabulary, one token per line
    hidden_size: int = param(32, low=1)
    num_hidden_layers: int = param(2, low=1)
    num_attention_heads: int = param(2, low=1)
    intermediate_size: int = param(64, low=1)
    max_position_embeddings: int = param(512, low=8)


@dataclass
class ModelConfig:
    name_or_path: str = "minilm"    # built-in (minilm), a PaddleNLP model directory or name, or `random`
    dropout: float = param(0.1, low=0.0, high=1.0)     # hidden and attention-probability dropout
    random: RandomModelConfig = field(default_factory=RandomModelConfig)


@dataclass
class DataConfig:
    dataset: str = param("", choices=("",) + tuple(DATASETS))  # built-in dataset supplying the files not set below
    train_file: str = ""            # TSV / CSV / JSONL with `text`, optional `text_pair`, `label`
    dev_file: str = ""              # empty: hold out `dev_fraction` of the training file
    test_file: str = ""             # empty: no test evaluation
    dev_fraction: float = param(0.1, low=0.0, high=0.5, low_open=True)
    max_seq_len: int = param(128, low=8, high=512)     # tokens, [CLS] and [SEP] included
    bucket_batches: int = param(50, low=1)             # batches per length-sorted bucket; 1 = no bucketing
    pad_to_max_seq_len: bool = False    # pad training batches to max_seq_len (the TI reference's); else to their longest


@dataclass
class TrainConfig:
    output_dir: str = "runs/default"
    epochs: Union[int, str] = param(3, low=1, auto=True)  # or `auto`: from the training set's size and classes
    # (ernie_qat.train.epochs)
    max_steps: int = param(0, low=0)                   # > 0: stop after this many optimizer steps
    batch_size: int = param(32, low=1)
    eval_batch_size: int = param(64, low=1)
    learning_rate: float = param(5e-5, low=0.0, low_open=True)
    warmup_ratio: float = param(0.1, low=0.0, high=1.0)  # share of steps with linear warm-up
    optimizer: str = param("adamw", choices=("adamw", "bert_adam"))  # bert_adam: the TI reference's (ernie_qat.optim.adam)
    weight_decay: float = param(0.01, low=0.0)        # AdamW; not applied to biases and LayerNorm
    max_grad_norm: float = param(1.0, low=0.0)        # gradient clipping (`grad_clip`) to this norm; 0 disables
    grad_clip: str = param("global", choices=("global", "per_parameter"))  # one norm over all gradients, or each its own
    eval_every: int = param(0, low=0)                 # steps between evaluations; 0 = once per epoch
    select_metric: str = param("accuracy", choices=METRICS)  # dev metric choosing the best checkpoint
    seed: int = param(42, low=0)
    log_every: int = param(10, low=1)                 # steps between metrics.jsonl records
    freeze_word_embeddings: bool = False              # skip gradients and updates of the [vocab, hidden] table
    fast_dropout: bool = False                        # compiled dropout masks: faster on CPU, other masks
    class_weights: str = param("none", choices=("none", "balanced"))  # balanced: the cross-entropy weighs class c by
    # n / (k * n_c), n training examples, k classes, n_c of class c (ernie_qat.train.class_weights)
    visualdl: bool = True                             # the metrics.jsonl scalars also as VisualDL logs in
    # output_dir/visualdl (`visualdl --logdir runs/`; ernie_qat.train.visualdl_log)


@dataclass
class QuantConfig:
    """Quantization-aware training on PaddleSlim (fake-quantized Linear layers)."""
    method: str = param("none", choices=Methods("quant"))  # qat; ptq is written by tools/ptq.py
    weight_bits: int = param(8, low=2, high=8)
    activation_bits: int = param(8, low=2, high=8)
    # per-tensor: the only weight scales Paddle 2.6's oneDNN INT8 pass applies as trained (quant/onednn.py)
    weight_quantize_type: str = param("abs_max", choices=("abs_max", "channel_wise_abs_max"))
    activation_quantize_type: str = param("moving_average_abs_max",
                                          choices=("moving_average_abs_max", "range_abs_max", "abs_max"))
    moving_rate: float = param(0.9, low=0.0, high=1.0, low_open=True)  # activation-scale moving average
    quantize_pooler: bool = False       # encoder Linear layers are always quantized
    quantize_classifier: bool = False
    quantize_embeddings: bool = False   # the word table on int8 levels, a range per row: stored so by INT8 export
    quantize_attention: bool = False    # the inputs of the attention matmuls (Q, K, V, probabilities) on moving-average
    # ranges too, as the Linear inputs: INT8 runs QK^T and PV on int8 (ernie_qat.quant.attention)
    scope: str = param("encoder", choices=("encoder", "reference"))  # what is quantized: the encoder's Linear layers,
    # or also the TI reference's: the word table (ternary per row with ternary weights), the pooler, the inputs of the
    # attention matmuls (Q, K, V, probabilities); activations clamped to ±2.5, a range per batch (clipped_absmax)
    weight_quantizer: str = ""          # a registered quantizer layer (ernie_qat.quant.quantizers); "" = PaddleSlim's
    activation_quantizer: str = ""
    quantizer_lr_scale: float = param(1.0, low=0.0)  # learning-rate multiplier of quantizer parameters (no decay)


@dataclass
class PTQConfig:
    """Post-training quantization of a fine-tuned FP32 checkpoint (tools/ptq.py, ernie_qat.ptq)."""
    checkpoint: str = ""                # the FP32 checkpoint folder to quantize
    weight_bits: int = param(8, low=2, high=8)
    activation_bits: int = param(8, low=2, high=8)
    weight_range: str = "absmax"        # a registered range (ernie_qat.ptq.ranges): absmax, minmax (LQ), aciq_laplace, aciq_gauss
    granularity: str = param("per_tensor", choices=("per_tensor", "per_channel"))  # weight ranges; channels = outputs
    ocs_expand_ratio: float = param(0.0, low=0.0, high=0.5)  # OCS: input channels split, as a share; 0 = off
    activation_range: str = "absmax"    # a registered symmetric range for Linear inputs, from calibration
    calibration_batches: int = param(8, low=1)   # training-split batches of `train.eval_batch_size`
    calibration_sample: int = param(65536, low=1)  # input values kept per layer and batch for range fits


@dataclass
class RegularizerConfig:
    """Weight-distribution regularizers (ernie_qat.regularizers): KURE's kurtosis loss and its ERNIE-aware targets."""
    method: str = param("none", choices=Methods("regularizer"))  # kurtosis
    weight: float = param(1.0, low=0.0)                 # λ, the loss term's weight
    warmup_steps: int = param(0, low=0)                 # λ ramps linearly from 0 over these steps
    target: str = param("fixed", choices=("fixed", "relative", "one_sided"))
    target_kurtosis: float = param(1.8, low=1.0)        # K_T of `fixed` and `one_sided` (uniform: 1.8, Gaussian: 3)
    relative_factor: float = param(1.0, low=0.0, low_open=True)  # `relative`: target = factor × kurtosis at the start
    aggregation: str = param("avg", choices=("avg", "sum", "max"))  # over the chosen tensors
    include: str = r"encoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|linear[12])\.weight$"  # parameter-name regex


@dataclass
class DistillConfig:
    """Knowledge distillation from a frozen FP32 teacher and Teacher Intervention (ernie_qat.distill).

    Each loss weight switches its term on (> 0) or off (0). Per-layer terms sum over the student's
    layers, each an MSE averaged over the real (not padded) tokens, as TernaryBERT sums them.
    """
    teacher: str = ""                   # a fine-tuned checkpoint folder; "" = no distillation
    logits_weight: float = param(1.0, low=0.0)        # KL(teacher ‖ student) of the softened class distributions
    temperature: float = param(1.0, low=0.0, low_open=True)
    hidden_weight: float = param(1.0, low=0.0)        # MSE of the L + 1 hidden states (embeddings included)
    attention_score_weight: float = param(1.0, low=0.0)   # MSE of pre-softmax scores, padded keys and queries excluded
    attention_output_weight: float = param(0.0, low=0.0)  # MSE of the attention blocks' outputs (after LayerNorm)
    ground_truth_weight: float = param(1.0, low=0.0)  # cross-entropy with the labels; 0 = off (needs a teacher)
    loss_normalization: str = param("tokens", choices=("tokens", "positions"))  # per-layer MSEs over real tokens, or
    # over every position padding included, masked scores zeroed (the reference's; with data.pad_to_max_seq_len)
    layer_map: str = ""                 # teacher layer of student layers 1..L, e.g. "2,4,6"; "" = uniform
    intervention: str = param("none", choices=("none", "scheduled", "stochastic"))  # Teacher Intervention
    intervention_steps: int = param(60, low=1)        # s: TI's first step; plain distillation follows
    intervention_schedule: str = "oi,ci,mi,mi,mi,mi"  # equal shares of s in order (gradual TI); kinds: oi, ci, mi
    intervention_layers: str = ""       # student encoder layers intervened, 1..L as in `layer_map`, e.g. "1,2"; "" = all
    intervention_warmup_ratio: float = param(0.1, low=0.0, high=1.0)  # warm-up of step 1's own schedule
    intervention_fresh_optimizer: bool = False  # step 2 starts with new optimizer state (moments 0), as the reference's run


@dataclass
class SAMConfig:
    """Sharpness-aware minimization (ernie_qat.optim.sam): the ascent radius and its adaptive variant."""
    rho: float = param(0.0, low=0.0)      # ρ; 0 = the paper's default: 0.05 (SAM), 0.5 (ASAM)
    adaptive: bool = False                # ASAM (Kwon et al. 2021): ε = ρ·T²g/‖Tg‖, T = |w| + η
    eta: float = param(0.01, low=0.0)     # η of ASAM


@dataclass
class OptimizerConfig:
    """Optimizer-step strategies around AdamW: SAM, and SQuAT's alternation of weight and step-size steps."""
    method: str = param("none", choices=Methods("optimizer"))  # sam, squat
    sam: SAMConfig = field(default_factory=SAMConfig)
    squat_period: int = param(1, low=1)   # squat: steps of each objective before switching to the other


@dataclass
class ExportConfig:
    """Paddle Inference export."""


@dataclass
class Config:
    version: int = param(CONFIG_VERSION, low=CONFIG_VERSION, high=CONFIG_VERSION)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    ptq: PTQConfig = field(default_factory=PTQConfig)
    regularizer: RegularizerConfig = field(default_factory=RegularizerConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        """Write the config as YAML that `load_config` reads back equal (atomically)."""
        write_text(path, yaml.dump(self.to_dict(), Dumper=_Dumper, sort_keys=False))


_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+"
                    r"|\.[0-9_]+(?:[eE][-+][0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads `5e-5` as a float (YAML 1.1 wants `5.0e-5`)."""


class _Dumper(yaml.SafeDumper):
    """SafeDumper that quotes strings `_Loader` would read as floats, such as "5e-5"."""


for _yaml_class in (_Loader, _Dumper):
    _yaml_class.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def layer_list(text: str, key: str) -> Optional[list]:
    """A comma-separated list of layer numbers ("3,6,9") as ints; None for ""; ConfigError naming `key` otherwise."""
    if not text.strip():
        return None
    try:
        return [int(item) for item in text.split(",")]
    except ValueError:
        raise ConfigError(f"`{key}`: expected comma-separated layer numbers, got {text!r}") from None


def load_config(path: Optional[str] = None, overrides: Sequence[str] = ()) -> Config:
    """Build a `Config` from defaults, an optional YAML file, then `key.path=value` overrides.

    Each value is checked where it is read, and the whole config once all are read (`check_config`),
    so an error names the file or the override that set the offending key.

    Raises:
        ConfigError: unreadable file, unknown key, wrong type, non-finite or out-of-range value, or
            settings that do not go together.
    """
    data = {}
    if path is not None:
        try:
            data = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_Loader) or {}
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not valid UTF-8 "
                              f"(byte {exc.object[exc.start]:#x} at offset {exc.start})") from None
        except Exception as exc:  # YAMLError, or ValueError, KeyError, RecursionError... from malformed values
            raise ConfigError(f"{path}: invalid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    source = str(path or "defaults")
    origins: Dict[str, str] = {}  # dotted key -> the file or override that set it
    cfg = _from_dict(Config, data, "", source, origins)
    for item in overrides:
        _apply_override(cfg, item, origins)
    check_config(cfg, lambda key: origins.get(key, source))
    return cfg


def _from_dict(cls, data: dict, prefix: str, source: str, origins: Dict[str, str]):
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in data.items():
        dotted = prefix + str(key)
        if key not in fields:
            raise ConfigError(f"{source}: unknown key `{dotted}`{_suggest(str(key), list(fields), prefix)}")
        values[key] = _coerce(hints[key], fields[key].metadata, value, dotted, source, origins)
        origins[dotted] = source
    return cls(**values)


def _coerce(kind, meta, value, dotted: str, source: str, origins: Dict[str, str]):
    """`value` as a `kind` checked against the field metadata `meta` (range, choices, AUTO)."""
    if meta.get("auto"):
        if value == AUTO:
            return value
        kind = next(member for member in typing.get_args(kind) if member is not str)
    if dataclasses.is_dataclass(kind):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: `{dotted}` is a section: expected a mapping, got {value!r}")
        return _from_dict(kind, value, dotted + ".", source, origins)
    ok = (isinstance(value, kind) and not (kind is int and isinstance(value, bool))) or \
         (kind is float and isinstance(value, int) and not isinstance(value, bool))
    if not ok:
        got = f"{value!r} ({type(value).__name__})"
        if value is None:
            got = 'an empty value; write "" for an empty string' if kind is str else "an empty value"
        expected = f"{kind.__name__} or `{AUTO}`" if meta.get("auto") else kind.__name__
        raise ConfigError(f"{source}: `{dotted}`: expected {expected}, got {got}")
    if kind is float:
        try:
            value = float(value)
        except OverflowError:  # an int beyond the float range
            value = math.inf if value > 0 else -math.inf
        if not math.isfinite(value):
            raise ConfigError(f"{source}: `{dotted}` must be a finite number, got {value!r}")
    _check_range(meta, value, dotted, source)
    return value


def _check_range(meta, value, dotted: str, source: str) -> None:
    if meta.get("choices") is not None and value not in meta["choices"]:
        raise ConfigError(f"{source}: `{dotted}` must be one of {list(meta['choices'])}, got {value!r}")
    low, high = meta.get("low"), meta.get("high")
    too_low = low is not None and (value <= low if meta.get("low_open") else value < low)
    if too_low or (high is not None and value > high):
        left = "(" if meta.get("low_open") else "["
        bounds = f"{left}{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        raise ConfigError(f"{source}: `{dotted}` must be in {bounds}, got {value!r}")


def _apply_override(cfg: Config, item: str, origins: Dict[str, str]) -> None:
    """Set one `section.key=value`: the text after `=` as is for a string, else read as YAML."""
    source = f"override `-o {item}`"
    dotted, equals, raw = item.partition("=")
    dotted = dotted.strip()
    if not equals or not dotted:
        raise ConfigError(f"{source}: expected `section.key=value`")
    *sections, key = dotted.split(".")
    target, prefix = cfg, ""
    for name in sections:
        fields = [f.name for f in dataclasses.fields(target)]
        if name in fields and not dataclasses.is_dataclass(getattr(target, name)):
            raise ConfigError(f"{source}: `{prefix}{name}` is a value, not a section; "
                              f"set it with `-o {prefix}{name}=value`")
        if name not in fields:
            subsections = _section_names(target)
            hint = _suggest(name, subsections, prefix) if subsections else f"; `{prefix[:-1]}` has no sections"
            raise ConfigError(f"{source}: unknown section `{prefix}{name}`{hint}")
        target, prefix = getattr(target, name), prefix + name + "."
    fields = {f.name: f for f in dataclasses.fields(target)}
    if key not in fields:
        raise ConfigError(f"{source}: unknown key `{dotted}`{_suggest(key, list(fields), prefix)}")
    if dataclasses.is_dataclass(getattr(target, key)):
        keys = [f.name for f in dataclasses.fields(getattr(target, key))]
        what = f"set a key inside it, `{dotted}.<key>=value`, with <key> one of: {', '.join(keys)}" if keys \
            else "it takes no keys yet"
        raise ConfigError(f"{source}: `{dotted}` is a section; {what}")
    kind = typing.get_type_hints(type(target))[key]
    if kind is str:
        value = raw
    else:
        try:
            value = yaml.load(raw, Loader=_Loader)  # as in a config file: true, 3e-5, 1_000
        except Exception:  # not YAML: the type check below reports the text
            value = raw
    setattr(target, key, _coerce(kind, fields[key].metadata, value, dotted, source, origins))
    origins[dotted] = source


def _section_names(obj) -> list:
    return [f.name for f in dataclasses.fields(obj) if dataclasses.is_dataclass(getattr(obj, f.name))]


def _suggest(key: str, names: Sequence[str], prefix: str) -> str:
    hint = did_you_mean(key, names)
    if hint:
        return hint.replace("`", f"`{prefix}", 1)
    return f"; expected one of: {', '.join(names)}" if names else "; this section takes no keys yet"


# The settings of each method, and the switch that enables it: (what, the switch, whether it is on, its settings).
# A setting whose method is off and whose value is not the default is an error: it would be silently ignored.
class MethodSettings(typing.NamedTuple):
    what: str                            # the method, as a user knows it
    switch: str                          # the setting that enables it
    enabled: Callable[[Config], bool]
    keys: List[str]                      # its settings' dotted keys


def _keys(section, prefix: str, *skip: str) -> List[str]:
    """The dotted leaf keys of a config section, but its own keys `skip`."""
    return [key for key in flat_dict(dataclasses.asdict(section), prefix) if key[len(prefix):] not in skip]


def method_settings() -> List[MethodSettings]:
    defaults = Config()
    ti_keys = [key for key in _keys(defaults.distill, "distill.") if key.startswith("distill.intervention_")]
    return [
        MethodSettings("quantization-aware training", "`quant.method: qat`", lambda c: c.quant.method != "none",
                       _keys(defaults.quant, "quant.", "method")),
        MethodSettings("registered quantizers", "`quant.weight_quantizer` or `quant.activation_quantizer` (e.g. lsq)",
                       lambda c: bool(c.quant.weight_quantizer or c.quant.activation_quantizer),
                       ["quant.quantizer_lr_scale"]),
        MethodSettings("the weight regularizer", "`regularizer.method: kurtosis`",
                       lambda c: c.regularizer.method != "none", _keys(defaults.regularizer, "regularizer.", "method")),
        MethodSettings("SAM", "`optimizer.method: sam` (or squat)", lambda c: c.optimizer.method != "none",
                       _keys(defaults.optimizer.sam, "optimizer.sam.")),
        MethodSettings("SQuAT", "`optimizer.method: squat`", lambda c: c.optimizer.method == "squat",
                       ["optimizer.squat_period"]),
        MethodSettings("distillation", "`distill.teacher` (a fine-tuned checkpoint folder)",
                       lambda c: bool(c.distill.teacher), _keys(defaults.distill, "distill.", "teacher")),
        MethodSettings("Teacher Intervention", "`distill.intervention: scheduled` (or stochastic)",
                       lambda c: c.distill.intervention != "none", ti_keys),
        MethodSettings("gradient clipping", "`train.max_grad_norm` > 0", lambda c: c.train.max_grad_norm > 0,
                       ["train.grad_clip"]),
    ]


# switches of our scope for what `quant.scope: reference` quantizes its own way -> what that is
REFERENCE_SCOPE_QUANTIZES = {
    "quantize_attention": "the attention matmuls' inputs, with a range per batch as the TI reference does",
    "quantize_embeddings": "the word table per row as the TI reference does (ternary with ternary weights, else on "
                           "int8 levels)"}


def check_config(cfg: Config, origin: Callable[[str], str]) -> None:
    """Raises ConfigError for settings that cannot work together, blaming `origin(key)` (file or override):
    a setting of a method the config does not enable, and each method's own bounds."""
    if cfg.model.name_or_path == "random" and not cfg.model.random.vocab_file:
        raise ConfigError(f"{origin('model.name_or_path')}: `model.random.vocab_file` is required when "
                          "`model.name_or_path` is `random`")
    if not cfg.data.dataset and not cfg.data.train_file:
        raise ConfigError(f"{origin('data.dataset')}: set `data.dataset` (a built-in dataset) or `data.train_file`")
    now, default = flat_dict(cfg.to_dict()), flat_dict(Config().to_dict())
    for method in method_settings():
        if method.enabled(cfg):
            continue
        ignored = [key for key in method.keys if now[key] != default[key]]
        if ignored:
            listed = ", ".join(f"`{key}: {now[key]}`" for key in ignored)
            raise ConfigError(f"{origin(ignored[0])}: {listed} {'is a setting' if len(ignored) == 1 else 'are settings'} "
                              f"of {method.what}, which this config does not enable, so "
                              f"{'it' if len(ignored) == 1 else 'they'} would be ignored: set {method.switch}, "
                              f"or remove {'it' if len(ignored) == 1 else 'them'}")
    if cfg.quant.method == "qat":
        _check_quantizers(cfg, origin)
        if cfg.quant.scope == "reference":
            _check_reference_scope(cfg, origin)


def _check_reference_scope(cfg: Config, origin: Callable[[str], str]) -> None:
    """`quant.scope: reference` quantizes activations, the attention matmuls and the word table its own way: our
    scope's settings for them are refused, not ignored."""
    if cfg.quant.activation_quantizer not in ("", "clipped_absmax"):
        raise ConfigError(f"{origin('quant.scope')}: `quant.scope: reference` quantizes activations as the TI "
                          "reference does (`clipped_absmax`), and `quant.activation_quantizer` is "
                          f"{cfg.quant.activation_quantizer}: leave it unset")
    for switch, quantized in REFERENCE_SCOPE_QUANTIZES.items():
        if getattr(cfg.quant, switch):
            raise ConfigError(f"{origin('quant.' + switch)}: `quant.scope: reference` already quantizes "
                              f"{quantized}: drop `quant.{switch}`")


def _check_quantizers(cfg: Config, origin: Callable[[str], str]) -> None:
    """Each registered quantizer in its role (`roles`) and at a bit width it has (`bits`): ernie_qat.quant.quantizers."""
    import ernie_qat.methods  # noqa: F401  (registers the quantizers)
    from ernie_qat.quant.quantizers import QUANTIZER_LAYERS, quantizer_bits, quantizer_roles
    for role in ("weight", "activation"):
        key = f"quant.{role}_quantizer"
        name = getattr(cfg.quant, f"{role}_quantizer")
        if not name:
            continue
        layer = QUANTIZER_LAYERS.lookup(name, key, origin(key))
        if role not in quantizer_roles(layer):
            others = [n for n, other in sorted(QUANTIZER_LAYERS.items()) if role in quantizer_roles(other)]
            raise ConfigError(f"{origin(key)}: `{key}: {name}` quantizes {' and '.join(quantizer_roles(layer))}s "
                              f"only; for {role}s use one of: {', '.join(others)}")
        bits, allowed = getattr(cfg.quant, f"{role}_bits"), quantizer_bits(layer)
        if bits not in allowed:
            span = f"{allowed[0]}" if len(allowed) == 1 else f"{allowed[0]}..{allowed[-1]}"
            raise ConfigError(f"{origin(key)}: `{key}: {name}` quantizes to {span} bits, and `quant.{role}_bits` "
                              f"is {bits}: set `quant.{role}_bits: {allowed[0] if len(allowed) == 1 else span}`")


def flat_dict(tree: dict, prefix: str = "") -> Dict[str, Any]:
    """A nested dict as {dotted key: value}."""
    flat = {}
    for key, value in tree.items():
        flat.update(flat_dict(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value})
    return flat


def differences(before: Dict[str, Any], after: Dict[str, Any], ignore: Sequence[str] = ()) -> List[str]:
    """`key: before -> after` for each key of two flat dicts (a missing one is None) whose values differ, sorted;
    keys in `ignore` aside."""
    return [f"{key}: {before.get(key)!r} -> {after.get(key)!r}" for key in sorted(set(before) | set(after))
            if key not in ignore and before.get(key) != after.get(key)]
