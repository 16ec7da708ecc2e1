"""The catalog of published Pythia ggml and GGUF files: shipped facts plus what the hub told us.

`resources/catalog.json` holds what is known without a network: the model shapes, the
legacy ggml file entries whose names are known, dated folders whose file names must be listed
from the hub ("discover"), the public GPT-NeoX GGUF files by repository, file name and type
("gguf"), and GGUF repositories whose file names only the hub can list ("gguf_discover").
Sizes and SHA-256 stay null there until the hub reports them; `Catalog.refresh(hub)` reads the
tree API for every (repo, revision) and stores the answer in the user cache folder (an install
stores the listing it read too), and `Catalog.load()` lays that cache over the shipped file.
Offline, the shipped catalog is used as is. Installing a GGUF entry never trusts these cached
facts: it reads the tree of the commit it downloads (see gguf_install).
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from app import paths
from app.bundled import resources_dir
from app.models.atomic import write_json_atomic
from app.models.hub import Hub, HubFile
from engine.gguf_constants import BLOCK_SIZES, TYPE_CODES
from engine.gguf_mix import PRESETS

SHIPPED_CATALOG = resources_dir() / "catalog.json"
CACHE_NAME = "catalog-hub.json"

# Bytes per block and values per block of each quantization type, by qnt_version
# (spec ggml-gpt-neox.md section 5): used only to estimate a file's size before the hub says.
_BLOCKS = {
    ("q4_0", 0): (20, 32), ("q4_0", 1): (20, 32), ("q4_0", 2): (18, 32),
    ("q4_1", 0): (24, 32), ("q4_1", 1): (24, 32), ("q4_1", 2): (20, 32),
    ("q4_2", 0): (10, 16), ("q4_3", 0): (12, 16),
    ("q5_0", 0): (22, 32), ("q5_0", 1): (22, 32), ("q5_0", 2): (22, 32),
    ("q5_1", 0): (24, 32), ("q5_1", 1): (24, 32), ("q5_1", 2): (24, 32),
    ("q8_0", 0): (36, 32), ("q8_0", 1): (36, 32), ("q8_0", 2): (34, 32),
    ("f16", 0): (2, 1), ("f32", 0): (4, 1),
}
# GGUF file types as llama.cpp's quantizer names them (and uploads spell them in file names).
# The ones our reader runs are the engine's quantization presets (engine.gguf_mix), plus the short
# names some uploads use for the _M mixes; the value is the tensor type most weights have.
GGUF_TYPES: dict[str, str] = {name.upper(): base for name, (_ftype, base) in PRESETS.items()}
GGUF_TYPES.update({"Q3_K": "q3_K", "Q4_K": "q4_K", "Q5_K": "q5_K"})
# Types published for GPT-NeoX models that our reader refuses, and why (spec gguf-gptneox.md).
GGUF_REFUSED_TYPES: dict[str, str] = {
    **{name: f"{name} files hold IQ3_S / IQ3_XXS tensors, a type NeoX Writer's GGUF reader refuses"
       for name in ("IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M")},
    **{name: f"{name} files hold {name[:3]} i-quant tensors, a type NeoX Writer's GGUF reader refuses"
       for name in ("IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ1_S", "IQ1_M")},
    **{name: f"{name} uses a tensor type code llama.cpp has removed; neither NeoX Writer nor the gguf "
             "package opens it" for name in ("Q4_0_4_4", "Q4_0_4_8", "Q4_0_8_8")},
    **{name: f"{name} holds ternary tensors, a type NeoX Writer's GGUF reader refuses" for name in ("TQ1_0", "TQ2_0")},
}
_GGUF_NAME_TYPE = re.compile(r"[.-](?:i1-)?(" + "|".join(
    sorted(map(re.escape, [*GGUF_TYPES, *GGUF_REFUSED_TYPES]), key=len, reverse=True)) + r")\.gguf$", re.IGNORECASE)
_AVERAGE_TOKEN_BYTES = 7          # Pythia vocab: ~330 kB of text over 50k tokens, plus 4-byte lengths
_RUNTIME_OVERHEAD = 200 * 1024 * 1024  # Python, numpy, numba and the app itself


@dataclass(frozen=True)
class TokenizerSource:
    """Where a model's tokenizer.json comes from."""
    repo: str
    revision: str = "main"
    path: str = "tokenizer.json"


@dataclass(frozen=True)
class ModelShape:
    """Hyper-parameters of one Pythia size (spec section 11); enough to estimate sizes."""
    n_vocab: int
    n_ctx: int
    n_embd: int
    n_head: int
    n_layer: int

    @property
    def matrix_values(self) -> int:
        """Values in the quantized 2-D weights: embed_in, embed_out and 12 E^2 per layer."""
        return 2 * self.n_vocab * self.n_embd + self.n_layer * 12 * self.n_embd ** 2

    @property
    def vector_values(self) -> int:
        """Values of the f32 biases and layer norms: 13 E per layer and the final norm."""
        return self.n_layer * 13 * self.n_embd + 2 * self.n_embd

    @property
    def params(self) -> int:
        return self.matrix_values + self.vector_values


@dataclass(frozen=True)
class CatalogEntry:
    """One downloadable model file. `size`/`sha256` are None until the hub has said."""
    id: str
    name: str
    repo: str
    revision: str
    path: str
    size: int | None
    sha256: str | None
    era: str
    quant: str
    qnt_version: int
    license: str
    model: str
    shape: ModelShape
    tokenizer: TokenizerSource | None   # None for GGUF: the file carries its tokenizer
    facts_from: str = "shipped"     # "shipped" or "hub tree <date>": where size/sha256 came from
    format: str = "ggml"            # "ggml" (legacy) or "gguf"
    refused: str = ""               # why our reader refuses this file's type ("" = it runs)

    @property
    def filename(self) -> str:
        """Local file name: the basename, prefixed by the dated folder for old eras; a GGUF file
        is named after its id (owner and file), so equal file names of two uploaders never clash."""
        if self.format == "gguf":
            return f"{self.id}.gguf"
        folder, _, base = self.path.rpartition("/")
        return f"{folder.replace('/', '_')}_{base}" if folder else base

    @property
    def params(self) -> int:
        return self.shape.params

    @property
    def approx_size(self) -> int | None:
        """File size estimated from the format (exact `size` preferred when known). None for GGUF:
        its mixes of tensor types make any estimate a guess, and the list shows none."""
        if self.format == "gguf":
            return None
        block = _BLOCKS.get((self.quant, self.qnt_version))
        if block is None:
            return None
        nbytes, nvalues = block
        header = 36 if self.qnt_version > 0 else 32
        vocab = self.shape.n_vocab * (4 + _AVERAGE_TOKEN_BYTES)
        records = (12 * self.shape.n_layer + 4) * 64
        return (header + vocab + records + self.shape.matrix_values * nbytes // nvalues
                + self.shape.vector_values * 4)

    @property
    def ram_estimate(self) -> int | None:
        """Rough RAM to run it: the mapped file, an f32 KV cache for the full context, overhead."""
        size = self.size or self.approx_size or self._gguf_weight_bytes()
        if size is None:
            return None
        kv_cache = 2 * self.shape.n_layer * self.shape.n_ctx * self.shape.n_embd * 4
        return size + kv_cache + _RUNTIME_OVERHEAD

    def _gguf_weight_bytes(self) -> int | None:
        """A GGUF file's bytes near enough for the RAM column: the matrices at the bytes per value of
        its type's main tensor type, the vectors in f32 (the file's size itself is never guessed)."""
        base = GGUF_TYPES.get(self.quant) if self.format == "gguf" else None
        if base is None:
            return None
        values, nbytes = (1, 4) if base == "f32" else BLOCK_SIZES[TYPE_CODES[base]]
        return self.shape.matrix_values * nbytes // values + self.shape.vector_values * 4

    def url(self, hub: Hub) -> str:
        return hub.resolve_url(self.repo, self.revision, self.path)

    def to_dict(self) -> dict:
        out = asdict(self)
        out.update(filename=self.filename, params=self.params, approx_size=self.approx_size,
                   ram_estimate=self.ram_estimate)
        return out


class CatalogError(ValueError):
    """The shipped catalog file is malformed (names the file and the entry)."""


class Catalog:
    """All catalog entries, in display order, addressable by id."""

    def __init__(self, entries: list[CatalogEntry]):
        self.entries = entries
        self._by_id = {e.id: e for e in entries}

    def __iter__(self):
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, entry_id: str) -> CatalogEntry | None:
        return self._by_id.get(entry_id)

    def find_sha256(self, sha256: str) -> CatalogEntry | None:
        return next((e for e in self.entries if e.sha256 == sha256), None)

    def find_file(self, repo: str, path: str, revision: str) -> CatalogEntry | None:
        """The entry of one file of one repository at one revision, if the catalog lists it."""
        return next((e for e in self.entries if (e.repo, e.path, e.revision) == (repo, path, revision)), None)

    @classmethod
    def load(cls, shipped: Path = SHIPPED_CATALOG, cache: Path | None = None) -> "Catalog":
        """The shipped catalog with the cached hub facts laid over it."""
        doc = _read_json(shipped)
        cache = cache if cache is not None else paths.cache_dir() / CACHE_NAME
        listings = _read_cache(cache)
        try:
            shapes = {name: ModelShape(**{k: _count(m, k, positive=True) for k in ModelShape.__dataclass_fields__})
                      for name, m in doc["models"].items()}
            tokenizers = {name: TokenizerSource(**{k: _text(m["tokenizer"], k) for k in m["tokenizer"]})
                          for name, m in doc["models"].items() if "tokenizer" in m}
            displays = {name: _text(m, "display") if "display" in m else name for name, m in doc["models"].items()}
            entries = [_entry(e, shapes, tokenizers) for e in doc["entries"]]
            ggufs = [_gguf_entry(e, shapes, displays) for e in _list(doc, "gguf")]
            _check_unique_ids(entries + ggufs)
            entries += _discovered(doc.get("discover", []), listings, shapes, tokenizers,
                                   {(e.repo, e.path) for e in entries})
            entries += ggufs
            entries += _gguf_discovered(_list(doc, "gguf_discover"), listings, shapes, displays,
                                        {e.id for e in entries})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CatalogError(f"{shipped}: malformed catalog: {exc!r}") from exc
        return cls([_with_hub_facts(e, listings) for e in entries])

    @staticmethod
    def refresh(hub: Hub, shipped: Path = SHIPPED_CATALOG, cache: Path | None = None) -> list[str]:
        """Fetch the tree of every (repo, revision) the catalog uses; store them in the cache.

        Returns one message per listing that failed (empty when all succeeded); listings
        already in the cache are kept when a new fetch fails, so offline changes nothing.
        """
        doc = _read_json(shipped)
        cache = cache if cache is not None else paths.cache_dir() / CACHE_NAME
        listings = _read_cache(cache)
        wanted = {(e["repo"], e["revision"]) for e in doc["entries"]}
        wanted |= {(d["repo"], d["revision"]) for d in doc.get("discover", [])}
        wanted |= {(g["repo"], g.get("revision", "main")) for g in doc.get("gguf", []) + doc.get("gguf_discover", [])}
        errors = []
        for repo, revision in sorted(wanted):
            try:
                files = hub.tree(repo, revision)
            except Exception as exc:  # any failure leaves the older listing in place
                errors.append(f"{repo}@{revision}: {exc}")
                continue
            listings[f"{repo}@{revision}"] = _listing(hub, files)
        write_json_atomic(cache, {"format": 1, "listings": listings})
        return errors

    @staticmethod
    def remember(hub: Hub, repo: str, revision: str, files: dict[str, HubFile], cache: Path | None = None) -> None:
        """Store one tree listing an install has just read, as a refresh would (the list then shows
        the sizes of that repository's other files too)."""
        cache = cache if cache is not None else paths.cache_dir() / CACHE_NAME
        listings = _read_cache(cache)
        listings[f"{repo}@{revision}"] = _listing(hub, files)
        write_json_atomic(cache, {"format": 1, "listings": listings})


def _listing(hub: Hub, files: dict[str, HubFile]) -> dict:
    return {"fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "endpoint": hub.endpoint,
            "files": {p: {"size": f.size, "sha256": f.sha256, "git_oid": f.git_oid} for p, f in files.items()}}


def cached_hub_file(repo: str, revision: str, path: str, cache: Path | None = None) -> HubFile | None:
    """What the last tree listing said about one file (e.g. a tokenizer), or None."""
    cache = cache if cache is not None else paths.cache_dir() / CACHE_NAME
    info = _read_cache(cache).get(f"{repo}@{revision}", {}).get("files", {}).get(path)
    if not isinstance(info, dict):
        return None
    return HubFile(path, info.get("size"), info.get("sha256"), info.get("git_oid"))


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read the catalog: {exc.strerror}") from exc
    except ValueError as exc:
        raise CatalogError(f"{path}: the catalog is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise CatalogError(f"{path}: the catalog's JSON is nested too deeply") from exc
    if not isinstance(doc, dict):
        raise CatalogError(f"{path}: the catalog is a JSON {type(doc).__name__}, not an object")
    return doc


def _read_cache(cache: Path) -> dict:
    """The cached listings; a missing or damaged cache is simply empty (it is only a cache).

    Only well-formed facts survive: listings are objects whose "files" map paths to objects
    with a byte count and a SHA-256 (either may be null); anything else in a listing is dropped.
    """
    try:
        with open(cache, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError, RecursionError):
        return {}
    listings = doc.get("listings") if isinstance(doc, dict) else None
    if not isinstance(listings, dict):
        return {}
    clean = {}
    for key, listing in listings.items():
        if not isinstance(listing, dict) or not isinstance(listing.get("files"), dict):
            continue
        files = {path: info for path, info in listing["files"].items() if _hub_facts_ok(info)}
        fetched = listing.get("fetched_at")
        clean[key] = dict(listing, files=files, fetched_at=fetched if isinstance(fetched, str) else "?")
    return clean


def _hub_facts_ok(info) -> bool:
    if not isinstance(info, dict):
        return False
    size, sha, oid = info.get("size"), info.get("sha256"), info.get("git_oid")
    return ((size is None or (isinstance(size, int) and not isinstance(size, bool) and size >= 0))
            and (sha is None or (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha) is not None))
            and (oid is None or isinstance(oid, str)))


def _text(doc: dict, key: str) -> str:
    value = doc[key]
    if not isinstance(value, str) or not value.isprintable() and any("\ud800" <= c <= "\udfff" for c in value):
        raise ValueError(f"{key!r} is {value!r:.40}, not text")
    return value


def _count(doc: dict, key: str, positive: bool = False, optional: bool = False) -> int | None:
    value = doc.get(key) if optional else doc[key]
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < (1 if positive else 0):
        raise ValueError(f"{key!r} is {value!r:.40}, not a {'positive' if positive else 'non-negative'} integer")
    return value


def _entry(e: dict, shapes, tokenizers) -> CatalogEntry:
    sha = e.get("sha256")
    if sha is not None and not _hub_facts_ok({"sha256": sha}):
        raise ValueError(f"'sha256' of {e.get('id')!r:.40} is {sha!r:.70}, not a SHA-256")
    if e.get("qnt_version") not in (0, 1, 2):
        raise ValueError(f"'qnt_version' of {e.get('id')!r:.40} is {e.get('qnt_version')!r:.40}, not 0, 1 or 2")
    return CatalogEntry(
        id=_text(e, "id"), name=_text(e, "name"), repo=_text(e, "repo"), revision=_text(e, "revision"),
        path=_text(e, "path"), size=_count(e, "size", optional=True), sha256=sha, era=_text(e, "era"),
        quant=_text(e, "quant"), qnt_version=e["qnt_version"], license=_text(e, "license"),
        model=_text(e, "model"), shape=shapes[e["model"]], tokenizer=_tokenizer_of(e["model"], tokenizers))


def _tokenizer_of(model: str, tokenizers: dict) -> TokenizerSource:
    """A legacy file's tokenizer repository (ggml files carry no merges: the app fetches them)."""
    if model not in tokenizers:
        raise ValueError(f"model {model!r:.60} has no 'tokenizer', which its legacy ggml files need")
    return tokenizers[model]


def _list(doc: dict, key: str) -> list:
    value = doc.get(key, [])
    if not isinstance(value, list):
        raise ValueError(f"{key!r} is a {type(value).__name__}, not a list")
    return value


def gguf_model_id(repo: str, path: str, revision: str = "main") -> str:
    """The id of one GGUF file of the hub: owner--stem, and the revision when it is not main
    ('mradermacher/pythia-70m-GGUF', 'pythia-70m.Q4_K_M.gguf' -> 'mradermacher--pythia-70m.Q4_K_M').
    The catalog and `add-gguf` share it, so installing a listed file by hand marks its row."""
    owner = repo.partition("/")[0]
    stem = path.rpartition("/")[2]
    stem = stem[:-len(".gguf")] if stem.lower().endswith(".gguf") else stem
    out = f"{owner}--{stem}"
    if revision != "main":
        out += "@" + (revision[:12] if re.fullmatch(r"[0-9a-f]{40}", revision) else revision)
    return re.sub(r"[^A-Za-z0-9._@-]+", "-", out).strip("-.") or "gguf"


def gguf_type_of(path: str) -> str | None:
    """The file type a GGUF file name states ('pythia-70m.Q4_K_M.gguf', 'x-q8_0.gguf',
    'x.i1-IQ3_M.gguf'), in llama.cpp's spelling; None when it names no type we know."""
    match = _GGUF_NAME_TYPE.search(path)
    return match.group(1).upper() if match else None


def gguf_refusal(type_name: str) -> str:
    """Why our reader refuses GGUF files of this type ("" when it runs them)."""
    return GGUF_REFUSED_TYPES.get(type_name, "")


def _gguf_entry(e, shapes: dict, displays: dict) -> CatalogEntry:
    """One listed GGUF file: repo, file name, type and model are required; size and sha256 only
    where the hub has said them (shipped entries have none)."""
    if not isinstance(e, dict):
        raise ValueError(f"a GGUF entry is a {type(e).__name__}, not an object")
    repo = _text(e, "repo") if "repo" in e else None
    if repo is None:
        raise ValueError(f"a GGUF entry ({e.get('file')!r:.60}) has no 'repo'")
    if not e.get("file"):
        raise ValueError(f"a GGUF entry of {repo:.60} has no 'file' (the file's name in the repository)")
    path = _text(e, "file")
    if not path.endswith(".gguf") or path.startswith("/") or ".." in path.split("/"):
        raise ValueError(f"GGUF entry {repo:.60}/{path!r:.60}: 'file' must be a .gguf path inside the repository")
    quant = _text(e, "type") if "type" in e else None
    if quant not in GGUF_TYPES and quant not in GGUF_REFUSED_TYPES:
        raise ValueError(f"GGUF entry {repo:.60}/{path:.60} names the unknown type {quant!r:.40} (known: "
                         f"{', '.join(sorted(GGUF_TYPES))}; refused by name: {', '.join(sorted(GGUF_REFUSED_TYPES))})")
    model = e.get("model")
    if model not in shapes:
        raise ValueError(f"GGUF entry {repo:.60}/{path:.60} names the model {model!r:.60}, which 'models' lacks")
    sha = e.get("sha256")
    if sha is not None and not _hub_facts_ok({"sha256": sha}):
        raise ValueError(f"'sha256' of GGUF entry {repo:.60}/{path:.60} is {sha!r:.70}, not a SHA-256")
    revision = _text(e, "revision") if "revision" in e else "main"
    return _gguf(repo, revision, path, quant, model, _text(e, "license"), shapes, displays,
                 size=_count(e, "size", optional=True), sha256=sha)


def _gguf(repo, revision, path, quant, model, license, shapes, displays, size=None, sha256=None) -> CatalogEntry:
    # mradermacher's "-i1-GGUF" repositories hold importance-matrix quants of the same names
    source = repo.partition("/")[0] + (", imatrix" if ".i1-" in path.lower() else "")
    return CatalogEntry(
        id=gguf_model_id(repo, path, revision), name=f"{displays[model]} {quant} GGUF ({source})", repo=repo,
        revision=revision, path=path, size=size, sha256=sha256, era="GGUF", quant=quant, qnt_version=0,
        license=license, model=model, shape=shapes[model], tokenizer=None, format="gguf",
        refused=gguf_refusal(quant))


def _gguf_discovered(specs: list, listings: dict, shapes, displays, known) -> list[CatalogEntry]:
    """Entries for the .gguf files of a repository's cached listing whose names state a known type."""
    out = []
    for spec in specs:
        if not isinstance(spec, dict):
            raise ValueError(f"a 'gguf_discover' item is a {type(spec).__name__}, not an object")
        repo, revision = _text(spec, "repo"), _text(spec, "revision") if "revision" in spec else "main"
        model, license = spec.get("model"), _text(spec, "license")
        if model not in shapes:
            raise ValueError(f"'gguf_discover' of {repo:.60} names the model {model!r:.60}, which 'models' lacks")
        files = listings.get(f"{repo}@{revision}", {}).get("files", {})
        for path in sorted(files):
            quant = gguf_type_of(path)
            if "/" in path or quant is None or gguf_model_id(repo, path, revision) in known:
                continue     # a listed file (or a same-named one of another repository of its owner)
            out.append(_gguf(repo, revision, path, quant, model, license, shapes, displays))
            known.add(out[-1].id)
    return out


def _check_unique_ids(entries: list[CatalogEntry]) -> None:
    """The shipped entries' ids are unique (a file found by discovery never displaces one)."""
    seen = set()
    for e in entries:
        if e.id in seen:
            raise ValueError(f"two catalog entries have the id {e.id!r:.80}")
        seen.add(e.id)


_FILE_NAME = re.compile(r"pythia-(\d+(?:\.\d+)?[mb])-deduped-(q\d_\d|f16|f32)\.bin$")


def _discovered(specs: list[dict], listings: dict, shapes, tokenizers, known) -> list[CatalogEntry]:
    """Entries for files found in cached listings of the 'discover' folders."""
    out = []
    for spec in specs:
        files = listings.get(f"{_text(spec, 'repo')}@{_text(spec, 'revision')}", {}).get("files", {})
        folder = _text(spec, "folder").rstrip("/") + "/"
        for path in sorted(files):
            match = _FILE_NAME.search(path)
            if not path.startswith(folder) or "/" in path[len(folder):] or not match:
                continue
            size, quant = match.groups()
            model = f"pythia-{size}-deduped"
            if quant not in spec["quants"] or model not in shapes or (spec["repo"], path) in known:
                continue
            out.append(CatalogEntry(
                id=f"{model}-{quant}-{spec['folder']}",
                name=f"Pythia {size.upper()} deduped {quant} ({spec['folder']}, {spec['era']})",
                repo=spec["repo"], revision=spec["revision"], path=path, size=None, sha256=None,
                era=spec["era"], quant=quant, qnt_version=int(spec["qnt_version"]),
                license=spec["license"], model=model, shape=shapes[model], tokenizer=tokenizers[model]))
    return out


def _with_hub_facts(entry: CatalogEntry, listings: dict) -> CatalogEntry:
    listing = listings.get(f"{entry.repo}@{entry.revision}", {})
    info = listing.get("files", {}).get(entry.path)
    if not isinstance(info, dict):
        return entry
    size = entry.size if entry.size is not None else info.get("size")
    sha = entry.sha256 if entry.sha256 is not None else info.get("sha256")
    return replace(entry, size=size, sha256=sha, facts_from=f"hub tree {listing.get('fetched_at', '?')}")
