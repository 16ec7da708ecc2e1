"""``quantize IN OUT --type TYPE``: a legacy ggml file of the old block formats, or a GGUF file.

The output format follows ``--format``, else the output's suffix (``.gguf``: GGUF), else the
input's. Legacy output: q4_0, q4_1, q5_0, q5_1, q8_0 from an f32/f16 legacy file, every 2-D
weight in that type (``--qnt-version`` 1 or 2), as ggml's quantize tool did. GGUF output: any
preset of engine/gguf_mix.py (q4_0 ... q8_0, f16, the K-quants and their _S/_M/_L mixes, iq4_nl,
iq4_xs), the type of each tensor chosen as llama.cpp's quantizer chooses it (``--pure``: one type),
from a legacy file or a GGUF file; what was done is printed per tensor type.
"""
from __future__ import annotations

import os

from engine.errors import CLIError
from engine.ggml_file import GGMLFile
from engine.ggml_writer import GGMLWriter, tensor_type_for
from engine.quants import WRITABLE_QUANT_TYPES, quantize


def register(sub):
    from engine.gguf_mix import PRESETS

    p = sub.add_parser("quantize", help="quantize a model file (legacy ggml or GGUF, f32/f16 in)",
                       description=__doc__.split("\n\n", 1)[1])
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--type", required=True, metavar="TYPE",
                   help=f"legacy: {', '.join(WRITABLE_QUANT_TYPES)}; GGUF: {', '.join(PRESETS)} (any case)")
    p.add_argument("--format", choices=("ggml", "gguf"),
                   help="output format (default: gguf for an OUT ending in .gguf or a GGUF input, else ggml)")
    p.add_argument("--qnt-version", type=int, default=2, choices=[1, 2],
                   help="legacy block layout: 1 = ggml of 2023-05-15 (fp32 scales), 2 = 2023-05-20 and later (default)")
    p.add_argument("--pure", action="store_true", help="GGUF: every quantized tensor in TYPE's base type, no mix")
    p.add_argument("--allow-requantize", action="store_true",
                   help="GGUF: accept an already quantized input (each tensor is dequantized and quantized again)")
    p.add_argument("--tokenizer", metavar="TOKENIZER.json",
                   help="GGUF from a legacy input: tokenizer.json to store (default: the one beside the input)")
    p.set_defaults(func=run)


def quantize_file(src, dst, type_name: str, qnt_version: int = 2) -> None:
    """Quantize the 2-D weights of an f32/f16 file the way ggml's quantize tool did; copy the rest."""
    with GGMLFile(src) as f:
        if f.weight_type not in ("f32", "f16"):
            raise CLIError(f"{src}: the input must be an f32 or f16 file, this one is {f.weight_type}")
        if os.path.abspath(src) == os.path.abspath(dst):
            raise CLIError("the output must be a different file from the input")
        with GGMLWriter(dst, f.hparams, f.vocab, layout="gpt-neox", ftype=type_name,
                        qnt_version=qnt_version) as w:
            for name, t in f.tensors.items():
                target = tensor_type_for(name, len(t.shape), type_name)
                if target == t.type:
                    w.write_raw(name, t.shape, t.type, t.data)        # byte for byte, like ggml
                elif target == "f32":
                    w.write_raw(name, t.shape, "f32", quantize("f32", 0, t.to_float32()))
                else:
                    w.write_raw(name, t.shape, target, quantize(target, qnt_version, t.to_float32()))


def is_gguf(path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"GGUF"
    except OSError:
        return False


def run(args) -> int:
    fmt = args.format or ("gguf" if args.output.lower().endswith(".gguf") or is_gguf(args.input) else "ggml")
    if fmt == "ggml":
        if args.type not in WRITABLE_QUANT_TYPES:
            raise CLIError(f"--type {args.type!r}: a legacy ggml file holds {', '.join(WRITABLE_QUANT_TYPES)} "
                           "(write a .gguf for the K-quants)")
        if is_gguf(args.input):
            raise CLIError(f"{args.input} is a GGUF file: its output must be GGUF too (OUT.gguf or --format gguf)")
        quantize_file(args.input, args.output, args.type, args.qnt_version)
        return 0
    from engine.gguf_quantize import quantize_to_gguf

    report = quantize_to_gguf(args.input, args.output, args.type, pure=args.pure,
                              allow_requantize=args.allow_requantize, tokenizer_json=args.tokenizer)
    print(f"wrote {report.path} ({report.path.stat().st_size / 2**20:.1f} MiB, GGUF v3, {report.preset}) "
          f"in {report.seconds:.1f} s")
    for line in report.lines():
        print("  " + line)
    return 0
