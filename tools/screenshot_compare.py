"""Make docs/compare-checkpoints.png: the "Compare checkpoints" window with three revisions.

    QT_QPA_PLATFORM=offscreen python tools/screenshot_compare.py [--out docs/compare-checkpoints.png]

No hub is reachable from the development machines, so three revisions of the bundled demo model
are served by the test suite's fixture hub and installed through the real path (add-hf: revision
resolved to a commit, files checked against the tree's SHA-256, streaming conversion to f16):
`step0` holds random initial weights, `step500` the halfway blend of those and the trained
weights, `main` the trained demo model. They stand in for a Pythia repository's training
checkpoints; the blend is not a real training step.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

REPO = "local/demo-austen"
PROMPT = "It was a truth universally acknowledged that"


def demo_revisions() -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    """The demo model's config.json and three sets of weights (transformers 4.x names)."""
    from app.bundled import demo_model
    from engine.ggml_file import GGMLFile
    with GGMLFile(demo_model()) as f:
        hp = f.hparams
        trained = {name: t.to_float32() for name, t in f.tensors.items()}
    head_dim = hp["n_embd"] // hp["n_head"]
    config = {"architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox", "vocab_size": hp["n_vocab"],
              "max_position_embeddings": hp["n_ctx"], "hidden_size": hp["n_embd"],
              "num_attention_heads": hp["n_head"], "num_hidden_layers": hp["n_layer"],
              "intermediate_size": 4 * hp["n_embd"], "rotary_pct": hp["n_rot"] / head_dim,
              "rotary_emb_base": 10000, "use_parallel_residual": bool(hp["par_res"]), "hidden_act": "gelu",
              "layer_norm_eps": 1e-5, "tie_word_embeddings": False}
    rng = np.random.default_rng(0)
    init = {}
    for name, w in trained.items():
        if name.endswith("layernorm.weight") or name.endswith("final_layer_norm.weight"):
            init[name] = np.ones_like(w)
        elif w.ndim == 2:
            init[name] = (rng.standard_normal(w.shape) * 0.02).astype(np.float32)
        else:
            init[name] = np.zeros_like(w)
    blend = {name: 0.5 * init[name] + 0.5 * trained[name] for name in trained}
    return config, {"step0": init, "step500": blend, "main": trained}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "compare-checkpoints.png")
    args = parser.parse_args(argv)
    from PySide6.QtWidgets import QApplication

    from app.bundled import demo_model
    from app.models.manager import ModelManager
    from app.widgets.modelpicker import ModelPicker
    from hf_checkpoints import safetensors_bytes
    from http_fixture_server import HubFixture

    app = QApplication.instance() or QApplication([])
    config, revisions = demo_revisions()
    tokenizer = (demo_model().parent / "tokenizer.json").read_bytes()
    with tempfile.TemporaryDirectory() as tmp, HubFixture() as hub:
        for revision, weights in revisions.items():
            hub.add_file(REPO, revision, "config.json", json.dumps(config).encode(), lfs=False)
            hub.add_file(REPO, revision, "tokenizer.json", tokenizer, lfs=False)
            hub.add_file(REPO, revision, "model.safetensors", safetensors_bytes(weights))
        manager = ModelManager(Path(tmp) / "models", hub.endpoint, cache_dir=Path(tmp) / "cache")
        for revision in revisions:
            manager.add_hf(REPO, revision, "f16")
        picker = ModelPicker(manager_factory=lambda: manager)
        view = picker.open_comparison()
        while view.revisions.count() < 3:
            app.processEvents()
        view.prompt.setPlainText(PROMPT)
        view.n_tokens.setValue(14)
        finished = []
        view.runFinished.connect(finished.append)
        view.run_button.click()
        while not finished:
            app.processEvents()
        view.resize(1100, 720)
        app.processEvents()
        ok = view.grab().save(str(args.out))
        print(f"{'saved' if ok else 'could not save'} {args.out}: {view.status.text()}")
        view.close()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
