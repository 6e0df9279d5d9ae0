"""Models: ModelConfig, DecoderLM, and the per-layer decoding state."""
from models.config import ModelConfig
from models.decoder import Block, DecoderLM, LMOutput
from models.state import ModelState

__all__ = ["Block", "DecoderLM", "LMOutput", "ModelConfig", "ModelState"]
