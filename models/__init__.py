"""Models: ModelConfig, DecoderLM, and the per-layer decoding state.

``models.hf`` (the transformers wrapper of exported folders) registers itself with transformers' Auto
classes when imported; it is imported here only if transformers already is (importing it costs seconds).
"""
import sys

from models.config import ModelConfig
from models.decoder import Block, DecoderLM, LMOutput
from models.state import ModelState

__all__ = ["Block", "DecoderLM", "LMOutput", "ModelConfig", "ModelState"]

if "transformers" in sys.modules:
    import models.hf  # noqa: F401  (AutoModelForCausalLM.from_pretrained on exported folders)
