"""The sampling panel: a slider and a spin box for every sampler of the engine, plus presets.

The rows are generated from `SAMPLER_ROWS` (app/sampler_rows.py, shared with the API server,
which refuses what the panel could not set), whose names are `engine.sampling.SamplerSettings`
fields, so `values()` feeds `SamplerSettings(**...)` directly. Sliders are integer widgets;
each row's `scale` says how many slider steps make one unit (temperature 0.70 is slider 70).
Values are read when Generate is pressed, so changes apply to the next generation.
"""
from __future__ import annotations

import math

from PySide6.QtCore import QEvent, QSize, Qt, QTimer, Signal
from PySide6.QtWidgets import (QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout, QInputDialog, QLabel,
                               QPlainTextEdit, QPushButton, QScrollArea, QSlider, QSpinBox,
                               QVBoxLayout, QWidget)

from app.sampler_rows import MAX_SEED, SAMPLER_ROWS, SamplerRow
from engine.sampling import PRESETS, SamplerSettings

DEFAULT_PRESET = "KoboldCpp default"
MAX_ALTERNATIVES = 8      # continuations per Generate (Kobold Lite offers up to 8 too)


# Settings kept as lists of strings, one per line in a text box (saved in stories and presets).
LIST_SETTINGS = ("dry_sequence_breakers", "banned_phrases")


class _RowBinding:
    """Keeps one row's slider and spin box showing the same value."""

    def __init__(self, row: SamplerRow, slider: QSlider, spin):
        self.row, self.slider, self.spin = row, slider, spin
        slider.valueChanged.connect(self.on_slider_changed)
        spin.valueChanged.connect(self.on_spin_changed)

    def on_slider_changed(self, steps: int) -> None:
        value = steps if self.row.is_int else steps / self.row.scale
        if self.spin.value() != value:
            self.spin.setValue(value)

    def on_spin_changed(self, value) -> None:
        steps = round(value * self.row.scale)
        if self.slider.value() != steps:
            self.slider.setValue(steps)

    def value(self):
        return int(self.spin.value()) if self.row.is_int else round(float(self.spin.value()), 4)

    def set_value(self, value) -> None:
        self.spin.setValue(value)


class SamplingPanel(QWidget):
    """Sampler sliders, max new tokens, context size, seed, presets and stop sequences."""

    settingsChanged = Signal()
    presetSaved = Signal(str, dict)      # name, values: the window stores user presets in settings

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("samplingPanel")
        self._user_presets: dict[str, dict] = {}
        self._bindings: dict[str, _RowBinding] = {}

        self.preset_picker = QComboBox(objectName="presetPicker")
        self.preset_picker.setToolTip("Engine presets and your own saved presets")
        # wide enough for the engine presets' names (longer names of the writer's own show in the
        # list and the tooltip), so the dock's minimum width keeps the box whole
        self.preset_picker.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.preset_picker.setMinimumContentsLength(max(len(name) for name in PRESETS))
        save_preset = QPushButton("Save…", objectName="savePresetButton")
        save_preset.setToolTip("Save the current values as a preset of your own")
        save_preset.clicked.connect(self.on_save_preset_clicked)
        preset_row = QHBoxLayout()        # a row of its own: the box takes the labels' column too
        preset_row.addWidget(QLabel("Preset"))
        preset_row.addWidget(self.preset_picker, 1)
        preset_row.addWidget(save_preset)

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
        form.addRow(preset_row)
        for row in SAMPLER_ROWS:
            form.addRow(row.label, self._make_row(row))

        self.max_tokens_spin = QSpinBox(objectName="maxTokensSpin", minimum=1, maximum=4096, value=80)
        self.max_tokens_spin.setToolTip("How many tokens one press of Generate writes at most")
        self.context_spin = QSpinBox(objectName="contextSizeSpin", minimum=64, maximum=2048,
                                     singleStep=64, value=2048)
        self.context_spin.setToolTip("Tokens of story the model sees (at most the model's context length)")
        self.seed_spin = QSpinBox(objectName="seedSpin", minimum=-1, maximum=MAX_SEED, value=-1)
        self.seed_spin.setSpecialValueText("random")
        self.seed_spin.setToolTip("-1 = a new random seed each time; any other value repeats the same text")
        self.alternatives_spin = QSpinBox(objectName="alternativesSpin", minimum=1, maximum=MAX_ALTERNATIVES, value=1)
        self.alternatives_spin.setToolTip("How many continuations one press of Generate writes: they are "
                                          "siblings in the story tree; Alt+Left / Alt+Right switch between them")
        self.stop_edit = self._lines_edit("stopSequencesEdit", "one stop sequence per line")
        self.breakers_edit = self._lines_edit("drySequenceBreakersEdit", "one DRY sequence breaker per line")
        self.breakers_edit.setToolTip("A repetition never reaches back across these (\\n is a new line)")
        self.banned_edit = self._lines_edit("bannedPhrasesEdit", "one phrase per line (at most 48)")
        self.banned_edit.setToolTip("Phrases that never appear: the generation backs up and writes something else")
        form.addRow("Max new tokens", self.max_tokens_spin)
        form.addRow("Context size", self.context_spin)
        form.addRow("Seed", self.seed_spin)
        form.addRow("Alternatives", self.alternatives_spin)
        form.addRow("Stop sequences", self.stop_edit)
        self._list_tips = {name: edit.toolTip() for name, edit in self._list_edits().items()}
        form.addRow("DRY breakers", self.breakers_edit)
        form.addRow("Banned phrases", self.banned_edit)

        inner = QWidget()
        inner.setLayout(form)
        scroll = QScrollArea(widgetResizable=True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)   # sliders shrink instead
        scroll.setWidget(inner)
        # never narrower than the rows need: the dock then cannot cut the spin boxes off
        self.scroll = scroll
        self._fit_width()
        scroll.setFrameShape(QScrollArea.NoFrame)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(scroll)

        self._fill_presets()
        self.preset_picker.currentTextChanged.connect(self.on_preset_picker_changed)
        self.apply_values(SamplerSettings.from_preset(DEFAULT_PRESET).to_dict())
        self.preset_picker.setCurrentText(DEFAULT_PRESET)
        self.context_spin.valueChanged.connect(self.on_context_spin_changed)
        self.on_context_spin_changed(self.context_spin.value())
        for widget in (self.max_tokens_spin, self.context_spin, self.seed_spin, self.alternatives_spin):
            widget.valueChanged.connect(self.settingsChanged)
        for edit in (self.stop_edit, self.breakers_edit, self.banned_edit):
            edit.textChanged.connect(self.settingsChanged)

    def _fit_width(self) -> None:
        """Never narrower than the rows need, so the dock cannot cut the spin boxes off; measured
        again when the style or font changes (a theme switch to Fusion widens the spin boxes)."""
        inner = self.scroll.widget()
        self.scroll.setMinimumWidth(inner.minimumSizeHint().width() + self.scroll.verticalScrollBar().sizeHint().width()
                                    + 4)

    def changeEvent(self, event) -> None:
        super().changeEvent(event)
        if event.type() in (QEvent.StyleChange, QEvent.FontChange) and hasattr(self, "scroll"):
            # once the children have their new style; with the panel as context, the call is dropped if
            # the panel is deleted first (it raised "Internal C++ object already deleted" in the suite)
            QTimer.singleShot(0, self, self._fit_width)

    def _lines_edit(self, object_name: str, placeholder: str) -> QPlainTextEdit:
        edit = QPlainTextEdit(objectName=object_name)
        edit.setPlaceholderText(placeholder)
        edit.setFixedHeight(self.fontMetrics().lineSpacing() * 4)
        return edit

    def _list_edits(self) -> dict:
        return {"dry_sequence_breakers": self.breakers_edit, "banned_phrases": self.banned_edit}

    def sizeHint(self) -> QSize:
        # room for the longest label, a usable slider and a spin box
        return QSize(self.fontMetrics().horizontalAdvance("M") * 30, 640)

    def _make_row(self, row: SamplerRow) -> QWidget:
        slider = QSlider(Qt.Horizontal, objectName=row.object_name)
        slider.setRange(round(row.minimum * row.scale), round(row.maximum * row.scale))
        if row.is_int:
            spin = QSpinBox(minimum=int(row.minimum), maximum=int(row.maximum))
        else:
            spin = QDoubleSpinBox(minimum=row.minimum, maximum=row.maximum, decimals=2, singleStep=0.01)
        spin.setObjectName(row.object_name.replace("Slider", "Spin"))
        for w in (slider, spin):
            w.setToolTip(row.tip)
        spin.setMinimumWidth(self.fontMetrics().horizontalAdvance("0000.00") + 24)
        slider.setMinimumWidth(self.fontMetrics().horizontalAdvance("M") * 4)
        binding = _RowBinding(row, slider, spin)
        spin.valueChanged.connect(self.settingsChanged)
        self._bindings[row.name] = binding
        box = QWidget()
        lay = QHBoxLayout(box)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(slider, 1)
        lay.addWidget(spin)
        return box

    # --- values ----------------------------------------------------------------------
    def sampler_settings(self) -> SamplerSettings:
        """The engine settings the panel shows (raises SettingsError naming a bad value)."""
        values = {name: b.value() for name, b in self._bindings.items()}
        base = PRESETS.get(self.preset_picker.currentText(), {})
        if "order" in base:
            values["order"] = base["order"]
        seed = self.seed_spin.value()
        values["seed"] = None if seed < 0 else seed
        for name, edit in self._list_edits().items():
            values[name] = _lines(edit)
        return SamplerSettings(**values)

    def values(self) -> dict:
        """Everything on the panel as plain JSON values (saved in stories and settings)."""
        out = {name: b.value() for name, b in self._bindings.items()}
        out["max_new_tokens"] = self.max_tokens_spin.value()
        out["n_ctx"] = self.context_spin.value()
        out["seed"] = self.seed_spin.value()
        out["alternatives"] = self.alternatives_spin.value()
        for name, edit in self._list_edits().items():
            out[name] = _lines(edit)
        return out

    def apply_values(self, values: dict) -> None:
        """Show `values` (from a story, the settings or a preset: unknown keys and values that are
        not finite numbers are ignored, numbers outside a row's range clamped to it here, before
        Qt, whose boxes hold a C int: a story's seed of 2**40 raised OverflowError)."""
        for name, binding in self._bindings.items():
            v = values.get(name)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                v = min(max(v, binding.row.minimum), binding.row.maximum)
                binding.set_value(int(v) if binding.row.is_int else float(v))
        for key, spin in (("n_ctx", self.context_spin), ("max_new_tokens", self.max_tokens_spin),   # n_ctx caps it
                          ("seed", self.seed_spin), ("alternatives", self.alternatives_spin)):
            v = values.get(key)
            if isinstance(v, int) and not isinstance(v, bool):
                spin.setValue(min(max(v, spin.minimum()), spin.maximum()))
        for name, edit in self._list_edits().items():
            v = values.get(name)
            if isinstance(v, (list, tuple)) and all(isinstance(item, str) for item in v):
                _set_lines(edit, v)

    def stop_sequences(self) -> list[str]:
        return _lines(self.stop_edit)

    def set_stop_sequences(self, stops: list[str]) -> None:
        _set_lines(self.stop_edit, stops)

    def set_supported(self, names, server: str = "") -> None:
        """Grey out the samplers a remote server ignores (`names`: the SamplerSettings fields it
        honours; None: all, the local engine)."""
        for name, binding in self._bindings.items():
            ok = names is None or name in names
            for widget in (binding.slider, binding.spin):
                widget.setEnabled(ok)
                widget.setToolTip(binding.row.tip if ok else f"{server or 'This server'} does not support "
                                  f"{binding.row.label.lower()}; the value is not used")
        for name, edit in self._list_edits().items():
            ok = names is None or name in names
            edit.setEnabled(ok)
            edit.setToolTip(self._list_tips[name] if ok else f"{server or 'This server'} does not support "
                            f"{name.replace('_', ' ')}; they are not used")
        seed_ok = names is None or "seed" in names
        self.seed_spin.setEnabled(seed_ok)
        self.seed_spin.setToolTip("-1 = a new random seed each time; any other value repeats the same text"
                                  if seed_ok else f"{server or 'This server'} does not take a seed")

    def unsupported(self) -> list[str]:
        """Names of the samplers currently greyed out."""
        return [name for name, b in self._bindings.items() if not b.spin.isEnabled()] + \
            [name for name, edit in self._list_edits().items() if not edit.isEnabled()]

    def set_model(self, info: dict) -> None:
        """A model (or server) is in use: its context size and, for a server, the samplers it takes."""
        self.set_context_limit(int(info.get("n_ctx", 2048)))
        remote = bool(info.get("remote"))
        self.set_supported(frozenset(info.get("supported_samplers", ())) if remote else None, info.get("kind", ""))

    def options(self):
        """The next generation's options (ValueError naming a bad setting)."""
        from app.generation import Options
        values = self.values()
        return Options(self.sampler_settings(), values["max_new_tokens"], values["n_ctx"],
                       tuple(self.stop_sequences()), values)

    def save_to(self, story) -> None:
        """Put the panel's values and stop sequences into a story about to be written."""
        story.sampler = self.values()
        story.stop_sequences = self.stop_sequences()

    def load_from(self, story, opened: bool) -> None:
        """Show a story's sampler values and stop sequences (an opened file's, even when empty)."""
        if story.sampler:
            self.apply_values(story.sampler)
        if story.stop_sequences or opened:
            self.set_stop_sequences(story.stop_sequences)

    def on_context_spin_changed(self, n_ctx: int) -> None:
        """New tokens must leave the prompt at least one token of the context: the spin box
        refuses more at once, rather than Generate failing later."""
        self.max_tokens_spin.setMaximum(max(1, n_ctx - 1))
        self.max_tokens_spin.setToolTip(f"How many tokens one press of Generate writes at most (up to {n_ctx - 1}: "
                                        "the context size leaves room for the prompt)")

    def set_context_limit(self, n_ctx: int) -> None:
        """The loaded model's context length caps the context size."""
        was_full = self.context_spin.value() >= self.context_spin.maximum()
        self.context_spin.setMaximum(max(64, n_ctx))
        if was_full or self.context_spin.value() > n_ctx:   # "all of it" stays all of it
            self.context_spin.setValue(n_ctx)

    # --- presets ---------------------------------------------------------------------
    def restore(self, settings) -> None:
        """The user's presets, the chosen preset and the values of the last session."""
        self.set_user_presets(settings.get("user_presets"))
        if settings.get("preset"):
            self.preset_picker.setCurrentText(settings.get("preset"))
        self.apply_values(settings.get("sampler"))

    def remember(self, settings) -> None:
        """Keep the chosen preset and the values for the next session."""
        settings.set("sampler", self.values())
        settings.set("preset", self.preset_picker.currentText())

    def set_user_presets(self, presets: dict) -> None:
        self._user_presets = {k: v for k, v in presets.items() if isinstance(v, dict)}
        self._fill_presets()

    def _fill_presets(self) -> None:
        current = self.preset_picker.currentText()
        self.preset_picker.blockSignals(True)
        self.preset_picker.clear()
        self.preset_picker.addItems(list(PRESETS))
        if self._user_presets:
            self.preset_picker.insertSeparator(self.preset_picker.count())
            self.preset_picker.addItems(sorted(self._user_presets))
        if current:
            self.preset_picker.setCurrentText(current)
        self.preset_picker.blockSignals(False)

    def on_preset_picker_changed(self, name: str) -> None:
        if name in PRESETS:   # a preset sets the samplers, never the seed, lengths or banned phrases
            values = SamplerSettings.from_preset(name).to_dict()
            values.pop("seed", None)
            values.pop("banned_phrases", None)
            self.apply_values(values)
        elif name in self._user_presets:
            self.apply_values(self._user_presets[name])

    def on_save_preset_clicked(self) -> None:
        name, ok = QInputDialog.getText(self, "Save preset", "Preset name:")
        if ok and name.strip():
            self.save_preset(name.strip())

    def save_preset(self, name: str) -> None:
        values = self.values()
        self._user_presets[name] = values
        self._fill_presets()
        self.preset_picker.setCurrentText(name)
        self.presetSaved.emit(name, values)


def _lines(edit: QPlainTextEdit) -> list[str]:
    """One string per non-empty line; a typed \\n stands for a new line."""
    return [line.replace("\\n", "\n") for line in edit.toPlainText().splitlines() if line]


def _set_lines(edit: QPlainTextEdit, items) -> None:
    edit.setPlainText("\n".join(s.replace("\n", "\\n") for s in items))


__all__ = ["SamplingPanel", "SAMPLER_ROWS", "DEFAULT_PRESET"]
