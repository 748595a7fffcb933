"""The masked-diffusion policy: MMaDA/LLaDA model, vocabulary layout, prompt layouts, image tokenizer."""

from policy.config import MMadaConfig
from policy.model import MMadaModelLM
from policy.vocab import VocabLayout

__all__ = ["MMadaConfig", "MMadaModelLM", "VocabLayout"]
