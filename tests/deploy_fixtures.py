"""Deployment folders exported on the training stack (Paddle 2.6.2), for the deploy-runtime tests on any Paddle.

    python tests/deploy_fixtures.py OUT

writes OUT/fp32, OUT/int8 and OUT/int8_attention (a one-layer toy ERNIE: FP32, QAT W8A8 with int8-stored weights,
and the same with the attention matmuls on int8, `quant.quantize_attention`) and
OUT/reference.json: texts and the logits each folder gives on this stack, unpadded; OUT/toy holds the toy task's
files. tests/test_deploy_runtime.py and tests/test_serve.py read them from $ERNIE_QAT_DEPLOY_FIXTURES (`make
test-deploy` runs them so in a deploy-only venv on Paddle 3.3.1), or build them once when that is not set.
"""
import os
import sys
from pathlib import Path

TEXTS = ["the film was good", "awful plot and dull acting", "a very nice movie " * 20, "great", "the the the",
         "sad film", "movie is fine and the acting was superb , nice", "bad " * 100, "plot", "a film"]
PAIRS = [None, "good", None, "the plot was awful", None, None, "x", None, "fine film", None]


def fixtures(tmp_path_factory) -> Path:
    """The fixtures folder: $ERNIE_QAT_DEPLOY_FIXTURES if set, else built once into a pytest temporary folder."""
    if os.environ.get("ERNIE_QAT_DEPLOY_FIXTURES"):
        return Path(os.environ["ERNIE_QAT_DEPLOY_FIXTURES"])
    return build(tmp_path_factory.mktemp("deploy_fixtures"))


def build(out: Path) -> Path:
    """Train, export and measure the fixtures into `out` (needs the training stack); returns `out`."""
    from conftest import make_toy_task, trained
    from ernie_qat.atomic import write_json
    from ernie_qat.deploy import Predictor
    from ernie_qat.export import export

    (out / "toy").mkdir(parents=True, exist_ok=True)
    task = make_toy_task(out / "toy")
    fp32 = trained(task, "fp32", "train.epochs=2", "model.random.num_hidden_layers=1")
    qat = trained(task, "qat", "quant.method=qat", f"model.name_or_path={fp32}", "train.learning_rate=5e-4",
                  "train.epochs=1")
    attention = trained(task, "qat_attention", "quant.method=qat", "quant.quantize_attention=true",
                        f"model.name_or_path={fp32}", "train.learning_rate=5e-4", "train.epochs=1")
    logits = {}
    for name, checkpoint in (("fp32", fp32), ("int8", qat), ("int8_attention", attention)):
        folder = export(checkpoint, out / name, name.split("_")[0])
        predictor = Predictor(folder, threads=1, length_bucket=1)
        logits[name] = predictor.predict_logits(predictor.encode(TEXTS, PAIRS)).tolist()
    write_json(out / "reference.json", {"texts": TEXTS, "pairs": PAIRS, "logits": logits})
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    import ernie_qat  # noqa: F401,E402  (the process set-up before paddle)
    print(build(Path(sys.argv[1])))
