"""``info MODEL [--json]``: what a model file (legacy ggml or GGUF) holds, without generating."""
from __future__ import annotations

import json

from engine.config import Config
from engine.ggml_file import MappedModelFile
from engine.model_file import format_label, open_model_file
from engine.qkv_layout import describe as describe_qkv


def register(sub):
    p = sub.add_parser("info", help="show a model file's format, header, layout, era and tensor types")
    p.add_argument("model", help="a legacy ggml .bin or a GGUF .gguf file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def file_info(f: MappedModelFile) -> dict:
    """The same keys as Model.info() but the backend, computed from the file alone, plus the
    tensor count, the stored tensor types and the parameter count."""
    c = Config.from_file(f)
    types: dict[str, int] = {}
    for t in f.tensors.values():
        stored = getattr(t, "stored_type", t.type)
        types[stored] = types.get(stored, 0) + 1
    return dict(
        format=format_label(f),
        n_vocab=c.n_vocab, n_ctx=c.n_ctx, n_embd=c.n_embd, n_head=c.n_head, n_layer=c.n_layer,
        n_rot=c.n_rot, parallel_residual=c.parallel_residual, layout=f.layout,
        qnt_version=f.qnt_version, weight_type=f.weight_type, ftype=f.hparams["ftype_raw"],
        qkv_layout=describe_qkv(f),
        file_size=f.file_size, path=f.path, n_tensors=len(f.tensors), tensor_types=types,
        n_params=sum(t.n_values for t in f.tensors.values()),
    )


def run(args) -> int:
    with open_model_file(args.model) as f:
        if getattr(f, "qkv_layout_source", None) == "unknown":
            # A GGUF file that does not say its QKV order: the order is found by running the
            # model on a short text (engine.qkv_layout), which needs a backend.
            from engine.model import Model
            Model(f)
        info = file_info(f)
    if args.json:
        print(json.dumps(info))
        return 0
    width = max(len(k) for k in info)
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")
    return 0
