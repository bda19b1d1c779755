"""Thin wiring: text encoder + networks + sampler + codecs, one call each (generate, segment)."""

from .generate import GenerationResult, generate, segment

__all__ = ["GenerationResult", "generate", "segment"]
