"""`convert HF_DIR OUT.bin --type f32|f16|q8_0|q5_1|...`: Hugging Face GPT-NeoX folder -> legacy ggml file."""
from __future__ import annotations

from engine.quants import WRITABLE_QUANT_TYPES


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert", help="convert a Hugging Face GPT-NeoX folder to a ggml file (f32, f16 or quantized)",
        description="Read config.json, model.safetensors (or pytorch_model.bin, without running its "
                    "pickle code) and tokenizer.json from HF_DIR and write a gpt-neox layout ggml file.")
    p.add_argument("hf_dir", metavar="HF_DIR", help="folder with config.json and the weights")
    p.add_argument("out", metavar="OUT.bin", help="ggml file to write")
    p.add_argument("--type", dest="ftype", choices=("f32", "f16") + WRITABLE_QUANT_TYPES, default="f16",
                   help="storage type of the 2-D weight matrices, quantized on the fly for the q types "
                        "(default f16; norms and biases stay f32)")
    p.set_defaults(func=run)


def run(args) -> int:
    from engine.convert import convert_hf

    h = convert_hf(args.hf_dir, args.out, ftype=args.ftype)
    print(f"wrote {args.out}: {args.ftype}, n_vocab {h['n_vocab']}, n_ctx {h['n_ctx']}, n_embd {h['n_embd']}, "
          f"n_head {h['n_head']}, n_layer {h['n_layer']}, n_rot {h['n_rot']}, par_res {h['par_res']}")
    return 0
