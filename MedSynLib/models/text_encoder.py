"""Report text encoder: a BERT-family model whose last hidden states condition the low-res network.

``ReportEncoder(["report text", ...]) -> (b, 192, hidden)`` float32: word-piece tokens padded to at least 192 and
truncated at 2048 (the position table is extended to 2048 rows as the official CXR-BERT set-up does), with
``token_type_ids`` and ``attention_mask`` passed explicitly; the first 192 positions of the last hidden state are
kept, padding positions included (the diffusion network attends to them).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import BertConfig, BertModel, BertTokenizer

from .config import MAX_POSITIONS, TEXT_TOKENS

log = logging.getLogger(__name__)

IGNORED_PREFIXES = ("cls.", "cls_projection_head.", "pooler.")
IGNORED_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
POSITION_KEY = "embeddings.position_embeddings.weight"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
UNKNOWN_WARNING_FRACTION = 0.5
"""A report with more unknown word-pieces than this fraction gets a warning."""


def weights_file(folder: str | Path) -> Path:
    """The weights file of a text encoder folder: ``model.safetensors``, else ``pytorch_model.bin``."""
    folder = Path(folder)
    found = next((folder / n for n in WEIGHT_FILES if (folder / n).is_file()), None)
    if found is None:
        raise FileNotFoundError(f"text encoder folder {folder} has no {' or '.join(WEIGHT_FILES)}")
    return found


def read_weights(file: Path) -> dict[str, torch.Tensor]:
    try:
        if file.suffix == ".safetensors":
            return load_file(str(file))
        state = torch.load(file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, SafetensorError, RuntimeError, EOFError) as exc:
        raise ValueError(f"{file} cannot be loaded as weights ({str(exc).strip().splitlines()[0][:200]}): only "
                         "safetensors files and plain state_dicts of tensors are read. Fix: restore the file, or "
                         "re-save it as safetensors") from None
    if not isinstance(state, dict):
        raise ValueError(f"{file} is not a state_dict")
    return state


def encoder_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BERT encoder keys from a masked-LM (``bert.*``, ``cls.*``) or plain model state_dict."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.").removeprefix("bert.")
        if not key.startswith(IGNORED_PREFIXES) and key not in IGNORED_BUFFERS:
            out[key] = value
    return out


def fit_positions(state: dict[str, torch.Tensor], rows: int, generator: torch.Generator) -> None:
    """Extend a position table to ``rows`` (new rows ~ N(0, 1), the official default init), in place."""
    table = state.get(POSITION_KEY)
    if table is not None and table.shape[0] < rows:
        extra = torch.randn(rows - table.shape[0], table.shape[1], generator=generator, dtype=table.dtype)
        state[POSITION_KEY] = torch.cat((table, extra))


class ReportEncoder(nn.Module):
    """Report strings -> text features (b, 192, hidden), float32, in eval mode."""

    def __init__(self, bert: BertModel, tokenizer: BertTokenizer, tokens: int = TEXT_TOKENS,
                 max_length: int = MAX_POSITIONS):
        super().__init__()
        self.bert, self.tokenizer, self.tokens, self.max_length = bert.eval(), tokenizer, tokens, max_length

    @property
    def hidden_size(self) -> int:
        return self.bert.config.hidden_size

    @classmethod
    def from_pretrained(cls, path: str | Path, fine_tuned: str | Path | None = None, seed: int = 0) -> "ReportEncoder":
        """Load from a local folder with ``config.json``, ``vocab.txt`` and ``model.safetensors`` or
        ``pytorch_model.bin`` (a CXR-BERT / BERT masked-LM or plain BERT checkpoint; never downloads).

        fine_tuned: optional state_dict file applied on top (the official ``pretrained_lm/pytorch_model.bin``);
        its keys are reported if they do not fit. Position rows beyond the checkpoint's (up to 2048) are drawn
        from N(0, 1) with ``seed``; they only matter for reports longer than the checkpoint's table.
        """
        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"text encoder folder {path} has no config.json")
        fields = json.loads((path / "config.json").read_text(encoding="utf-8"))
        config = BertConfig(**{k: v for k, v in fields.items() if k not in ("model_type", "architectures",
                                                                            "auto_map", "transformers_version")})
        config.max_position_embeddings = max(MAX_POSITIONS, config.max_position_embeddings)
        config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
        weights = weights_file(path)
        generator = torch.Generator().manual_seed(seed)
        bert = BertModel(config, add_pooling_layer=False)
        state = encoder_state(read_weights(weights))
        fit_positions(state, config.max_position_embeddings, generator)
        result = bert.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(f"{weights} does not fit a BERT encoder with {path / 'config.json'}: missing "
                             f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}")
        if fine_tuned is not None:
            tuned = encoder_state(read_weights(Path(fine_tuned)))
            fit_positions(tuned, config.max_position_embeddings, generator)
            result = bert.load_state_dict(tuned, strict=False)
            loaded = len(tuned) - len(result.unexpected_keys)
            if loaded == 0:
                raise ValueError(f"no key of {fine_tuned} fits the text encoder (first keys: {list(tuned)[:5]})")
            if result.missing_keys or result.unexpected_keys:
                log.warning("fine-tuned text weights %s: %d keys loaded, missing %s, unexpected %s", fine_tuned,
                            loaded, result.missing_keys[:5], result.unexpected_keys[:5])
        tokenizer = BertTokenizer(str(path / "vocab.txt"), do_lower_case=fields.get("do_lower_case", True))
        return cls(bert, tokenizer)

    def save_pretrained(self, path: str | Path) -> None:
        """Write config.json, vocab.txt and model.safetensors (this project's format for trained encoders)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.bert.config.to_json_file(str(path / "config.json"))
        vocab = sorted(self.tokenizer.get_vocab().items(), key=lambda item: item[1])
        (path / "vocab.txt").write_text("".join(token + "\n" for token, _ in vocab), encoding="utf-8")
        state = {k: v.contiguous() for k, v in self.bert.state_dict().items() if k not in IGNORED_BUFFERS}
        save_file(state, str(path / "model.safetensors"))
        mask = os.umask(0o022)  # safetensors creates the file 0600: give it what a plain open() would
        os.umask(mask)
        os.chmod(path / "model.safetensors", 0o666 & ~mask)

    def tokenize(self, reports: Sequence[str]) -> dict[str, torch.Tensor]:
        if isinstance(reports, str):
            reports = [reports]
        empty = [i for i, r in enumerate(reports) if not r or not r.strip()]
        if empty:
            raise ValueError(f"report {empty[0]} is empty: give the Findings/Impression text to condition on")
        longest = max(len(self.tokenizer.tokenize(r)) + 2 for r in reports)
        length = min(self.max_length, max(self.tokens, longest))
        enc = self.tokenizer(list(reports), padding="max_length", truncation=True, max_length=length,
                             return_tensors="pt", return_token_type_ids=True, return_attention_mask=True)
        return {k: enc[k] for k in ("input_ids", "token_type_ids", "attention_mask")}

    def report_warnings(self, report: str) -> list[str]:
        """What the user should know about how ``report`` reaches the model: longer than the network reads, or
        mostly word-pieces the vocabulary does not know (another language, symbols, emoji)."""
        pieces = self.tokenizer.tokenize(report)
        warnings = []
        if len(pieces) + 2 > self.tokens:
            dropped = len(pieces) + 2 - self.max_length
            warnings.append(
                f"the report is {len(pieces):,} word-pieces long; the network reads the text encoder's states of the "
                f"first {self.tokens} (later words reach it only through the encoder's attention)"
                + (f", and the last {dropped:,} word-pieces (after {self.max_length:,}) are dropped" if dropped > 0
                   else "") + ". Fix: keep to the Findings and Impression")
        unknown = sum(piece == self.tokenizer.unk_token for piece in pieces)
        if pieces and unknown / len(pieces) > UNKNOWN_WARNING_FRACTION:
            warnings.append(f"{unknown} of the report's {len(pieces)} word-pieces are unknown to the text encoder's "
                            "vocabulary (another language, symbols or emoji?), so the model sees little of the "
                            "report. Fix: write the report in English radiology wording")
        return warnings

    @torch.no_grad()
    def forward(self, reports: Sequence[str]) -> torch.Tensor:
        device = next(self.bert.parameters()).device
        inputs = {k: v.to(device) for k, v in self.tokenize(reports).items()}
        hidden = self.bert(**inputs).last_hidden_state
        return hidden[:, : self.tokens].float()
