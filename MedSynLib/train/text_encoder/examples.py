"""Training examples: Findings/Impression pairs (true or swapped) and BERT masking."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import BertTokenizer

from .config import TextTrainConfig
from .corpus import Report

IGNORE = -100
"""Label of the tokens that are not predicted (PyTorch cross-entropy's ignore index)."""


class Examples:
    """Tokenised sections of a split and the batch builder."""

    def __init__(self, reports: Sequence[Report], tokenizer: BertTokenizer, max_length: int):
        self.tokenizer, self.max_length = tokenizer, max_length
        enc = tokenizer([r.findings for r in reports] + [r.impression for r in reports], add_special_tokens=False,
                        return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        self.findings, self.impressions = enc[: len(reports)], enc[len(reports):]
        self.groups = [r.case for r in reports]
        self.cls, self.sep, self.pad, self.mask = (tokenizer.convert_tokens_to_ids(t)
                                                   for t in ("[CLS]", "[SEP]", "[PAD]", "[MASK]"))
        specials = set(tokenizer.all_special_ids) | {self.cls, self.sep, self.pad, self.mask}
        self.random_ids = torch.tensor([i for i in range(len(tokenizer.get_vocab())) if i not in specials])

    def __len__(self) -> int:
        return len(self.findings)

    def pairs(self, rows: Sequence[int], gen: torch.Generator, swap_prob: float, tries: int = 8):
        """(findings row, impression row, label) per row: the impression swapped for one with a different text,
        from another case (label 0) with probability ``swap_prob``, else its own (label 1)."""
        n = len(rows)
        swap = (torch.rand(n, generator=gen) < swap_prob).tolist()
        partners = torch.randint(len(self), (n, tries), generator=gen).tolist()
        out = []
        for row, s, cands in zip(rows, swap, partners):
            other = next((j for j in cands if self.impressions[j] != self.impressions[row]
                          and self.groups[j] != self.groups[row]), None) if s else None
            out.append((row, row, 1) if other is None else (row, other, 0))
        return out

    def batch(self, pairs) -> dict[str, torch.Tensor]:
        """``[CLS] findings [SEP] impression [SEP]``, the longer section truncated first, padded to the longest."""
        seqs, types = [], []
        for f_row, i_row, _ in pairs:
            f, i = list(self.findings[f_row]), list(self.impressions[i_row])
            while len(f) + len(i) + 3 > self.max_length:
                (f if len(f) >= len(i) else i).pop()
            seqs.append([self.cls] + f + [self.sep] + i + [self.sep])
            types.append([0] * (len(f) + 2) + [1] * (len(i) + 1))
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), self.pad, dtype=torch.long)
        token_types = torch.zeros_like(ids)
        attention = torch.zeros_like(ids)
        for k, (s, t) in enumerate(zip(seqs, types)):
            ids[k, : len(s)], token_types[k, : len(t)], attention[k, : len(s)] = torch.tensor(s), torch.tensor(t), 1
        special = (ids == self.cls) | (ids == self.sep) | (attention == 0)
        return {"input_ids": ids, "token_type_ids": token_types, "attention_mask": attention,
                "maskable": ~special, "pair_labels": torch.tensor([p[2] for p in pairs])}


def mask_tokens(input_ids: torch.Tensor, maskable: torch.Tensor, mask_id: int, random_ids: torch.Tensor,
                gen: torch.Generator, prob: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: ``prob`` of the maskable tokens are predicted (at least one per sequence that has any);
    of those 80 % become [MASK], 10 % a random non-special token, 10 % stay. Returns (inputs, labels)."""
    shape = input_ids.shape
    chosen = (torch.rand(shape, generator=gen) < prob) & maskable
    fallback = torch.rand(shape, generator=gen).masked_fill(~maskable, -1.0).argmax(dim=1)
    empty = ~chosen.any(dim=1) & maskable.any(dim=1)
    chosen[empty.nonzero().flatten(), fallback[empty]] = True
    labels = input_ids.masked_fill(~chosen, IGNORE)
    action = torch.rand(shape, generator=gen)
    replace = random_ids[torch.randint(len(random_ids), shape, generator=gen)]
    inputs = input_ids.clone()
    inputs[chosen & (action < 0.8)] = mask_id
    randomised = chosen & (action >= 0.8) & (action < 0.9)
    inputs[randomised] = replace[randomised]
    return inputs, labels


def step_batch(examples: Examples, rows: Sequence[int], gen: torch.Generator, cfg: TextTrainConfig):
    batch = examples.batch(examples.pairs(rows, gen, cfg.swap_prob))
    batch["input_ids"], batch["labels"] = mask_tokens(batch["input_ids"], batch.pop("maskable"), examples.mask,
                                                      examples.random_ids, gen, cfg.mask_prob)
    return batch
