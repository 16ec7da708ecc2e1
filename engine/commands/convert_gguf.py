"""``convert-gguf IN.bin OUT.gguf``: a legacy ggml GPT-NeoX file of any era -> GGUF v3 (``gptneox``)."""
from __future__ import annotations

from engine.gguf_convert import OLD_QUANT_CHOICES


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert-gguf", help="convert a legacy ggml file to GGUF (for llama.cpp, KoboldCpp)",
        description="Write IN.bin as a GGUF v3 file of architecture gptneox: its metadata, the tokenizer "
                    "(a tokenizer.json beside the input, else the vocabulary of the file), the tensors under "
                    "their GGUF names with the QKV rows re-ordered. Data is kept where GGUF has the same "
                    "block format; what was changed, and by how much, is printed per tensor type.")
    p.add_argument("input", metavar="IN.bin", help="legacy ggml GPT-NeoX file")
    p.add_argument("output", metavar="OUT.gguf", help="GGUF file to write")
    p.add_argument("--tokenizer", metavar="TOKENIZER.json",
                   help="tokenizer.json to store (default: the one beside IN.bin, else rebuilt from its vocabulary)")
    p.add_argument("--old-quants", choices=OLD_QUANT_CHOICES, default="fp16-scales",
                   help="q4_0/q4_1/q8_0 blocks of 2023-05 and earlier (fp32 scales, which GGUF lacks): keep the "
                        "quants and round each scale to fp16 (default), or widen to f16, or requantize to q8_0; "
                        "q4_2/q4_3 always become f16 (or q8_0 with this set to q8_0)")
    p.set_defaults(func=run)


def run(args) -> int:
    from engine.gguf_convert import convert_legacy_to_gguf

    report = convert_legacy_to_gguf(args.input, args.output, old_quants=args.old_quants,
                                    tokenizer_json=args.tokenizer)
    print(f"wrote {report.path} ({report.path.stat().st_size / 2**20:.1f} MiB, GGUF v3, gptneox) "
          f"in {report.seconds:.1f} s")
    for line in report.lines():
        print("  " + line)
    return 0
