"""NeoX Writer's engine: reads legacy ggml GPT-NeoX files and runs them (numpy + numba, no Qt)."""
from engine.config import Config
from engine.errors import ModelFormatError, SettingsError
from engine.model import Model, load_model

__all__ = ["Config", "Model", "ModelFormatError", "SettingsError", "load_model"]
