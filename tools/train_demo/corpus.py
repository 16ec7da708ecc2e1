"""Builds the demo model's training and validation text from Debian's R data packages.

Sources (public-domain novels, read offline from the packages' R lazy-load data):
  r-cran-janeaustenr  emma, mansfieldpark, northangerabbey, persuasion, prideprejudice,
                      sensesensibility: character vectors, one hard-wrapped line per element
  r-cran-tokenizers   mobydick: one string, the whole Project Gutenberg file

Cleaning: Gutenberg header/footer removed, hard-wrapped paragraphs unwrapped (a blank line ends a
paragraph), runs of spaces collapsed, `_emphasis_` markers dropped, editorial `[...]` notes dropped.
Two held-out texts, neither of them in train.txt: the last three chapters of Persuasion (val.txt)
and the last three chapters of Moby Dick with its epilogue (val-moby.txt). `--moby-held-out 0`
keeps all of Moby Dick in train.txt, as the text of the model shipped before issue 19 had it.

    python tools/train_demo/corpus.py --packages DIR_WITH_DEBS_OR_EXTRACTED --out WORKDIR [--moby-held-out 3]

writes WORKDIR/train.txt (documents separated by a line holding only <|endoftext|>),
WORKDIR/val.txt and WORKDIR/val-moby.txt.
"""
from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path

from rdata import LazyLoadDB

AUSTEN_NOVELS = ("emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice", "sensesensibility")
HELD_OUT_NOVEL = "persuasion"
HELD_OUT_CHAPTERS = 3  # Persuasion has 24 chapters; 22-24 are validation text
# Moby Dick has 135 chapters and an epilogue; 133-135 ("The Chase") and the epilogue are the
# second validation text, so the Melville side of the model is measured on text it never saw.
HELD_OUT_MOBY_CHAPTERS = 3
VALIDATION_FILES = {"austen": "val.txt", "moby": "val-moby.txt"}
DOC_SEPARATOR = "<|endoftext|>"
SITE_LIBRARY = Path("usr/lib/R/site-library")


def unwrap(lines: list[str]) -> list[str]:
    """Joins hard-wrapped lines into paragraphs; blank lines separate paragraphs."""
    paragraphs, current = [], []
    for line in lines:
        line = line.strip()
        if line:
            current.append(line)
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    return [clean_paragraph(p) for p in paragraphs if not p.startswith("[")]


def clean_paragraph(text: str) -> str:
    text = text.replace("\ufeff", "")
    # Gutenberg marks italics as _word_; the app shows plain text, so keep only the words.
    text = re.sub(r"_([^_]+)_", r"\1", text)
    text = text.replace("_", "")
    return re.sub(r"\s+", " ", text).strip()


def is_chapter_heading(paragraph: str) -> bool:
    return re.match(r"^chapter\s+([0-9]+|[ivxlc]+)\b", paragraph, re.IGNORECASE) is not None


def split_held_out(paragraphs: list[str], n_chapters: int) -> tuple[list[str], list[str]]:
    """Splits a novel before its last n chapter headings: (train part, held-out part)."""
    headings = [i for i, p in enumerate(paragraphs) if is_chapter_heading(p)]
    if len(headings) <= n_chapters:
        raise ValueError(f"novel has {len(headings)} chapter headings, cannot hold out {n_chapters}")
    cut = headings[-n_chapters]
    return paragraphs[:cut], paragraphs[cut:]


def moby_dick_lines(text: str) -> list[str]:
    """The novel from the Gutenberg file: from 'ETYMOLOGY.' up to the end-of-book notice."""
    text = text.replace("\r\n", "\n")
    start = text.find("\nETYMOLOGY.")
    end = text.find("End of Project Gutenberg's Moby Dick")
    if start < 0 or end < 0:
        raise ValueError("mobydick: Gutenberg start/end markers not found")
    return text[start:end].split("\n")


def extracted_root(packages: Path) -> Path:
    """A directory holding usr/lib/R/site-library: `packages` itself, or its .debs extracted."""
    if (packages / SITE_LIBRARY).is_dir():
        return packages
    root = packages / "extracted"
    for deb in sorted(packages.glob("r-cran-*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    if not (root / SITE_LIBRARY).is_dir():
        raise FileNotFoundError(f"{packages}: no r-cran-*.deb files and no {SITE_LIBRARY} inside")
    return root


def build(packages: Path, moby_chapters: int = HELD_OUT_MOBY_CHAPTERS) -> tuple[list[list[str]], dict[str, list[str]]]:
    """Returns (training documents as paragraph lists, {"austen"|"moby": held-out paragraphs});
    moby_chapters 0 holds out nothing of Moby Dick (no "moby" entry)."""
    root = extracted_root(packages) / SITE_LIBRARY
    austen = LazyLoadDB(root / "janeaustenr" / "data" / "Rdata.rdb")
    documents, held_out = [], []
    for name in AUSTEN_NOVELS:
        paragraphs = unwrap([line or "" for line in austen.get(name).value])
        if name == HELD_OUT_NOVEL:
            paragraphs, held_out = split_held_out(paragraphs, HELD_OUT_CHAPTERS)
        documents.append(paragraphs)
    moby = LazyLoadDB(root / "tokenizers" / "data" / "Rdata.rdb").get("mobydick").value[0]
    moby_paragraphs = unwrap(moby_dick_lines(moby))
    if moby_chapters == 0:
        documents.append(moby_paragraphs)
        return documents, {"austen": held_out}
    moby_train, moby_held_out = split_held_out(moby_paragraphs, moby_chapters)
    documents.append(moby_train)
    return documents, {"austen": held_out, "moby": moby_held_out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packages", type=Path, required=True,
                        help="directory with r-cran-janeaustenr/r-cran-tokenizers .debs (apt-get download)")
    parser.add_argument("--out", type=Path, required=True, help="work directory for train.txt / val.txt")
    parser.add_argument("--moby-held-out", type=int, default=HELD_OUT_MOBY_CHAPTERS, metavar="N",
                        help="hold out Moby Dick's last N chapters and epilogue as val-moby.txt (0: none)")
    args = parser.parse_args()
    if args.moby_held_out < 0:
        parser.error("--moby-held-out must be 0 or more")
    documents, held_out = build(args.packages, args.moby_held_out)
    args.out.mkdir(parents=True, exist_ok=True)
    train = f"\n\n{DOC_SEPARATOR}\n\n".join("\n\n".join(doc) for doc in documents) + "\n"
    (args.out / "train.txt").write_text(train, encoding="utf-8")
    print(f"train: {len(documents)} documents, {sum(map(len, documents))} paragraphs, {len(train)} chars")
    (args.out / VALIDATION_FILES["moby"]).unlink(missing_ok=True)  # never a stale one from another split
    for name, paragraphs in held_out.items():
        (args.out / VALIDATION_FILES[name]).write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
        print(f"{VALIDATION_FILES[name]}: {len(paragraphs)} paragraphs, {sum(map(len, paragraphs))} chars "
              f"({paragraphs[0][:40]!r} ...)")


if __name__ == "__main__":
    main()
