"""``info MODEL [--json]``: what a ggml file holds, without running it."""
from __future__ import annotations

import json

from engine.ggml_file import GGMLFile
from engine.config import Config


def register(sub):
    p = sub.add_parser("info", help="show a model file's header, layout, era and tensor types")
    p.add_argument("model", help="a legacy ggml .bin file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def file_info(f: GGMLFile) -> dict:
    """The same keys as Model.info(), computed from the file alone (no backend is built)."""
    c = Config.from_file(f)
    types: dict[str, int] = {}
    for t in f.tensors.values():
        types[t.type] = types.get(t.type, 0) + 1
    return dict(
        n_vocab=c.n_vocab, n_ctx=c.n_ctx, n_embd=c.n_embd, n_head=c.n_head, n_layer=c.n_layer,
        n_rot=c.n_rot, parallel_residual=c.parallel_residual, layout=f.layout,
        qnt_version=f.qnt_version, weight_type=f.weight_type, ftype=f.hparams["ftype_raw"],
        file_size=f.file_size, path=f.path, n_tensors=len(f.tensors), tensor_types=types,
        n_params=sum(t.n_values for t in f.tensors.values()),
    )


def run(args) -> int:
    with GGMLFile(args.model) as f:
        info = file_info(f)
    if args.json:
        print(json.dumps(info))
        return 0
    width = max(len(k) for k in info)
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")
    return 0
