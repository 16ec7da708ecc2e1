"""Spell checking, headless: which words of a text are misspelt, what to suggest instead, and the
writer's own word list.

The dictionaries are pyspellchecker's (word frequency lists shipped inside its wheel, read with
pkgutil: nothing is downloaded). A `Speller` is one language's dictionary plus the personal word
list (`personal_words_path()`, one word a line, shared by every language: names and invented words
are the writer's whatever the language). Lookups are cached, so checking a paragraph again as the
writer types costs a regular expression and a few dictionary reads. No Qt here: the story view's
highlighter (app/widgets/spellcheck.py) and the window's spelling menu use this.
"""
from __future__ import annotations

import importlib.resources
import re
import threading
from pathlib import Path

from app import paths

PERSONAL_WORDS_MAX_BYTES = 4 * 1024 * 1024    # a word list larger than this is not one the app wrote
CACHE_MAX = 200_000                           # distinct words remembered before the cache starts over
QUICK_LENGTH = 10                             # longer words get edit-distance-1 suggestions only
                                              # (distance 2 on a 15-letter word takes seconds)
_WORD = re.compile(r"[\w'’]+")
_LOADED: dict[str, object] = {}               # language -> pyspellchecker.SpellChecker (loaded once)
_LOAD_LOCK = threading.Lock()


class SpellingError(Exception):
    """A dictionary or the personal word list could not be used (the message says which, and why)."""


def available_languages() -> list[str]:
    """The language codes whose dictionary the installed pyspellchecker ships ("en", "de", ...)."""
    try:
        from spellchecker import SpellChecker
    except ImportError:
        return []
    folder = importlib.resources.files("spellchecker") / "resources"
    return sorted(code for code in SpellChecker.languages() if (folder / f"{code}.json.gz").is_file())


def personal_words_path() -> Path:
    """The writer's own words ("Add to dictionary"), next to the settings."""
    return paths.config_dir() / "dictionary.txt"


def read_personal_words(path: Path | None = None) -> set[str]:
    """The personal word list (a missing file is an empty list)."""
    path = path or personal_words_path()
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return set()
    except OSError as e:
        raise SpellingError(f"Could not read your word list {path}: {e.strerror or e}") from e
    if size > PERSONAL_WORDS_MAX_BYTES:
        raise SpellingError(f"Your word list {path} is {size} bytes; a word list is at most "
                            f"{PERSONAL_WORDS_MAX_BYTES} bytes. It was left as it is.")
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise SpellingError(f"Could not read your word list {path}: {e.strerror or e}") from e
    return {w.strip() for w in text.splitlines() if w.strip()}


def personal_words_bytes(words) -> bytes:
    """The word list file's contents: one word a line, sorted (diffs and hand edits stay readable)."""
    return "".join(f"{w}\n" for w in sorted(set(words), key=str.casefold)).encode("utf-8")


def words(text: str):
    """(start, word) for each word of `text` worth checking: letters with apostrophes inside
    (don't, l'amour), at least two letters, not in capitals (acronyms: NASA, NASA's), no digits (R2D2, 3rd)."""
    for match in _WORD.finditer(text):
        token = match.group()
        start = match.start()
        stripped = token.lstrip("'’")
        start += len(token) - len(stripped)
        word = stripped.rstrip("'’")
        letters = word.replace("'", "").replace("’", "")
        if len(letters) < 2 or not letters.isalpha() or re.split("['’]", word)[0].isupper():
            continue
        yield start, word


def _dictionary(language: str):
    """pyspellchecker's dictionary for `language`, read once per process (about 0.3 s for English)."""
    with _LOAD_LOCK:
        checker = _LOADED.get(language)
        if checker is None:
            if language not in available_languages():
                raise SpellingError(f"No spelling dictionary for {language!r}; "
                                    f"there are: {', '.join(available_languages()) or 'none'}.")
            from spellchecker import SpellChecker
            checker = _LOADED[language] = SpellChecker(language)
        return checker


class Speller:
    """One language's dictionary with the personal words: `misspelt(text)`, `suggestions(word)`,
    `add(word)`. Build it with `Speller.load` on a thread (reading the dictionary takes a moment)."""

    def __init__(self, language: str, checker, personal: set[str]):
        self.language = language
        self._checker = checker
        self.personal = set(personal)
        self._personal_folded = {w.casefold() for w in self.personal}
        self._known: dict[str, bool] = {}

    @classmethod
    def load(cls, language: str, personal_path: Path | None = None) -> "Speller":
        return cls(language, _dictionary(language), read_personal_words(personal_path))

    def is_known(self, word: str) -> bool:
        known = self._known.get(word)
        if known is None:
            if len(self._known) >= CACHE_MAX:
                self._known.clear()
            known = self._known[word] = self._look_up(word)
        return known

    def _look_up(self, word: str) -> bool:
        folded = word.replace("’", "'").casefold()
        if folded in self._personal_folded or folded in self._checker:
            return True
        parts = [p for p in folded.split("'") if p]   # l'amour, qu'il: each part a word (elisions)
        return len(parts) > 1 and all(len(p) < 2 or p in self._checker or p in self._personal_folded
                                      for p in parts)

    def misspelt(self, text: str) -> list[tuple[int, int]]:
        """(start, length) in code points of each word in `text` not in the dictionary."""
        return [(start, len(word)) for start, word in words(text) if not self.is_known(word)]

    def suggestions(self, word: str, limit: int = 6, thorough: bool = False) -> list[str]:
        """Likely corrections, most frequent first, in the word's case (Teh -> The). Quick (edit
        distance 1) unless `thorough`, which also tries distance 2 for words up to `QUICK_LENGTH`
        letters: that takes up to a second, so callers run it on a thread."""
        folded = word.replace("’", "'").casefold()
        checker = self._checker
        found = checker.known(checker.edit_distance_1(folded))
        if not found and thorough and len(folded) <= QUICK_LENGTH:
            found = checker.known(checker.edit_distance_2(folded))
        ranked = sorted(found, key=lambda w: (-checker.word_usage_frequency(w), w))[:limit]
        return [_like(word, w) for w in ranked]

    def add(self, word: str) -> None:
        """`word` is right from now on (the caller writes `personal_words_bytes(self.personal)`)."""
        self.personal.add(word)
        self._personal_folded.add(word.replace("’", "'").casefold())
        self._known.clear()


def _like(model: str, word: str) -> str:
    """`word` in `model`'s case: all capitals, a capital first letter, or as it is."""
    if model[:1].isupper() and model[1:].islower():
        return word[:1].upper() + word[1:]
    return word
