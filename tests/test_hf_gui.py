"""The app side of issue 15: "Add from Hugging Face", revisions grouped in the model list, "Compare checkpoints"."""
from __future__ import annotations

import csv

import pytest
from PySide6.QtCore import Qt

from app.models.hf_repos import pythia_steps
from app.models.manager import ModelManager
from app.settings import Settings
from app.widgets.modelpicker import ACTION, ModelPicker
from hf_checkpoints import REPO, hub  # noqa: F401  (hub: the pytest fixture)

WAIT = 60000


@pytest.fixture
def picker(qtbot, hub, tmp_path, monkeypatch):
    monkeypatch.setenv("NEOX_WRITER_HOME", str(tmp_path / "home"))
    manager = ModelManager(tmp_path / "models", hub.endpoint, stall_timeout=2.0, retries=2, backoff=0.01)
    widget = ModelPicker(manager_factory=lambda: manager)
    widget.settings = Settings()
    widget.saved = []
    widget.save_settings = lambda: widget.saved.append(widget.settings.get("hf_checkpoint_policy"))
    qtbot.addWidget(widget)
    return widget


def install(qtbot, dialog, repo, revision, out_type="f16"):
    dialog.repo.setCurrentText(repo)
    dialog.revision.setCurrentText(revision)
    dialog.out_type.setCurrentText(out_type)
    with qtbot.waitSignal(dialog.installer.finished, timeout=WAIT) as done:
        dialog.install_button.click()
        assert not dialog.install_button.isEnabled() and dialog.cancel_button.isEnabled()
    return done.args


def test_pythia_repositories_offer_their_training_steps(qtbot, picker):
    dialog = picker.open_hf_dialog()
    dialog.repo.setCurrentText("EleutherAI/pythia-410m-deduped")
    items = [dialog.revision.itemText(i) for i in range(dialog.revision.count())]
    assert items == ["main", *pythia_steps()]
    dialog.repo.setCurrentText("databricks/dolly-v2-3b")
    assert [dialog.revision.itemText(i) for i in range(dialog.revision.count())] == ["main"]
    assert dialog.repo.findText("togethercomputer/RedPajama-INCITE-Chat-7B-v1") >= 0
    assert [dialog.out_type.itemText(i) for i in range(1, 5)] == ["f16", "q8_0", "q5_1", "q4_0"]


def test_add_from_hugging_face_groups_revisions_with_provenance(qtbot, picker, hub):
    dialog = picker.open_hf_dialog()
    assert install(qtbot, dialog, REPO, "step1000") == ["pythia-tiny@step1000-f16", ""]
    assert "Installed pythia-tiny@step1000-f16" in dialog.status.text()
    assert dialog.ask.isVisibleTo(dialog)                      # asked, since nothing was remembered
    dialog.remember.setChecked(True)
    dialog.keep_button.click()
    assert picker.saved == ["keep"] and not dialog.ask.isVisibleTo(dialog)
    assert install(qtbot, dialog, REPO, "step2000", "q8_0")[1] == ""
    assert not dialog.ask.isVisibleTo(dialog)                  # the kept answer: not asked again

    qtbot.waitUntil(lambda: picker.item_for("pythia-tiny@step2000-q8_0") is not None, timeout=WAIT)
    group = picker.item_for("pythia-tiny@step1000-f16").parent()
    assert group.text(0) == REPO and group.parent().text(0) == "Installed"
    assert [group.child(i).text(0) for i in range(group.childCount())] == ["step1000 · f16", "step2000 · q8_0"]
    tip = group.child(0).toolTip(0)
    assert hub.commit_of(REPO, "step1000") in tip and "model.safetensors" in tip and "output f16" in tip
    with qtbot.waitSignal(picker.modelChosen) as chosen:
        picker.tree.itemClicked.emit(group.child(0), ACTION)
    assert chosen.args[0].endswith("pythia-tiny@step1000-f16.bin")
    assert chosen.args[1].endswith("pythia-tiny@step1000-f16.tokenizer.json")


def test_refusals_and_deleting_the_checkpoint(qtbot, picker):
    dialog = picker.open_hf_dialog()
    model_id, error = install(qtbot, dialog, "test/llama", "main")
    assert model_id == "" and "LlamaForCausalLM" in error and "LlamaForCausalLM" in dialog.status.text()
    model_id, error = install(qtbot, dialog, REPO, "step999")
    assert "has no revision 'step999'" in dialog.status.text()
    install(qtbot, dialog, REPO, "step3000", "q4_0")
    folder = picker.installer().last.checkpoint_dir
    assert folder.is_dir()
    with qtbot.waitSignal(dialog.installer.checkpointDeleted, timeout=WAIT) as deleted:
        dialog.delete_button.click()
    assert deleted.args == [True] and not folder.exists()
    assert picker.saved == []                               # not remembered: asked again next time


def test_an_install_right_after_the_last_one_finished_starts(qtbot, picker, monkeypatch):
    """The install thread outlives its `finished` signal by a moment (here 1 s): an install asked
    for meanwhile must start, not be dropped with the Install button left disabled (seen in CI)."""
    import time

    import app.hfinstall as hfinstall
    emit = hfinstall.emit_from_thread

    def emit_then_linger(signal, *args):
        emit(signal, *args)
        if len(args) == 2:           # `finished`: the thread's last act before it returns
            time.sleep(1.0)
    monkeypatch.setattr(hfinstall, "emit_from_thread", emit_then_linger)
    dialog = picker.open_hf_dialog()
    install(qtbot, dialog, REPO, "step999")
    assert "has no revision 'step999'" in dialog.status.text()
    assert install(qtbot, dialog, REPO, "step1000") == ["pythia-tiny@step1000-f16", ""]
    assert dialog.install_button.isEnabled()


def test_compare_three_revisions_side_by_side_and_export(qtbot, picker, tmp_path):
    dialog = picker.open_hf_dialog()
    for revision in ("step1000", "step2000", "step3000"):
        assert install(qtbot, dialog, REPO, revision)[1] == ""
    view = picker.open_comparison()
    qtbot.waitUntil(lambda: view.revisions.count() == 3, timeout=WAIT)
    assert view.model.currentText() == REPO
    assert view.missing.itemText(0) == "main" and view.missing.findText("step2000") == -1
    view.missing.setCurrentText("step4000")
    with qtbot.waitSignal(view.addRequested) as add:
        view.findChild(type(view.run_button), "compareAddButton").click()
    assert add.args == [REPO, "step4000"] and picker.hf_dialog.repo.currentText() == REPO
    assert picker.hf_dialog.revision.currentText() == "step4000"
    view.prompt.setPlainText("Hello world, the")
    view.n_tokens.setValue(5)
    with qtbot.waitSignal(view.runFinished, timeout=WAIT) as finished:
        view.run_button.click()
    assert finished.args == [""] and view.status.text() == "3 revision(s) compared"
    table = view.table
    assert table.columnCount() == 3
    assert [table.horizontalHeaderItem(c).text() for c in range(3)] == ["step1000", "step2000", "step3000"]
    for c, result in enumerate(view.results):
        assert table.item(1, c).text() == f"{result.perplexity:.2f}"
        assert table.item(2, c).text() == result.text
        assert table.item(3, c).text().endswith(f"{result.steps[0].prob:.3f}")
    md, csv_path = tmp_path / "c.md", tmp_path / "c.csv"
    with qtbot.waitSignal(view.exported, timeout=WAIT):
        view.export(str(md), "markdown")
    with qtbot.waitSignal(view.exported, timeout=WAIT):
        view.export(str(csv_path), "csv")
    assert "| | step1000 | step2000 | step3000 |" in md.read_text()
    rows = list(csv.DictReader(csv_path.open()))
    assert {r["revision"] for r in rows} == {"step1000", "step2000", "step3000"}
    # no more than six at once
    view.revisions.item(0).setCheckState(Qt.Unchecked)
    assert len(view.chosen()) == 2


def test_cancel_keeps_the_partial_download_and_install_again_resumes(qtbot, picker, hub):
    dialog = picker.open_hf_dialog()
    hub.rate = 100_000                                  # slow enough to press Cancel mid-file
    dialog.repo.setCurrentText(REPO)
    dialog.revision.setCurrentText("step1000")
    progress = []
    dialog.installer.progress.connect(lambda *a: progress.append(a))
    with qtbot.waitSignal(dialog.installer.finished, timeout=WAIT) as done:
        dialog.install_button.click()
        qtbot.waitUntil(lambda: any(p[0] == "download" and p[1] > 0 and "model.safetensors" in p[3]
                                    for p in progress), timeout=WAIT)
        dialog.cancel_button.click()
    assert done.args[0] == "" and "paused" in done.args[1] and "paused" in dialog.status.text()
    assert dialog.install_button.isEnabled() and picker.manager().manifest.models == {}
    hub.rate = None
    assert install(qtbot, dialog, REPO, "step1000")[1] == ""
    weights = hub.files[(REPO, "step1000", "model.safetensors")].sha256
    ranges = [r for m, p, r in hub.requests if p == f"/cdn/{weights}" and m == "GET"]
    assert ranges[0] is None and ranges[-1] is not None and ranges[-1].startswith("bytes=")


def test_a_remembered_delete_deletes_without_asking(qtbot, picker):
    picker.settings.set("hf_checkpoint_policy", "delete")
    dialog = picker.open_hf_dialog()
    assert install(qtbot, dialog, REPO, "step2000", "q5_1")[1] == ""
    assert picker.installer().last.checkpoint_dir is None and not dialog.ask.isVisibleTo(dialog)
    downloads = picker.manager().models_dir / "hf-downloads"
    assert not downloads.exists() or not any(downloads.rglob("*.safetensors"))


def test_compare_offers_the_missing_pythia_steps(qtbot, picker):
    from app.widgets.comparisonview import ComparisonView
    view = ComparisonView(picker.manager)
    qtbot.addWidget(view)
    rev = {"label": "step1000 (q4_0)", "revision": "step1000", "path": "/x.bin", "tokenizer": "", "commit": "c" * 40}
    view.on_models_ready({"EleutherAI/pythia-70m": [rev]}, "")
    offered = [view.missing.itemText(i) for i in range(view.missing.count())]
    assert len(offered) == 154 and "step1000" not in offered and offered[:2] == ["main", "step0"]
    assert [c.label for c in view.chosen()] == ["step1000"]
