"""``quantize IN OUT --type q4_0|q4_1|q5_0|q5_1|q8_0 [--qnt-version 1|2]``."""
from __future__ import annotations

import os

from engine.errors import CLIError
from engine.ggml_file import GGMLFile
from engine.ggml_writer import GGMLWriter, tensor_type_for
from engine.quants import WRITABLE_QUANT_TYPES, quantize


def register(sub):
    p = sub.add_parser("quantize", help="quantize an f32/f16 model file (gpt-neox layout)")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--type", required=True, choices=WRITABLE_QUANT_TYPES)
    p.add_argument("--qnt-version", type=int, default=2, choices=[1, 2],
                   help="block layout: 1 = ggml of 2023-05-15 (fp32 scales), 2 = 2023-05-20 and later (default)")
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


def run(args) -> int:
    quantize_file(args.input, args.output, args.type, args.qnt_version)
    return 0
