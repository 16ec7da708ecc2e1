"""Trains the demo model's byte-level BPE tokenizer (GPT-NeoX style) on train.txt.

Same pipeline as the GPT-NeoX-20B tokenizer Pythia uses: NFC normalizer, ByteLevel pre-tokenizer
(GPT-2 regex, no prefix space), ByteLevel post-processor and decoder, BPE without unk or byte
fallback, and `<|endoftext|>` as special token id 0. The full 256-byte alphabet is included so any
text can be encoded.

    python tools/train_demo/train_tokenizer.py --work WORKDIR [--vocab-size 4096]

reads WORKDIR/train.txt, writes WORKDIR/tokenizer.json.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from corpus import DOC_SEPARATOR


def train_tokenizer(documents: list[str], vocab_size: int) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[DOC_SEPARATOR],  # first special token gets id 0, like GPT-NeoX
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tokenizer.train_from_iterator(documents, trainer=trainer)
    return tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="work directory holding train.txt")
    parser.add_argument("--vocab-size", type=int, default=4096)
    args = parser.parse_args()
    text = (args.work / "train.txt").read_text(encoding="utf-8")
    # Paragraphs as training units: merges never span a paragraph or document break.
    units = [p for p in text.split("\n\n") if p.strip() and p.strip() != DOC_SEPARATOR]
    tokenizer = train_tokenizer(units, args.vocab_size)
    if tokenizer.token_to_id(DOC_SEPARATOR) != 0:
        raise SystemExit(f"{DOC_SEPARATOR} did not get id 0")
    tokenizer.save(str(args.work / "tokenizer.json"))
    sample = "It is a truth universally acknowledged, that a single man"
    print(f"vocab {tokenizer.get_vocab_size()}; {sample!r} -> {tokenizer.encode(sample).tokens}")


if __name__ == "__main__":
    main()
