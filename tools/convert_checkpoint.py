"""Convert a Hugging Face BERT checkpoint directory into a PaddleNLP ERNIE model directory.

    python tools/convert_checkpoint.py SRC_DIR DST_DIR

SRC_DIR holds config.json, model.safetensors and vocab.txt (tokenizer_config.json optional).
DST_DIR then loads with `ErnieModel.from_pretrained`, `ErnieForSequenceClassification.from_pretrained`
and `ErnieTokenizer.from_pretrained`. Exit status 2 when the input is missing or not a BERT encoder.
"""
import argparse
import sys
import time

from ernie_qat import cli
from ernie_qat.models.convert import ConversionError, convert_bert_checkpoint


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src_dir", help="Hugging Face BERT checkpoint directory")
    parser.add_argument("dst_dir", help="output PaddleNLP ERNIE model directory (created)")
    args = cli.parse_args(parser, argv)
    start = time.perf_counter()
    try:
        dst = convert_bert_checkpoint(args.src_dir, args.dst_dir)
    except (ConversionError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"converted {args.src_dir} -> {dst} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
