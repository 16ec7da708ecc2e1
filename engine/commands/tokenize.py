"""``tokenize (MODEL | --tokenizer FILE) (TEXT | --file PATH) [--json]``: the token ids of a text.

With a tokenizer.json the ids are exact: --tokenizer, else the one that belongs to MODEL
(`<stem>.tokenizer.json` or `tokenizer.json` beside it, engine.loaded.find_tokenizer_json, as
every command and the app find it). A model file with neither uses the BPE rebuilt from the
vocabulary stored in it (engine/tokenizer.py explains how close that is).
"""
from __future__ import annotations

import json
from pathlib import Path

from engine.errors import CLIError
from engine.loaded import find_tokenizer_json
from engine.tokenizer import load_tokenizer


def register(sub):
    p = sub.add_parser("tokenize", help="print the token ids of a text",
                       description="Print the token ids of TEXT (or of --file PATH), using the exact tokenizer "
                                   "from --tokenizer or the tokenizer.json beside MODEL, else the one rebuilt "
                                   "from MODEL's vocabulary.")
    p.add_argument("args", nargs="*", metavar="[MODEL] [TEXT]",
                   help="a legacy ggml .bin or a GGUF file (not needed with --tokenizer), then the text")
    p.add_argument("--tokenizer", metavar="FILE", help="a Hugging Face tokenizer.json (exact ids)")
    p.add_argument("--file", metavar="PATH", help="read the text from this UTF-8 file instead of TEXT")
    p.add_argument("--json", action="store_true", help='print {"ids": [...]} on one line')
    p.set_defaults(func=run)


def _model_and_text(args) -> tuple[str | None, str]:
    wanted = (0 if args.tokenizer else 1) + (0 if args.file else 1)
    given = list(args.args)
    if args.tokenizer and args.file is None and len(given) == 2:
        given = given[1:]          # MODEL TEXT --tokenizer F: the tokenizer.json decides
        wanted = 1
    if len(given) != wanted:
        need = " and ".join(n for n, needed in (("MODEL", not args.tokenizer), ("TEXT", not args.file)) if needed)
        raise CLIError(f"tokenize needs {need or 'no positional argument'}; got {len(given)} positional "
                       f"argument(s): {given!r}")
    model = None if args.tokenizer else given.pop(0)
    if args.file:
        path = Path(args.file)
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise CLIError(f"{path}: not UTF-8 text (byte {e.start})") from None
    else:
        text = given[0]
    return model, text


def run(args) -> int:
    model, text = _model_and_text(args)
    if args.tokenizer:
        tokenizer = load_tokenizer(None, args.tokenizer)
    elif find_tokenizer_json(model) is not None:
        tokenizer = load_tokenizer(None, str(find_tokenizer_json(model)))
    else:
        from engine.model_file import open_model_file
        with open_model_file(model) as f:
            vocab, embedded = list(f.vocab), f.embedded_tokenizer
        tokenizer = load_tokenizer(vocab, None, source=model, embedded=embedded)
    ids = tokenizer.encode(text)
    if args.json:
        print(json.dumps({"ids": ids}))
        return 0
    for i in ids:
        print(f"{i}\t{tokenizer.token_bytes(i).decode('utf-8', 'replace')!r}")
    return 0
