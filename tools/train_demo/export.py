"""Exports the trained demo model through the project's own tools and picks the file to ship.

  1. `engine.convert.convert_hf(WORKDIR/hf, ..., ftype="f32")`: the Hugging Face folder -> ggml f32
  2. `python -m engine quantize f32.bin q8_0.bin --type q8_0 --qnt-version 2`, and the same for q5_1
  3. perplexity of all three files with `python -m engine perplexity` on each held-out text:
     WORKDIR/val.txt (Persuasion ch. 22-24) and WORKDIR/val-moby.txt (Moby Dick ch. 133-135 and
     the epilogue); plus perplexity.py's disjoint-window figure of the f32 file on val.txt
  4. ships the SMALLEST quantized file whose perplexity is within 5% of the f32 one on every
     held-out text, plus tokenizer.json, into --resources (resources/demo/), and writes
     WORKDIR/export/report.json.

Runs in the project's environment (numpy, numba, tokenizers); torch is not needed.

    python tools/train_demo/export.py --work WORKDIR [--resources resources/demo]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

from tokenizers import Tokenizer

from corpus import VALIDATION_FILES
from perplexity import perplexity

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from engine import load_model  # noqa: E402
from engine.convert import convert_hf  # noqa: E402

MODEL_NAME = "demo-austen"
QUANT_TYPES = ("q8_0", "q5_1")
MAX_PPL_INCREASE = 0.05  # a shipped quantized file may be at most 5% worse than f32


def engine_command(*args: str) -> subprocess.CompletedProcess:
    """Runs `python -m engine ...` from the repo root, as a user would."""
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=REPO, text=True, capture_output=True)


def engine_perplexity(model: Path, text: Path, tokenizer: Path) -> dict:
    """`python -m engine perplexity --json`: sliding windows with a stride of half a context."""
    result = engine_command("perplexity", str(model), "--text", str(text), "--tokenizer", str(tokenizer), "--json")
    if result.returncode != 0:
        raise SystemExit(f"engine perplexity {model.name} failed: {result.stderr.strip()}")
    return json.loads(result.stdout)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--resources", type=Path, default=REPO / "resources" / "demo")
    args = parser.parse_args()
    out = args.work / "export"
    out.mkdir(parents=True, exist_ok=True)
    tokenizer_json = args.work / "hf" / "tokenizer.json"
    val_text = args.work / "val.txt"
    held_out = {name: args.work / filename for name, filename in VALIDATION_FILES.items()
                if (args.work / filename).exists()}

    files = {"f32": out / f"{MODEL_NAME}-f32.bin"}
    convert_hf(args.work / "hf", files["f32"], ftype="f32")
    for qtype in QUANT_TYPES:
        files[qtype] = out / f"{MODEL_NAME}-{qtype}.bin"
        result = engine_command("quantize", str(files["f32"]), str(files[qtype]), "--type", qtype, "--qnt-version", "2")
        if result.returncode != 0:
            raise SystemExit(f"quantize {qtype} failed: {result.stderr.strip()}")

    ids = Tokenizer.from_file(str(tokenizer_json)).encode(val_text.read_text(encoding="utf-8").strip()).ids
    report = {"val_text": str(val_text), "held_out": {k: str(v) for k, v in held_out.items()}, "files": {}}
    # The f32 file's disjoint-window perplexity must equal train.py's last validation loss:
    # the check that conversion lost nothing.
    disjoint, _ = perplexity(load_model(files["f32"]), ids)
    report["f32_disjoint_windows_perplexity"] = disjoint
    print(f"f32 disjoint-window perplexity {disjoint:.3f} (compare train_log.jsonl's last val_ppl)")
    for kind, path in files.items():
        # The engine's sliding-window figures are the ones reported and compared; "perplexity"
        # stays the Austen figure, as in earlier reports.
        entry = {"file": path.name, "bytes": path.stat().st_size, "held_out": {}}
        for name, text in held_out.items():
            sliding = engine_perplexity(path, text, tokenizer_json)
            entry["held_out"][name] = {"perplexity": sliding["perplexity"], "engine_perplexity": sliding}
        entry["perplexity"] = entry["held_out"]["austen"]["perplexity"]
        report["files"][kind] = entry
        print(f"{kind:5} {entry['bytes']:>10,} bytes  perplexity " + "  ".join(
            f"{name} {e['perplexity']:8.3f} over {e['engine_perplexity']['scored_tokens']} tokens"
            for name, e in entry["held_out"].items()))

    def close_to_f32(kind: str) -> bool:
        return all(report["files"][kind]["held_out"][name]["perplexity"]
                   <= report["files"]["f32"]["held_out"][name]["perplexity"] * (1 + MAX_PPL_INCREASE)
                   for name in held_out)

    acceptable = [k for k in QUANT_TYPES if close_to_f32(k)]
    if not acceptable:
        raise SystemExit(f"no quantized file is within {MAX_PPL_INCREASE:.0%} of the f32 perplexity on every held-out text")
    shipped = min(acceptable, key=lambda k: report["files"][k]["bytes"])
    args.resources.mkdir(parents=True, exist_ok=True)
    for stale in args.resources.glob(f"{MODEL_NAME}-*.bin"):
        stale.unlink()
    target = args.resources / files[shipped].name
    shutil.copy(files[shipped], target)
    shutil.copy(tokenizer_json, args.resources / "tokenizer.json")
    report["shipped"] = {"type": shipped, "path": str(target.relative_to(REPO)) if target.is_relative_to(REPO) else str(target),
                         "sha256": sha256(target), "tokenizer_sha256": sha256(args.resources / "tokenizer.json")}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"shipped {shipped}: {target} ({target.stat().st_size:,} bytes) + tokenizer.json")


if __name__ == "__main__":
    main()
