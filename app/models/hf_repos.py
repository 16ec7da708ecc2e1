"""The GPT-NeoX repositories on Hugging Face we know by name, and Pythia's training checkpoints.

Any other repository may be typed in; its config.json decides (see hf_checkpoint.check_config).
This list only fills the picker and tells which repositories carry Pythia's step branches and
which chat template a family was tuned with.
"""
from __future__ import annotations

import re

PYTHIA_SIZES = ("70m", "160m", "410m", "1b", "1.4b", "2.8b", "6.9b", "12b")


def _pythia() -> list[str]:
    out = []
    for suffix in ("", "-v0"):
        for size in PYTHIA_SIZES:
            out += [f"EleutherAI/pythia-{size}{suffix}", f"EleutherAI/pythia-{size}-deduped{suffix}"]
    return out


KNOWN_REPOS: tuple[str, ...] = tuple(
    _pythia()
    + [f"databricks/dolly-v2-{size}" for size in ("3b", "7b", "12b")]
    + [f"togethercomputer/RedPajama-INCITE-{kind}-{size}-v1"
       for size in ("3B", "7B") for kind in ("Base", "Chat", "Instruct")]
    + [f"stabilityai/stablelm-{kind}-alpha-{size}" for kind in ("base", "tuned") for size in ("3b", "7b")]
    + ["EleutherAI/gpt-neox-20b"])

_PYTHIA_REPO = re.compile(r"^EleutherAI/pythia-[0-9.]+[mb](-deduped)?(-v0)?$", re.IGNORECASE)


def pythia_steps() -> list[str]:
    """The 154 checkpoint branches of every Pythia repository, in training order.

    step0, then log-spaced step1 ... step512, then every 1000 steps to step143000 (== main).
    """
    early = [0] + [2 ** i for i in range(10)]
    return [f"step{n}" for n in early + list(range(1000, 143001, 1000))]


def is_pythia(repo: str) -> bool:
    """True for the EleutherAI Pythia repositories, whose branches are the training steps."""
    return bool(_PYTHIA_REPO.match(repo))


def model_name(repo: str) -> str:
    """The repository's name without its owner: 'EleutherAI/pythia-70m' -> 'pythia-70m'."""
    return repo.rpartition("/")[2]
