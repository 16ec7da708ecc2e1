"""ModelManager: catalog refresh, download with tokenizer, crash recovery, import, verify, remove."""
from __future__ import annotations

import hashlib
import json
import os

import pytest

from app import paths
from app.models import download as download_module
from app.models.catalog import Catalog
from app.models.download import DownloadError, part_path, sidecar_path
from app.models.manager import ModelError, ModelManager, UnknownModel, UsageError
from app.models.manifest import Manifest
from http_fixture_server import Fault, HubFixture
from modelgen import write_random_model

GGML_REPO = "test/Pythia-GGML"
PINNED = "c287c846671a277b06d9db47f802078105748784"
TOKENIZER = json.dumps({"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}).encode()


def write_catalog(path, shipped_sha=None):
    shape = {"n_vocab": 96, "n_ctx": 64, "n_embd": 64, "n_head": 4, "n_layer": 2}
    models = {"pythia-70m-deduped": dict(shape, display="tiny", tokenizer={"repo": "test/tok-70m"}),
              "pythia-160m-deduped": dict(shape, display="tiny2", tokenizer={"repo": "test/tok-missing"})}
    common = {"repo": GGML_REPO, "size": None, "sha256": None, "license": "apache-2.0", "qnt_version": 0}
    entries = [
        dict(common, id="tiny", name="Tiny", model="pythia-70m-deduped", revision="main", path="tiny.bin",
             era="ggmlv3", quant="f32"),
        dict(common, id="tiny-old", name="Tiny old", model="pythia-70m-deduped", revision=PINNED,
             path="2023-05-15/tiny.bin", era="E4", quant="f32"),
        dict(common, id="tiny-known", name="Tiny known", model="pythia-70m-deduped", revision="main",
             path="known.bin", era="ggmlv3", quant="f32", sha256=shipped_sha),
        dict(common, id="no-tokenizer", name="No tokenizer", model="pythia-160m-deduped", revision="main",
             path="notok.bin", era="ggmlv3", quant="f32"),
        dict(common, id="plain", name="Served without LFS", model="pythia-70m-deduped", revision="main",
             path="plain.bin", era="ggmlv3", quant="f32"),
    ]
    discover = [{"repo": GGML_REPO, "revision": PINNED, "folder": "2023-04-20", "era": "E1", "qnt_version": 0,
                 "quants": ["q4_3"], "license": "apache-2.0"}]
    path.write_text(json.dumps({"format": 1, "models": models, "entries": entries, "discover": discover}))
    return path


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("gen") / "tiny.bin"
    write_random_model(path, ftype="f32")
    return path.read_bytes()


@pytest.fixture
def hub(model_bytes):
    with HubFixture() as server:
        server.add_file(GGML_REPO, "main", "tiny.bin", model_bytes)
        server.add_file(GGML_REPO, "main", "known.bin", model_bytes)
        server.add_file(GGML_REPO, "main", "notok.bin", model_bytes)
        server.add_file(GGML_REPO, "main", "plain.bin", model_bytes, lfs=False)
        server.add_file(GGML_REPO, PINNED, "2023-05-15/tiny.bin", model_bytes[:-1] + b"\x00")
        server.add_file(GGML_REPO, PINNED, "2023-04-20/ggml-pythia-70m-deduped-q4_3.bin", b"old era bytes")
        server.add_file(GGML_REPO, PINNED, "2023-04-20/README.md", b"not a model", lfs=False)
        server.add_file("test/tok-70m", "main", "tokenizer.json", TOKENIZER, lfs=False)
        yield server


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("NEOX_WRITER_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def manager(hub, tmp_path, endpoint=None, **kw):
    catalog = write_catalog(tmp_path / "catalog.json", kw.pop("shipped_sha", None))
    options = dict(stall_timeout=1.0, retries=2, backoff=0.01)
    options.update(kw)
    return ModelManager(None, endpoint or hub.endpoint, catalog_path=catalog, **options)


def test_paths_move_under_neox_writer_home(home):
    assert paths.models_dir() == home / "data" / "models"
    assert paths.stories_dir() == home / "data" / "stories"
    assert paths.tokenizers_dir() == home / "cache" / "tokenizers"
    assert paths.config_dir() == home / "config"


def test_download_installs_model_and_tokenizer_once(hub, home, tmp_path, model_bytes):
    m = manager(hub, tmp_path)
    result = m.download("tiny")
    assert result.warnings == []
    record = result.record
    assert record.sha256 == hashlib.sha256(model_bytes).hexdigest() and record.verified_against == "hub HEAD"
    assert m.installed_path("tiny").read_bytes() == model_bytes
    assert m.installed_path("tiny").parent == home / "data" / "models"
    assert record.tokenizer and open(record.tokenizer, "rb").read() == TOKENIZER
    assert record.tokenizer.startswith(str(home / "cache" / "tokenizers"))
    reread = Manifest.load(home / "data" / "models" / "manifest.json").get("tiny")
    assert reread == record
    before = len(hub.requests)
    m.download("tiny-known", allow_unverified=True)   # same tokenizer repo: not fetched again
    assert not any("tok-70m" in r[1] for r in hub.requests[before:])
    rows = {r.id: r for r in m.statuses()}
    assert rows["tiny"].installed and not rows["tiny-old"].installed


def test_refresh_fills_sizes_hashes_and_discovers_dated_files(hub, home, tmp_path, model_bytes):
    m = manager(hub, tmp_path)
    assert m.catalog.get("tiny").sha256 is None
    assert m.catalog.get("pythia-70m-deduped-q4_3-2023-04-20") is None
    assert m.refresh_catalog() == []
    tiny = m.catalog.get("tiny")
    assert tiny.sha256 == hashlib.sha256(model_bytes).hexdigest() and tiny.size == len(model_bytes)
    assert tiny.facts_from.startswith("hub tree")
    found = m.catalog.get("pythia-70m-deduped-q4_3-2023-04-20")
    assert found.revision == PINNED and found.path == "2023-04-20/ggml-pythia-70m-deduped-q4_3.bin"
    assert found.era == "E1" and found.size == len(b"old era bytes")
    # offline: the refresh fails, the cached facts stay
    hub.stop()
    offline = manager(hub, tmp_path)
    errors = offline.refresh_catalog()
    assert errors and all("cannot reach" in e for e in errors)
    assert offline.catalog.get("tiny").sha256 == tiny.sha256


def test_pinned_revision_mismatch_is_rejected_and_nothing_installed(hub, home, tmp_path, model_bytes):
    m = manager(hub, tmp_path, shipped_sha=hashlib.sha256(b"something else").hexdigest())
    with pytest.raises(DownloadError, match="does not match"):
        m.download("tiny-known")
    assert m.manifest.get("tiny-known") is None
    assert [p.name for p in m.models_dir.iterdir()] == []


def test_no_known_hash_is_refused_unless_allowed(hub, home, tmp_path, model_bytes):
    m = manager(hub, tmp_path)
    with pytest.raises(DownloadError, match="no SHA-256 is known"):
        m.download("plain")
    result = m.download("plain", allow_unverified=True)
    assert result.record.verified_against.startswith("nothing")


def test_missing_file_and_missing_tokenizer(hub, home, tmp_path):
    m = manager(hub, tmp_path)
    with pytest.raises(UnknownModel):
        m.download("nope")
    hub.files.pop((GGML_REPO, "main", "tiny.bin"))
    with pytest.raises(DownloadError, match="is not on .* \\(HTTP 404\\)"):
        m.download("tiny")
    result = m.download("no-tokenizer")
    assert m.manifest.get("no-tokenizer").tokenizer is None
    assert len(result.warnings) == 1 and "HTTP 404" in result.warnings[0]


class Crash(BaseException):
    """Stands in for the process dying at a chosen point."""


def test_manifest_survives_a_crash_between_download_and_rename(hub, home, tmp_path, monkeypatch, model_bytes):
    m = manager(hub, tmp_path)
    def crash(src, dst):
        raise Crash()
    with monkeypatch.context() as patch, pytest.raises(Crash):
        patch.setattr(download_module, "replace_durably", crash)
        m.download("tiny")
    dest = m.models_dir / "tiny.bin"
    assert part_path(dest).stat().st_size == len(model_bytes) and not dest.exists()
    restarted = manager(hub, tmp_path)
    assert restarted.manifest.get("tiny") is None
    messages = restarted.recover()
    assert messages == ["tiny: finished the download interrupted after it was verified"]
    assert restarted.installed_path("tiny").read_bytes() == model_bytes
    assert not part_path(dest).exists() and not sidecar_path(dest).exists()
    assert Manifest.load(m.models_dir / "manifest.json").get("tiny").sha256 == hashlib.sha256(model_bytes).hexdigest()


def test_manifest_survives_a_crash_between_rename_and_record(hub, home, tmp_path, monkeypatch, model_bytes):
    m = manager(hub, tmp_path)
    def crash(self, record):
        raise Crash()
    with monkeypatch.context() as patch, pytest.raises(Crash):
        patch.setattr(Manifest, "put", crash)
        m.download("tiny")
    restarted = manager(hub, tmp_path)
    assert restarted.manifest.get("tiny") is None
    assert restarted.recover() == ["tiny: finished the download interrupted after it was verified"]
    assert restarted.manifest.get("tiny").size == len(model_bytes)


def test_recover_keeps_an_incomplete_part_and_deletes_a_corrupt_complete_one(hub, home, tmp_path, model_bytes):
    m = manager(hub, tmp_path, retries=0)
    hub.inject(Fault("drop", after=1000))
    with pytest.raises(DownloadError):
        m.download("tiny")
    restarted = manager(hub, tmp_path)
    assert restarted.recover() == []
    dest = m.models_dir / "tiny.bin"
    assert part_path(dest).stat().st_size == 1000
    assert {r.id: r.partial_bytes for r in restarted.statuses()}["tiny"] == 1000
    part_path(dest).write_bytes(b"\x00" * len(model_bytes))   # complete length, wrong content
    messages = manager(hub, tmp_path).recover()
    assert "does not match SHA-256" in messages[0] and not part_path(dest).exists()


def test_import_validates_copies_links_and_matches_the_catalog(hub, home, tmp_path, model_bytes):
    m = manager(hub, tmp_path, shipped_sha=hashlib.sha256(model_bytes).hexdigest())
    source = tmp_path / "my model.bin"
    source.write_bytes(model_bytes)
    record = m.import_file(source)
    assert record.id == "tiny-known" and record.origin == "import"   # recognised by its SHA-256
    assert m.installed_path("tiny-known").read_bytes() == model_bytes
    other = tmp_path / "other.bin"
    write_random_model(other, ftype="f32", seed=5)
    linked = m.import_file(other, link=True)
    assert linked.id == "local-other" and "hard link" in linked.verified_against
    assert os.path.samefile(other, m.installed_path("local-other"))
    with pytest.raises(ModelError, match="already installed"):
        m.import_file(other)
    assert [r.ok for r in m.verify()] == [True, True]


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_corrupt_local_file_is_refused(hub, home, tmp_path, model_bytes, damage):
    m = manager(hub, tmp_path)
    bad = tmp_path / "bad.bin"
    bad.write_bytes(model_bytes[:len(model_bytes) // 2] if damage == "truncated" else b"lmgg" + b"\x07" * 200)
    with pytest.raises(ModelError, match="refused to import .*bad.bin"):
        m.import_file(bad)
    assert m.manifest.models == {} and [p.name for p in m.models_dir.iterdir()] == []
    with pytest.raises(UsageError, match="no such file"):
        m.import_file(tmp_path / "absent.bin")


def test_verify_detects_a_changed_file_and_remove_deletes(hub, home, tmp_path):
    m = manager(hub, tmp_path)
    m.download("tiny")
    path = m.installed_path("tiny")
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))
    (result,) = m.verify(["tiny"])
    assert not result.ok and "the file changed" in result.message
    assert m.remove("tiny") == [str(path)]
    assert not path.exists() and m.manifest.get("tiny") is None
    with pytest.raises(UsageError):
        m.remove("tiny")
    with pytest.raises(UnknownModel):
        m.verify(["tiny"])


def test_an_unreadable_manifest_is_moved_aside(home, tmp_path, hub):
    models = home / "data" / "models"
    models.mkdir(parents=True)
    (models / "manifest.json").write_text("{not json")
    m = manager(hub, tmp_path)
    assert m.manifest.models == {} and "could not be read" in m.manifest.warnings[0]
    assert any(p.name.startswith("manifest.json.unreadable-") for p in models.iterdir())


def test_shipped_catalog_facts(tmp_path):
    catalog = Catalog.load(cache=tmp_path / "no-cache.json")
    root = catalog.get("pythia-70m-deduped-q4_0")
    assert root.path == "ggmlv3-pythia-70m-deduped-q4_0.bin" and root.revision == "main"
    assert root.sha256 is None and root.size is None     # nothing guessed
    assert root.params == 70_426_624                     # spec §11: equals the model card
    assert abs(root.approx_size - 40.3e6) < 0.2e6        # the "≈ 40.3 MB"
    assert abs(catalog.get("pythia-410m-deduped-q5_1").approx_size - 306e6) < 1.5e6
    old = catalog.get("pythia-1.4b-deduped-q5_1-2023-05-15")
    assert old.revision == "c287c846671a277b06d9db47f802078105748784"
    assert old.path == "2023-05-15/ggml-pythia-1.4b-deduped-q5_1.bin" and old.qnt_version == 1
    assert old.tokenizer.repo == "EleutherAI/pythia-1.4b-deduped" and old.license == "apache-2.0"
