"""Widgets: one widget per module, each showing data and emitting what the user did (no engine calls)."""
