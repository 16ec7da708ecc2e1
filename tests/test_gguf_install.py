"""GGUF files of the hub installed from the catalog or `add-gguf` against the fixture hub: size and
SHA-256 from the tree API of a pinned commit, the engine's GGUF reader as the last check, resume,
pause, refusals by name; and the catalog's GGUF entries and their validation."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from app.models import cli
from app.models.catalog import Catalog, CatalogError, gguf_model_id, gguf_type_of
from app.models.download import ChecksumMismatch, DiskFullError, DownloadControl, DownloadStopped, RefusedFile
from app.models.manager import ModelError, ModelManager, UsageError
from engine import gguf_constants as C
from engine.generator import DoneEvent, TokenEvent
from engine.loaded import EMBEDDED_NOTE, open_model
from ggufgen import write_demo_gguf
from http_fixture_server import Fault, HubFixture

REPO = "test/demo-GGUF"
FILE = "demo-austen.Q5_1.gguf"
MODEL_ID = gguf_model_id(REPO, FILE)
SHIPPED = Path(__file__).resolve().parents[1] / "resources" / "catalog.json"   # this checkout's, not the installed one


@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory) -> bytes:
    """The trained demo model as a GGUF file (q5_1 blocks, its tokenizer in the metadata)."""
    return write_demo_gguf(tmp_path_factory.mktemp("gguf-install"), C.QKV_SPLIT, marker=True).read_bytes()


@pytest.fixture
def hub(gguf_bytes):
    with HubFixture() as server:
        server.add_file(REPO, "main", FILE, gguf_bytes)
        server.add_file(REPO, "main", "README.md", b"# demo\n", lfs=False)
        server.add_file(REPO, "main", "plain.Q8_0.gguf", gguf_bytes[:4096], lfs=False)       # no LFS hash
        server.add_file(REPO, "main", "cut.Q8_0.gguf", gguf_bytes[:len(gguf_bytes) // 2])    # tensors cut off
        server.add_file(REPO, "main", "legacy.Q8_0.gguf", b"lmgg" + bytes(4096))             # not GGUF at all
        server.add_tag(REPO, "v1", "main")
        yield server


def write_catalog(path: Path) -> Path:
    """A catalog of the fixture repository: the demo file, a refused type, and a discovered repo."""
    shape = {"display": "Demo Austen", "n_vocab": 4096, "n_ctx": 256, "n_embd": 256, "n_head": 4, "n_layer": 4}
    common = {"repo": REPO, "model": "demo", "license": "apache-2.0"}
    gguf = [dict(common, file=FILE, type="Q5_1"), dict(common, file="demo-austen.IQ3_M.gguf", type="IQ3_M"),
            dict(common, file="demo-austen.Q8_0.gguf", type="Q8_0")]        # listed, but not in the repository
    path.write_text(json.dumps({"format": 1, "models": {"demo": shape}, "entries": [], "gguf": gguf,
                                "gguf_discover": [{"repo": "test/found-GGUF", "model": "demo",
                                                   "license": "apache-2.0"}]}))
    return path


@pytest.fixture
def manager(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("NEOX_WRITER_HOME", str(tmp_path / "home"))
    return ModelManager(tmp_path / "models", hub.endpoint, catalog_path=write_catalog(tmp_path / "catalog.json"),
                        cache_dir=tmp_path / "cache", stall_timeout=1.0, retries=3, backoff=0.01)


def nothing_installed(manager) -> bool:
    return not manager.manifest.models and not [p for p in manager.models_dir.iterdir() if p.name != "manifest.json"]


def test_a_catalog_entry_installs_pinned_with_the_trees_size_and_sha256_and_generates(manager, hub, gguf_bytes):
    entry = manager.catalog.get(MODEL_ID)
    assert entry.format == "gguf" and entry.size is None and entry.sha256 is None and entry.quant == "Q5_1"
    assert entry.ram_estimate is not None                        # from the model's shape, before any size
    record = manager.download(MODEL_ID).record
    commit = hub.commit_of(REPO, "main")
    sha = hashlib.sha256(gguf_bytes).hexdigest()
    assert (record.repo, record.revision, record.commit, record.path) == (REPO, "main", commit, FILE)
    assert (record.size, record.sha256, record.output_type) == (len(gguf_bytes), sha, "Q5_1")
    assert commit[:12] in record.verified_against and record.source.endswith(f"/resolve/{commit}/{FILE}")
    path = manager.installed_path(MODEL_ID)
    assert path.name == f"{MODEL_ID}.gguf" and path.read_bytes() == gguf_bytes
    assert ("GET", f"/{REPO}/resolve/{commit}/{FILE}", None) in hub.requests     # the commit, not the branch
    assert manager.catalog.get(MODEL_ID).size == len(gguf_bytes)   # the tree it read now fills the list
    loaded = open_model(path)
    try:
        assert loaded.tokenizer_note == EMBEDDED_NOTE
        events = list(loaded.generator.generate("It is a truth universally", max_tokens=6))
        done = events[-1]
        assert isinstance(done, DoneEvent) and done.text.strip()
        assert 1 <= sum(isinstance(e, TokenEvent) and e.token >= 0 for e in events) <= 6
        assert loaded.model.info()["format"] == "GGUF v3"
    finally:
        loaded.close()
    assert manager.add_gguf(REPO, FILE).already_installed
    assert manager.verify([MODEL_ID])[0].ok


def test_a_wrong_hash_installs_nothing(manager, hub, gguf_bytes):
    sha = hashlib.sha256(gguf_bytes).hexdigest()
    hub.inject(Fault("corrupt", match=f"/cdn/{sha}", after=len(gguf_bytes) // 3))
    with pytest.raises(ChecksumMismatch, match=f"does not match the expected {sha}"):
        manager.download(MODEL_ID)
    assert nothing_installed(manager)


def test_a_file_missing_from_the_tree_is_named_with_what_is_there(manager, hub):
    with pytest.raises(ModelError, match=r"has no file 'demo-austen.Q8_0.gguf'; its GGUF files are .*"
                                         + FILE.replace(".", r"\.")):
        manager.add_gguf(REPO, "demo-austen.Q8_0.gguf")
    with pytest.raises(ModelError, match="repository test/none was not found"):
        manager.add_gguf("test/none", FILE)
    assert nothing_installed(manager)


def test_a_tree_entry_without_an_lfs_hash_installs_nothing(manager, hub):
    with pytest.raises(ModelError, match="gives no LFS SHA-256 and size for plain.Q8_0.gguf"):
        manager.add_gguf(REPO, "plain.Q8_0.gguf")
    assert not any(p.endswith("plain.Q8_0.gguf") for _m, p, _r in hub.requests if "/resolve/" in p)
    assert nothing_installed(manager)


@pytest.mark.parametrize("name, why", [("cut.Q8_0.gguf", "GGUF reader refuses it"),
                                       ("legacy.Q8_0.gguf", "not a GGUF file")])
def test_a_file_our_reader_refuses_installs_nothing(manager, name, why):
    with pytest.raises(RefusedFile, match=why):
        manager.add_gguf(REPO, name)
    assert nothing_installed(manager)


def test_a_type_our_reader_refuses_is_refused_by_name_before_any_request(manager, hub):
    entry = manager.catalog.get(gguf_model_id(REPO, "demo-austen.IQ3_M.gguf"))
    assert "IQ3_S" in entry.refused
    with pytest.raises(ModelError, match="not supported: IQ3_M files hold IQ3_S"):
        manager.download(entry.id)
    assert hub.requests == []


def test_a_dropped_connection_resumes_and_a_pause_keeps_the_partial_file(manager, hub, gguf_bytes):
    sha = hashlib.sha256(gguf_bytes).hexdigest()
    hub.inject(Fault("drop", match=f"/cdn/{sha}", after=len(gguf_bytes) // 2))
    record = manager.add_gguf(REPO, FILE).record
    ranges = [r for m, p, r in hub.requests if p == f"/cdn/{sha}" and m == "GET"]
    assert ranges[0] is None and ranges[1].startswith("bytes=") and int(ranges[1][6:-1]) > 0
    assert f'"{sha}"' in hub.if_ranges                          # resumed only the same version
    assert record.sha256 == sha
    manager.remove(MODEL_ID)

    control = DownloadControl()

    def pause_after_some(progress):
        if progress.phase == "downloading" and progress.done > 0:
            control.pause()
    with pytest.raises(DownloadStopped, match="paused"):
        manager.add_gguf(REPO, FILE, on_progress=pause_after_some, control=control)
    part = manager.models_dir / f"{MODEL_ID}.gguf.part"
    assert part.exists() and manager.manifest.get(MODEL_ID) is None
    assert manager.add_gguf(REPO, FILE).record.sha256 == sha       # resumed from the kept part
    assert not part.exists()


def test_free_space_is_checked_before_the_first_byte(manager, hub, gguf_bytes, monkeypatch):
    monkeypatch.setattr(manager.downloader, "free_space", lambda folder: len(gguf_bytes) // 2)
    with pytest.raises(DiskFullError, match="not enough free space"):
        manager.add_gguf(REPO, FILE)
    assert not any("/cdn/" in p for _m, p, _r in hub.requests)
    assert nothing_installed(manager)


def test_add_gguf_prints_json_with_the_pinned_commit(hub, tmp_path, monkeypatch, capsys, gguf_bytes):
    monkeypatch.setenv("NEOX_WRITER_HOME", str(tmp_path / "home"))
    args = ["--models-dir", str(tmp_path / "models"), "--endpoint", hub.endpoint, "--retries", "1"]
    assert cli.main(args + ["add-gguf", REPO, FILE, "--revision", "v1", "--json"]) == cli.EXIT_OK
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(out) == {"id", "path", "repo", "revision", "commit", "type", "sha256", "size"}
    assert (out["repo"], out["revision"], out["commit"]) == (REPO, "v1", hub.commit_of(REPO, "main"))
    assert (out["type"], out["size"], out["sha256"]) == ("Q5_1", len(gguf_bytes), hashlib.sha256(gguf_bytes).hexdigest())
    assert out["id"] == gguf_model_id(REPO, FILE, "v1") and Path(out["path"]).read_bytes() == gguf_bytes
    assert cli.main(args + ["add-gguf", REPO, "missing.Q4_0.gguf"]) == cli.EXIT_FAILED
    assert "has no file 'missing.Q4_0.gguf'" in capsys.readouterr().err
    assert cli.main(args + ["add-gguf", REPO, "../x.gguf"]) == cli.EXIT_USAGE
    assert cli.main(args + ["add-gguf", "not a repo", FILE]) == cli.EXIT_USAGE


# -- the catalog -------------------------------------------------------------------------------


def test_file_names_state_their_type():
    assert gguf_type_of("pythia-70m.Q4_K_M.gguf") == "Q4_K_M"
    assert gguf_type_of("pythia-70m-q4_k_m.gguf") == "Q4_K_M"
    assert gguf_type_of("pythia-70m-v0-Q4_0.gguf") == "Q4_0"
    assert gguf_type_of("pythia-2.8b-deduped.i1-IQ3_XXS.gguf") == "IQ3_XXS"
    assert gguf_type_of("pythia-70m.f16.gguf") == "F16"
    assert gguf_type_of("dolly-v2-3b.Q4_0_4_4.gguf") == "Q4_0_4_4"
    assert gguf_type_of("pythia-70m.gguf") is None and gguf_type_of("pythia-70m.Q4_K_M.bin") is None
    assert gguf_model_id("mradermacher/pythia-70m-GGUF", "pythia-70m.Q8_0.gguf") == "mradermacher--pythia-70m.Q8_0"
    assert gguf_model_id("a/b", "c.Q8_0.gguf", "0123456789abcdef0123456789abcdef01234567") == "a--c.Q8_0@0123456789ab"


def test_the_shipped_catalog_lists_the_public_gguf_files_without_sizes_or_hashes(tmp_path):
    catalog = Catalog.load(SHIPPED, cache=tmp_path / "none.json")
    ggufs = [e for e in catalog if e.format == "gguf"]
    repos = {e.repo for e in ggufs}
    for repo in ("mradermacher/pythia-70m-GGUF", "mradermacher/pythia-70m-deduped-GGUF", "mradermacher/pythia-410m-GGUF",
                 "tensorblock/pythia-70m-v0-GGUF", "mav23/pythia-1.4b-GGUF", "mradermacher/dolly-v2-3b-GGUF",
                 "mradermacher/stablelm-tuned-alpha-7b-GGUF", "mav23/RedPajama-INCITE-Chat-3B-v1-GGUF"):
        assert repo in repos
    assert all(e.size is None and e.sha256 is None and e.tokenizer is None for e in ggufs)
    assert len({e.id for e in catalog}) == len(catalog)
    by_id = {e.id: e for e in ggufs}
    assert by_id["mradermacher--pythia-70m.Q4_K_M"].path == "pythia-70m.Q4_K_M.gguf"
    assert by_id["warriorknight3--pythia-70m-q4_k_m"].quant == "Q4_K_M"
    assert "removed" in by_id["mradermacher--dolly-v2-3b.Q4_0_4_4"].refused
    assert "IQ3_S" in by_id["mradermacher--pythia-410m.IQ3_M"].refused
    assert not by_id["mradermacher--pythia-410m.IQ4_XS"].refused
    small, large = by_id["mradermacher--pythia-70m.Q8_0"], by_id["mradermacher--stablelm-tuned-alpha-7b.Q8_0"]
    assert small.ram_estimate < 1 << 30 < 10 << 30 < large.ram_estimate
    assert small.params == 70_426_624                              # Pythia 70M's card
    legacy = catalog.get("pythia-70m-deduped-q4_0")                # the legacy entries are unchanged
    assert legacy.format == "ggml" and legacy.tokenizer is not None and legacy.approx_size


def test_a_refresh_fills_in_sizes_and_the_discovered_repositories_files(hub, tmp_path, gguf_bytes):
    from app.models.connection import HttpClient
    from app.models.hub import Hub
    hub.add_file("test/found-GGUF", "main", "demo.Q4_K_M.gguf", b"x" * 100)
    hub.add_file("test/found-GGUF", "main", "demo.i1-IQ2_M.gguf", b"y" * 100)
    hub.add_file("test/found-GGUF", "main", "demo.imatrix.dat", b"z" * 100)
    hub.add_file("test/found-GGUF", "main", "README.md", b"readme", lfs=False)
    shipped, cache = write_catalog(tmp_path / "catalog.json"), tmp_path / "cache.json"
    assert Catalog.refresh(Hub(HttpClient(hub.endpoint)), shipped, cache) == []
    catalog = Catalog.load(shipped, cache)
    assert catalog.get(MODEL_ID).size == len(gguf_bytes)
    assert catalog.get(MODEL_ID).sha256 == hashlib.sha256(gguf_bytes).hexdigest()
    found = {e.path: e for e in catalog if e.repo == "test/found-GGUF"}
    assert set(found) == {"demo.Q4_K_M.gguf", "demo.i1-IQ2_M.gguf"}
    assert found["demo.Q4_K_M.gguf"].size == 100 and not found["demo.Q4_K_M.gguf"].refused
    assert "IQ2" in found["demo.i1-IQ2_M.gguf"].refused and found["demo.i1-IQ2_M.gguf"].name.endswith("(test, imatrix)")


@pytest.mark.parametrize("change, message", [
    (lambda g: g.pop("file"), "has no 'file'"),
    (lambda g: g.update(file=""), "has no 'file'"),
    (lambda g: g.update(type="Q9_X"), "names the unknown type 'Q9_X'"),
    (lambda g: g.pop("type"), "names the unknown type None"),
    (lambda g: g.update(model="pythia-99b"), "names the model 'pythia-99b', which 'models' lacks"),
    (lambda g: g.update(file="../up.gguf"), "must be a .gguf path inside the repository"),
    (lambda g: g.update(sha256="abc"), "not a SHA-256"),
])
def test_a_malformed_gguf_entry_is_refused_with_a_message(tmp_path, change, message):
    path = write_catalog(tmp_path / "catalog.json")
    doc = json.loads(path.read_text())
    change(doc["gguf"][0])
    path.write_text(json.dumps(doc))
    with pytest.raises(CatalogError, match=message.replace("(", r"\(").replace(".", r"\.")):
        Catalog.load(path, cache=tmp_path / "none.json")


def test_a_gguf_entry_without_a_tokenizer_model_is_fine_but_a_legacy_one_needs_it(tmp_path):
    path = write_catalog(tmp_path / "catalog.json")
    doc = json.loads(path.read_text())
    doc["entries"] = [{"id": "x", "name": "X", "model": "demo", "repo": "a/b", "revision": "main", "path": "x.bin",
                       "size": None, "sha256": None, "era": "ggmlv3", "quant": "q4_0", "qnt_version": 2,
                       "license": "mit"}]
    path.write_text(json.dumps(doc))
    with pytest.raises(CatalogError, match="'demo' has no 'tokenizer'"):
        Catalog.load(path, cache=tmp_path / "none.json")


def test_unknown_usage_is_a_usage_error(manager):
    with pytest.raises(UsageError, match="not the path of a .gguf file"):
        manager.add_gguf(REPO, "weights.bin")


def test_a_crash_after_the_rename_is_recorded_with_its_commit_on_the_next_start(manager, hub, gguf_bytes, monkeypatch,
                                                                                 tmp_path):
    def crash(record):
        raise RuntimeError("power cut")
    monkeypatch.setattr(manager, "_record", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        manager.add_gguf(REPO, FILE)
    assert manager.manifest.get(MODEL_ID) is None and (manager.models_dir / f"{MODEL_ID}.gguf").is_file()
    again = ModelManager(manager.models_dir, hub.endpoint, catalog_path=manager.catalog_path,
                         cache_dir=tmp_path / "cache")
    assert again.recover() == [f"{MODEL_ID}: finished the download interrupted after it was verified"]
    record = again.manifest.get(MODEL_ID)
    assert (record.commit, record.path, record.output_type) == (hub.commit_of(REPO, "main"), FILE, "Q5_1")
    assert record.sha256 == hashlib.sha256(gguf_bytes).hexdigest()
