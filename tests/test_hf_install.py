"""Installing GPT-NeoX checkpoints from a (fixture) Hugging Face hub at a revision: add-hf end to end."""
from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

import engine
from app.models import cli
from app.models.connection import HttpClient
from app.models.download import ChecksumMismatch, DiskFullError
from app.models.hf_repos import KNOWN_REPOS, is_pythia, pythia_steps
from app.models.hub import Hub, RevisionNotFound
from app.models.manager import ModelError, ModelManager, UsageError
from engine.convert import ConversionCancelled, ConversionControl, convert_hf, partial_paths
from hf_checkpoints import (REPO, TINY, bf16_bits, hub,  # noqa: F401  (hub: the fixture)
                            revision_tensors, safetensors_bytes)
from http_fixture_server import Fault

TOKENS = [1, 5, 9, 77, 200, 3, 14, 15, 92, 65, 35, 89]


@pytest.fixture
def manager(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("NEOX_WRITER_HOME", str(tmp_path / "home"))
    return ModelManager(tmp_path / "models", hub.endpoint, stall_timeout=1.0, retries=3, backoff=0.01)


def float_forward(tensors, tmp_path, name, bf16=False):
    """Logits of a float32 forward of exactly the hosted weights (stored f16 or bf16, widened to f32)."""
    folder = tmp_path / f"{name}-float"
    folder.mkdir()
    for f in ("config.json", "tokenizer.json"):
        shutil.copy(TINY / f, folder / f)
    widened = {k: (bf16_bits(v).astype(np.uint32) << 16).view(np.float32) if bf16
               else np.asarray(v, np.float16).astype(np.float32) for k, v in tensors.items()}
    (folder / "model.safetensors").write_bytes(safetensors_bytes(widened, np.float32))
    convert_hf(folder, folder / "f32.bin", "f32")
    return engine.load_model(folder / "f32.bin", backend="reference").logits(TOKENS)


def rel_err(got, ref) -> float:
    return float(np.abs(got - ref).max() / np.abs(ref).max())


def test_known_repositories_and_pythia_steps():
    steps = pythia_steps()
    assert len(steps) == 154 and steps[:5] == ["step0", "step1", "step2", "step4", "step8"]
    assert steps[10] == "step512" and steps[11] == "step1000" and steps[-1] == "step143000"
    assert "EleutherAI/pythia-1.4b-deduped" in KNOWN_REPOS and "EleutherAI/pythia-12b-v0" in KNOWN_REPOS
    assert "databricks/dolly-v2-12b" in KNOWN_REPOS and "EleutherAI/gpt-neox-20b" in KNOWN_REPOS
    assert "togethercomputer/RedPajama-INCITE-Chat-3B-v1" in KNOWN_REPOS
    assert "stabilityai/stablelm-tuned-alpha-7b" in KNOWN_REPOS
    assert is_pythia("EleutherAI/pythia-160m-deduped-v0") and not is_pythia("databricks/dolly-v2-3b")


def test_revisions_resolve_and_the_tree_carries_lfs_oids(hub):
    api = Hub(HttpClient(hub.endpoint))
    commit = hub.commit_of(REPO, "step1000")
    assert api.resolve_revision(REPO, "step1000") == commit
    assert api.resolve_revision(REPO, "v1.0") == commit                 # a tag
    assert api.resolve_revision(REPO, commit) == commit                 # a commit id
    assert api.resolve_revision(REPO, "step2000") != commit
    tree = api.tree(REPO, commit)
    weights = hub.files[(REPO, "step1000", "model.safetensors")]
    assert tree["model.safetensors"].sha256 == weights.sha256 and tree["model.safetensors"].size == len(weights.data)
    assert tree["config.json"].sha256 is None and tree["config.json"].git_oid == hub.files[
        (REPO, "step1000", "config.json")].git_oid
    with pytest.raises(RevisionNotFound, match="has no revision 'step999'"):
        api.resolve_revision(REPO, "step999")
    with pytest.raises(RevisionNotFound, match="repository test/nothing was not found"):
        api.resolve_revision("test/nothing", "main")


def test_revisions_hold_different_weights_and_install_with_provenance(manager, hub, tmp_path):
    first = manager.add_hf(REPO, "step1000", "f16")
    second = manager.add_hf(REPO, "v1.0", "f16")              # the same commit under its tag: same weights
    third = manager.add_hf(REPO, "step2000", "f16")
    a, b = first.record, third.record
    assert a.id == "pythia-tiny@step1000-f16" and b.id == "pythia-tiny@step2000-f16"
    assert a.commit == hub.commit_of(REPO, "step1000") and b.commit == hub.commit_of(REPO, "step2000")
    assert second.record.commit == a.commit and second.record.sha256 == a.sha256
    assert a.sha256 != b.sha256
    assert a.source_sha256["model.safetensors"] == hub.files[(REPO, "step1000", "model.safetensors")].sha256
    assert a.output_type == "f16" and a.engine_version.startswith("neox-writer ") and a.origin == "huggingface"
    path = manager.models_dir / a.file
    assert hashlib.sha256(path.read_bytes()).hexdigest() == a.sha256
    assert a.tokenizer.endswith("pythia-tiny@step1000-f16.tokenizer.json")
    for record, seed in ((a, 1), (b, 2)):
        got = engine.load_model(manager.models_dir / record.file, backend="reference").logits(TOKENS)
        ref = float_forward(revision_tensors(seed), tmp_path, record.id)
        assert rel_err(got, ref) < 1e-3
    other = float_forward(revision_tensors(2), tmp_path, "other")
    mine = engine.load_model(manager.models_dir / a.file, backend="reference").logits(TOKENS)
    assert rel_err(mine, other) > 1e-2                         # the revisions really differ
    assert [m.revision for m in manager.revisions(REPO)] == ["step1000", "v1.0", "step2000"]
    again = manager.add_hf(REPO, "step1000", "f16")
    assert again.already_installed


@pytest.mark.parametrize("repo", ["test/neox-sharded-st", "test/neox-sharded-bin", "test/neox-bin",
                                  "test/neox-bf16"])
def test_sharded_and_pickled_checkpoints_convert_to_the_same_model(manager, hub, repo, tmp_path):
    result = manager.add_hf(repo, "main", "f16")
    got = engine.load_model(manager.models_dir / result.record.file, backend="reference").logits(TOKENS)
    assert rel_err(got, float_forward(revision_tensors(3), tmp_path, "three", bf16=repo.endswith("bf16"))) < 1e-3
    shards = [p for p in result.record.source_sha256 if p.endswith((".safetensors", ".bin"))]
    assert len(shards) == (3 if "sharded" in repo else 1)


@pytest.mark.parametrize("fault", ["drop", "stall"])
def test_a_connection_dropped_or_stalled_mid_shard_resumes(manager, hub, fault):
    shard = hub.files[("test/neox-sharded-st", "main", "model-00002-of-00003.safetensors")]
    # a stall outlasts the 1 s watchdog of the manager fixture
    hub.inject(Fault(fault, match=f"/cdn/{shard.sha256}", after=len(shard.data) // 2, seconds=4))
    result = manager.add_hf("test/neox-sharded-st", "main", "q8_0")
    ranges = [r for m, p, r in hub.requests if p == f"/cdn/{shard.sha256}" and m == "GET"]
    assert ranges == [None, f"bytes={len(shard.data) // 2}-"]
    assert result.record.source_sha256["model-00002-of-00003.safetensors"] == shard.sha256


def test_a_wrong_oid_installs_nothing(manager, hub):
    shard = hub.files[("test/neox-sharded-st", "main", "model-00003-of-00003.safetensors")]
    hub.inject(Fault("corrupt", match=f"/cdn/{shard.sha256}", after=100, times=10))
    with pytest.raises(ChecksumMismatch, match="does not match the expected"):
        manager.add_hf("test/neox-sharded-st", "main", "f16")
    assert manager.manifest.models == {}
    assert not list(manager.models_dir.glob("*.bin"))


def test_another_architecture_is_refused_by_name(manager, hub):
    with pytest.raises(ModelError, match="config.json says the architecture is LlamaForCausalLM"):
        manager.add_hf("test/llama", "main")
    assert not [p for m, p, r in hub.requests if p.startswith("/cdn/")]       # no weights fetched


def test_a_missing_revision_and_bad_names(manager):
    with pytest.raises(ModelError, match="has no revision 'step999'"):
        manager.add_hf(REPO, "step999")
    with pytest.raises(UsageError, match="not a Hugging Face repository id"):
        manager.add_hf("https://example.com/x", "main")
    with pytest.raises(UsageError, match="output type 'q4_3'"):
        manager.add_hf(REPO, "step1000", "q4_3")
    assert manager.manifest.models == {}


def test_free_space_for_downloads_and_output_is_checked_first(manager, hub, monkeypatch):
    monkeypatch.setattr(manager.downloader, "free_space", lambda folder: manager.downloader.reserve_bytes + 1000)
    with pytest.raises(DiskFullError, match="to download and .* of f16 output"):
        manager.add_hf(REPO, "step1000", "f16")
    assert not [p for m, p, r in hub.requests if p.startswith("/cdn/")]


def test_cancelled_conversion_resumes_without_downloading_again(manager, hub):
    control = ConversionControl()
    seen = []

    def on_convert(p):
        seen.append(p)
        if p.tensors_done >= 10:
            control.cancel()
    with pytest.raises(ConversionCancelled, match="run it again to resume"):
        manager.add_hf(REPO, "step1000", "q4_0", on_convert=on_convert, conversion=control)
    dest = manager.models_dir / "pythia-tiny@step1000-q4_0.bin"
    part, journal = partial_paths(dest)
    assert part.is_file() and journal.is_file() and not dest.exists() and manager.manifest.models == {}
    fetched = len([p for m, p, r in hub.requests if p.startswith("/cdn/")])
    resumed = []
    result = manager.add_hf(REPO, "step1000", "q4_0", on_convert=resumed.append)
    assert len([p for m, p, r in hub.requests if p.startswith("/cdn/")]) == fetched    # nothing downloaded again
    assert resumed[0].resumed_at > 0 and resumed[-1].done == resumed[-1].total
    assert not part.exists() and not journal.exists()
    fresh = manager.add_hf(REPO, "step1000", "q4_0", keep_checkpoint=False)       # already there: same record
    assert fresh.already_installed and fresh.record.sha256 == result.record.sha256


def test_checkpoint_may_be_deleted_after_conversion(manager):
    result = manager.add_hf(REPO, "step2000", "q5_1", keep_checkpoint=False)
    assert result.checkpoint_dir is None
    assert not (manager.models_dir / "hf-downloads").exists() or not any((manager.models_dir / "hf-downloads").iterdir())
    assert (manager.models_dir / result.record.file).is_file()
    removed = manager.remove(result.record.id)
    assert any(r.endswith(".tokenizer.json") for r in removed)


def test_cli_add_hf_json(hub, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NEOX_WRITER_HOME", str(tmp_path / "home"))
    argv = ["--models-dir", str(tmp_path / "models"), "--endpoint", hub.endpoint, "add-hf", REPO,
            "--revision", "step2000", "--type", "q8_0", "--json"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    doc = json.loads(out[-1])
    assert set(doc) == {"id", "path", "repo", "revision", "commit", "type", "sha256"}
    assert doc["repo"] == REPO and doc["revision"] == "step2000" and doc["type"] == "q8_0"
    assert doc["commit"] == hub.commit_of(REPO, "step2000")
    with open(doc["path"], "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == doc["sha256"]
    assert cli.main(argv[:4] + ["list"]) == 0
    listed = capsys.readouterr().out
    assert "pythia-tiny@step2000-q8_0" in listed and f"{REPO}@step2000 (commit {doc['commit'][:12]}, q8_0)" in listed
    assert cli.main(argv[:4] + ["add-hf", "test/llama"]) == 1
    assert "LlamaForCausalLM" in capsys.readouterr().err
    assert cli.main(argv[:4] + ["add-hf", REPO, "--revision", "nope"]) == 1
    assert "has no revision 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("repo, template", [
    ("databricks/dolly-v2-3b", "dolly"), ("togethercomputer/RedPajama-INCITE-Chat-3B-v1", "redpajama"),
    ("togethercomputer/RedPajama-INCITE-Base-3B-v1", "plain"), ("stabilityai/stablelm-tuned-alpha-7b", "stablelm"),
    ("stabilityai/stablelm-base-alpha-7b", "plain"), ("EleutherAI/pythia-1.4b-deduped", "plain")])
def test_chat_templates_follow_the_family_of_an_installed_revision(repo, template):
    from app.chattemplates import TEMPLATES, template_for_model
    from app.models.manager import hf_model_id
    assert template_for_model(hf_model_id(repo, "main", "q4_0")).name == template
    if template == "stablelm":
        prompt = TEMPLATES["stablelm"].prompt([type("Turn", (), {"role": "user", "text": "Hi"})()], "You", "Bot")
        assert prompt.startswith("<|SYSTEM|># StableLM Tuned (Alpha version)") and prompt.endswith("<|USER|>Hi<|ASSISTANT|>")


def test_remove_clears_a_cancelled_conversion(manager):
    control = ConversionControl()
    control.cancel()
    with pytest.raises(ConversionCancelled):
        manager.add_hf(REPO, "step1000", "q8_0", conversion=control)
    part, journal = partial_paths(manager.models_dir / "pythia-tiny@step1000-q8_0.bin")
    assert part.is_file() and journal.is_file()
    assert sorted(manager.remove("pythia-tiny@step1000-q8_0")) == sorted([str(part), str(journal)])
    with pytest.raises(UsageError):
        manager.remove("../pythia-tiny@step1000-q8_0")


def test_a_malformed_index_is_refused(manager, hub):
    index = {"weight_map": {"gpt_neox.embed_in.weight": ["model-00001-of-00003.safetensors"]}}
    hub.add_file("test/neox-sharded-st", "main", "model.safetensors.index.json", json.dumps(index).encode(), lfs=False)
    with pytest.raises(ModelError, match="names unexpected shard files"):
        manager.add_hf("test/neox-sharded-st", "main", "f16")
    index = {"weight_map": {"x": "../../etc/passwd"}}
    hub.add_file("test/neox-sharded-st", "main", "model.safetensors.index.json", json.dumps(index).encode(), lfs=False)
    with pytest.raises(ModelError, match="names unexpected shard files"):
        manager.add_hf("test/neox-sharded-st", "main", "f16")
