"""Report text encoder training, the paper's recipe: masked-language modelling + Findings/Impression pairing.

Each report is split into its FINDINGS and IMPRESSION sections. A training example is
``[CLS] findings [SEP] impression [SEP]`` (token types 0 / 1); in about half of the examples the impression is
swapped for another report's (label 0 = swapped, 1 = true pair). Loss = masked-LM cross-entropy (15 % of the
non-special tokens: 80 % [MASK], 10 % a random token, 10 % unchanged) + pairing cross-entropy on the [CLS] state.

The model starts from a local BERT-family folder (``init``: config.json + vocab.txt + weights, ``bert.*`` keys
accepted, CXR-BERT included) or from scratch, with a lower-casing WordPiece vocabulary learnt on the corpus.
The output folder holds::

    text_encoder/   config.json, vocab.txt, model.safetensors  (ReportEncoder.from_pretrained(out / "text_encoder"))
    training.json   config, steps, wall time, held-out MLM and pairing accuracy, corpus size, loss history
    checkpoint/     state.pt (model, optimizer, scheduler, step, RNG), vocab.txt, bert_config.json  (--resume)

Determinism: the data order, masking and pairing of step ``s`` come from generators seeded by (seed, s); dropout
uses the global torch RNG inside ``torch.random.fork_rng``, whose state is checkpointed. A run resumed from a
checkpoint therefore ends bit-identical (on CPU) to an uninterrupted one.

Vocabulary: the ``tokenizers`` WordPiece trainer breaks ties between equally frequent pairs in hash-map order, so
two runs on the same corpus give different vocabularies (measured). The vocabulary is therefore learnt here with
the same procedure (the trainer's BPE-style merges of the most frequent adjacent pair, continuation pieces
prefixed ``##``), ties broken by the pair's text, on words normalised and split by the ``tokenizers`` BERT
normaliser and pre-tokeniser, which is what ``BertTokenizer`` applies before its WordPiece step.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import heapq
import json
import logging
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from transformers import BertConfig, BertModel, BertTokenizer
from transformers.models.bert.modeling_bert import BertOnlyMLMHead

from ..data.manifest import read_report_file, report_paths
from ..models.text_encoder import MAX_POSITIONS, ReportEncoder, _encoder_state, _fit_positions, _read_weights
from ..runtime import resolve_device

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0..4, as in CXR-BERT
ENCODER_DIR, CHECKPOINT_DIR, METRICS_FILE = "text_encoder", "checkpoint", "training.json"
IGNORE = -100
# fields that may change between a run and its --resume (everything else must match the checkpoint)
RESUMABLE_CHANGES = {"log_every", "checkpoint_every", "stop_at", "eval_repeats", "skip_bad", "device"}


# --- configuration ------------------------------------------------------------------------------------------
@dataclasses.dataclass
class TextTrainConfig:
    """Training options (a JSON config file holds any subset of these fields)."""

    init: str | None = None            # BERT-family folder to start from; None = from scratch
    vocab_size: int = 3000             # WordPiece vocabulary learnt on the corpus (from scratch only)
    min_frequency: int = 2             # a pair seen fewer times is never merged
    hidden: int = 128                  # model size when training from scratch
    layers: int = 2
    heads: int = 4
    intermediate: int | None = None    # None: 4 * hidden
    max_positions: int = MAX_POSITIONS
    dropout: float = 0.1
    max_length: int = 256              # word pieces per example, specials included (longest section truncated)
    batch_size: int = 16
    steps: int | None = None           # optimisation steps; or
    epochs: float | None = None        # passes over the training split (default: 300 steps)
    lr: float | None = None            # None: 1e-4 with init, 5e-4 from scratch
    weight_decay: float = 0.01
    warmup_steps: int | None = None    # None: 10 % of the steps
    grad_clip: float = 1.0
    mask_prob: float = 0.15
    swap_prob: float = 0.5
    heldout: float = 0.05              # fraction of the reports kept out of training, evaluated at the end
    eval_repeats: int = 4              # held-out passes with different masks / swaps
    seed: int = 0
    skip_bad: bool = False             # skip reports without both sections (logged) instead of failing
    log_every: int = 10
    checkpoint_every: int = 100
    stop_at: int | None = None         # stop after this step with a checkpoint (to --resume later)
    device: str = "cpu"                # "cpu", "auto", "cuda" or "cuda:N" (fp32; bit-exact resume on the CPU)

    @classmethod
    def from_dict(cls, values: dict) -> "TextTrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown text-training option(s) {unknown}; known: {sorted(names)}")
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give steps or epochs, not both")
        for name in ("vocab_size", "hidden", "layers", "heads", "batch_size", "log_every", "checkpoint_every",
                     "eval_repeats", "min_frequency"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.init is None and self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        if self.max_length < 8 or self.max_length > self.max_positions:
            raise ValueError(f"max_length must be in [8, {self.max_positions}], got {self.max_length}")
        if not 0 < self.mask_prob < 1 or not 0 <= self.swap_prob <= 1 or not 0 <= self.heldout < 0.5:
            raise ValueError("need 0 < mask_prob < 1, 0 <= swap_prob <= 1 and 0 <= heldout < 0.5")

    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (1e-4 if self.init else 5e-4)

    def total_steps(self, train_reports: int) -> int:
        if self.steps is not None:
            return int(self.steps)
        if self.epochs is not None:
            return max(1, math.ceil(self.epochs * train_reports / self.batch_size))
        return 300


def _seed(*parts) -> int:
    """A 63-bit seed derived from ``parts`` (stable across processes, unlike ``hash``)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _generator(*parts) -> torch.Generator:
    return torch.Generator().manual_seed(_seed(*parts))


# --- corpus ---------------------------------------------------------------------------------------------------
class ReportFormatError(ValueError):
    """A report lacks its FINDINGS or IMPRESSION section."""


@dataclasses.dataclass(frozen=True)
class Report:
    name: str
    text: str
    findings: str
    impression: str
    group: str = ""  # reports of one case (paraphrases) share a group: held out together; "" = its own

    @property
    def case(self) -> str:
        """The case the report belongs to: its group, else the report itself."""
        return self.group or self.name


_HEADER = re.compile(r"\b(FINDINGS|IMPRESSIONS?)\s*:", re.IGNORECASE)


def split_sections(text: str, name: str = "report") -> tuple[str, str]:
    """(findings, impression) of a report with "FINDINGS:" and "IMPRESSION:" headers (any case, any order);
    the text before the first header (e.g. a clinical header line) is dropped. Raises ReportFormatError."""
    sections: dict[str, list[str]] = {"findings": [], "impression": []}
    marks = list(_HEADER.finditer(text))
    for k, mark in enumerate(marks):
        end = marks[k + 1].start() if k + 1 < len(marks) else len(text)
        key = "findings" if mark.group(1).lower() == "findings" else "impression"
        sections[key].append(" ".join(text[mark.end():end].split()))
    missing = [key.upper() for key, parts in sections.items() if not parts]
    if missing:
        raise ReportFormatError(f"{name}: no {' or '.join(m + ':' for m in missing)} section "
                                "(a training report needs both 'FINDINGS:' and 'IMPRESSION:')")
    findings, impression = (" ".join(p for p in sections[k] if p) for k in ("findings", "impression"))
    empty = [key.upper() for key, value in (("findings", findings), ("impression", impression)) if not value]
    if empty:
        raise ReportFormatError(f"{name}: empty {' and '.join(empty)} section")
    return findings, impression


def _read_csv(path: Path) -> list[tuple[str, str, str]]:
    """(name, text, group) per report of a manifest; a case's several reports share the row as group."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or ())
        if not {"report", "report_text"} & columns:
            raise ValueError(f"manifest {path} has no 'report' (path to a text file) or 'report_text' column")
        out = []
        for line, row in enumerate(reader, start=2):
            label = row.get("case_id") or row.get("id")
            name = f"{path.name} line {line}" + (f" ({label})" if label else "")
            if row.get("report_text"):
                out.append((name, row["report_text"], name))
            elif row.get("report"):  # one file, or several (a case's paraphrases) separated by ';'
                out += [(str(file), read_report_file(file, label or name), name)
                        for file in report_paths(row["report"], path.parent)]
            else:
                raise ValueError(f"{name}: no report text and no report file")
        return out


def load_corpus(source: str | Path | Sequence[str], skip_bad: bool = False) -> tuple[list[Report], list[str]]:
    """Reports from a list of strings, a manifest CSV (``report`` path relative to it, or ``report_text``) or a
    folder of ``*.txt`` (searched recursively, sorted). Returns (reports, skipped: one message per bad report)."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            files = sorted(path.rglob("*.txt"))
            if not files:
                raise FileNotFoundError(f"no *.txt report in {path}")
            items = [(str(f), f.read_text(encoding="utf-8"), "") for f in files]
        elif path.is_file() and path.suffix.lower() == ".csv":
            items = _read_csv(path)
        elif path.exists():
            raise ValueError(f"{path}: give a manifest .csv or a folder of .txt reports")
        else:
            raise FileNotFoundError(f"reports not found: {path}")
    else:
        items = [(f"report {i}", text, "") for i, text in enumerate(source)]
    reports, skipped = [], []
    for name, text, group in items:
        try:
            reports.append(Report(name, text, *split_sections(text, name), group=group))
        except ReportFormatError as err:
            if not skip_bad:
                raise ReportFormatError(f"{err} (pass --skip-bad / skip_bad=True to skip such reports)") from None
            log.warning("skipping %s", err)
            skipped.append(str(err))
    if len(reports) < 2:
        raise ValueError(f"need at least 2 usable reports to train on, found {len(reports)}")
    return reports, skipped


def corpus_digest(reports: Sequence[Report]) -> str:
    h = hashlib.sha256()
    for r in reports:
        h.update(r.findings.encode() + b"\0" + r.impression.encode() + b"\1")
    return h.hexdigest()


# --- vocabulary -----------------------------------------------------------------------------------------------
def train_wordpiece_vocab(texts: Sequence[str], vocab_size: int, min_frequency: int = 2) -> list[str]:
    """A lower-casing WordPiece vocabulary: special tokens (ids 0-4), every character (word-initial and ``##``
    continuation), then merges of the most frequent adjacent pair (ties: the pair's text) until ``vocab_size``."""
    from tokenizers import normalizers, pre_tokenizers

    normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=True)
    splitter = pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(word for word, _ in splitter.pre_tokenize_str(normalizer.normalize_str(text)))
    words = [[w[0]] + ["##" + c for c in w[1:]] for w in sorted(counts)]
    freq = [counts[w] for w in sorted(counts)]
    vocab = list(SPECIAL_TOKENS) + sorted({s for word in words for s in word} - set(SPECIAL_TOKENS))
    known = set(vocab)
    pairs: Counter[tuple[str, str]] = Counter()
    where: dict[tuple[str, str], set[int]] = {}
    for i, word in enumerate(words):
        for pair in zip(word, word[1:]):
            pairs[pair] += freq[i]
            where.setdefault(pair, set()).add(i)
    heap = [(-n, pair) for pair, n in pairs.items()]
    heapq.heapify(heap)
    while len(vocab) < vocab_size and heap:
        n, pair = heapq.heappop(heap)
        if -n != pairs.get(pair, 0):
            continue  # stale entry
        if -n < min_frequency:
            break
        a, b = pair
        merged = a + b.removeprefix("##")
        if merged not in known:
            known.add(merged)
            vocab.append(merged)
        touched: set[tuple[str, str]] = set()
        for i in sorted(where.pop(pair, ())):
            word, new = words[i], []
            k = 0
            while k < len(word):
                if k + 1 < len(word) and word[k] == a and word[k + 1] == b:
                    new.append(merged)
                    k += 2
                else:
                    new.append(word[k])
                    k += 1
            for p in zip(word, word[1:]):
                pairs[p] -= freq[i]
                touched.add(p)
            for p in zip(new, new[1:]):
                pairs[p] += freq[i]
                where.setdefault(p, set()).add(i)
                touched.add(p)
            words[i] = new
        pairs.pop(pair, None)
        for p in sorted(touched):
            if pairs.get(p, 0) > 0 and p != pair:
                heapq.heappush(heap, (-pairs[p], p))
    return vocab


def write_vocab(tokens: Sequence[str], path: Path) -> None:
    path.write_text("".join(t + "\n" for t in tokens), encoding="utf-8")


def load_tokenizer(folder: Path, do_lower_case: bool = True) -> BertTokenizer:
    tokenizer = BertTokenizer(str(folder / "vocab.txt"), do_lower_case=do_lower_case)
    missing = [t for t in SPECIAL_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        raise ValueError(f"{folder / 'vocab.txt'} lacks the special tokens {missing}")
    return tokenizer


# --- model ----------------------------------------------------------------------------------------------------
class PretrainingModel(nn.Module):
    """BertModel + masked-LM head (``cls.predictions.*``, decoder tied to the word embeddings, the Hugging Face
    key names) + a linear Findings/Impression pairing classifier on the [CLS] hidden state."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.bert = BertModel(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config)
        self.pairing = nn.Linear(config.hidden_size, 2)
        std = config.initializer_range
        for linear in (self.cls.predictions.transform.dense, self.pairing):
            nn.init.normal_(linear.weight, std=std)
            nn.init.zeros_(linear.bias)
        nn.init.zeros_(self.cls.predictions.bias)
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight
        self.cls.predictions.decoder.bias = self.cls.predictions.bias

    def forward(self, input_ids, token_type_ids, attention_mask, labels):
        """(MLM logits at the labelled positions (n, vocab), pairing logits (b, 2))."""
        hidden = self.bert(input_ids=input_ids, token_type_ids=token_type_ids,
                           attention_mask=attention_mask).last_hidden_state
        return self.cls(hidden[labels != IGNORE]), self.pairing(hidden[:, 0])


def _bert_config(fields: dict) -> BertConfig:
    drop = ("model_type", "architectures", "auto_map", "transformers_version", "torch_dtype", "dtype")
    return BertConfig(**{k: v for k, v in fields.items() if k not in drop})


def build_model(cfg: TextTrainConfig, vocab_size: int | None, bert_config: BertConfig | None = None,
                ) -> tuple[PretrainingModel, BertConfig, dict]:
    """A pre-training model: from ``cfg.init`` (weights loaded), from ``bert_config`` or from the size options.
    Initial weights are drawn from the global torch RNG (seed it first). Returns (model, bert config, notes)."""
    notes: dict = {}
    state = None
    if bert_config is None and cfg.init:
        folder = Path(cfg.init)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"--init folder {folder} has no config.json")
        fields = json.loads((folder / "config.json").read_text())
        bert_config = _bert_config(fields)
        bert_config.max_position_embeddings = max(cfg.max_positions, bert_config.max_position_embeddings)
        weights = next((folder / n for n in ("model.safetensors", "pytorch_model.bin") if (folder / n).is_file()),
                       None)
        if weights is None:
            raise FileNotFoundError(f"--init folder {folder} has no model.safetensors or pytorch_model.bin")
        state = _read_weights(weights)
        notes["init_weights"] = str(weights)
    elif bert_config is None:
        bert_config = BertConfig(vocab_size=vocab_size, hidden_size=cfg.hidden, num_hidden_layers=cfg.layers,
                                 num_attention_heads=cfg.heads, intermediate_size=cfg.intermediate or 4 * cfg.hidden,
                                 max_position_embeddings=cfg.max_positions, type_vocab_size=2, pad_token_id=0,
                                 hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout)
        bert_config.do_lower_case = True
    if bert_config.type_vocab_size < 2:
        raise ValueError(f"{cfg.init}: the pairing input needs 2 token types, the model has "
                         f"{bert_config.type_vocab_size}")
    model = PretrainingModel(bert_config)
    if state is not None:
        encoder = _encoder_state(state)
        _fit_positions(encoder, bert_config.max_position_embeddings, _generator(cfg.seed, "positions"))
        result = model.bert.load_state_dict(encoder, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(f"{notes['init_weights']} does not fit a BERT encoder: missing "
                             f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}")
        head = {k.removeprefix("module.").removeprefix("cls."): v for k, v in state.items()
                if k.removeprefix("module.").startswith("cls.predictions.") and not k.endswith("decoder.weight")}
        head = {k.removeprefix("predictions."): v for k, v in head.items()}
        if head:
            model.cls.predictions.load_state_dict(head, strict=False)
        notes["init_mlm_head"] = bool(head)
    return model, bert_config, notes


def _optimizer(model: nn.Module, cfg: TextTrainConfig) -> torch.optim.AdamW:
    decay, no_decay, seen = [], [], set()
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        (no_decay if p.ndim < 2 or "LayerNorm" in name else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=cfg.learning_rate(), betas=(0.9, 0.999), eps=1e-8)


def _schedule(optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# --- examples: pairing and masking ----------------------------------------------------------------------------
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


def _step_batch(examples: Examples, rows: Sequence[int], gen: torch.Generator, cfg: TextTrainConfig):
    batch = examples.batch(examples.pairs(rows, gen, cfg.swap_prob))
    batch["input_ids"], batch["labels"] = mask_tokens(batch["input_ids"], batch.pop("maskable"), examples.mask,
                                                      examples.random_ids, gen, cfg.mask_prob)
    return batch


def _losses(model: PretrainingModel, batch: dict) -> dict[str, torch.Tensor]:
    device = model.pairing.weight.device
    batch = {k: v.to(device) for k, v in batch.items()}
    mlm_logits, pair_logits = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
                                    batch["labels"])
    targets = batch["labels"][batch["labels"] != IGNORE]
    mlm = F.cross_entropy(mlm_logits, targets)
    pairing = F.cross_entropy(pair_logits, batch["pair_labels"])
    return {"loss": mlm + pairing, "mlm_loss": mlm, "pairing_loss": pairing,
            "mlm_correct": (mlm_logits.argmax(-1) == targets).sum(), "mlm_count": torch.tensor(targets.numel()),
            "pair_correct": (pair_logits.argmax(-1) == batch["pair_labels"]).sum(),
            "pair_count": torch.tensor(len(batch["pair_labels"]))}


@torch.no_grad()
def evaluate(model: PretrainingModel, examples: Examples, cfg: TextTrainConfig) -> dict:
    """Held-out MLM accuracy (over predicted tokens) and pairing accuracy, ``eval_repeats`` seeded passes."""
    was_training = model.training
    model.eval()
    sums = Counter()
    for repeat in range(cfg.eval_repeats):
        gen = _generator(cfg.seed, "eval", repeat)
        for start in range(0, len(examples), cfg.batch_size):
            rows = list(range(start, min(start + cfg.batch_size, len(examples))))
            out = _losses(model, _step_batch(examples, rows, gen, cfg))
            sums["mlm_loss"] += float(out["mlm_loss"]) * int(out["mlm_count"])
            sums["pairing_loss"] += float(out["pairing_loss"]) * int(out["pair_count"])
            for key in ("mlm_correct", "mlm_count", "pair_correct", "pair_count"):
                sums[key] += int(out[key])
    model.train(was_training)
    return {"mlm_accuracy": sums["mlm_correct"] / sums["mlm_count"],
            "pairing_accuracy": sums["pair_correct"] / sums["pair_count"],
            "mlm_loss": sums["mlm_loss"] / sums["mlm_count"], "pairing_loss": sums["pairing_loss"] / sums["pair_count"],
            "masked_tokens": sums["mlm_count"], "pairs": sums["pair_count"], "reports": len(examples)}


# --- checkpoints and outputs ----------------------------------------------------------------------------------
def _replace_dir(tmp: Path, final: Path) -> None:
    """Move the finished folder ``tmp`` to ``final``, keeping the previous one until the new one is in place."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_dir(out: Path, name: str) -> Path:
    """A fresh folder beside its final place, with the permissions a plain mkdir would give (not mkdtemp's 0700)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out))
    tmp.chmod(0o777 & ~_umask())
    return tmp


def _checkpoint_dir(out: Path) -> Path | None:
    for name in (CHECKPOINT_DIR, CHECKPOINT_DIR + ".old"):  # .old: a crash between the two renames
        if (out / name / "state.pt").is_file():
            return out / name
    return None


def _write_json(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")
    os.replace(tmp, path)


# --- training -------------------------------------------------------------------------------------------------
def _split(corpus: Sequence[Report], cfg: TextTrainConfig) -> tuple[list[int], list[int]]:
    """(train rows, held-out rows): a seeded ``cfg.heldout`` fraction of the cases (a case's paraphrases stay on
    one side, so held-out accuracy is measured on findings never trained on)."""
    groups = list(dict.fromkeys(r.case for r in corpus))
    n = len(groups)
    order = torch.randperm(n, generator=_generator(cfg.seed, "split")).tolist()
    held = 0 if cfg.heldout <= 0 or n < 4 else max(1, round(cfg.heldout * n))
    held_groups = {groups[i] for i in order[:min(held, n - 2)]}
    rows = [r.case in held_groups for r in corpus]
    return [i for i, h in enumerate(rows) if not h], [i for i, h in enumerate(rows) if h]


class _Order:
    """Row of sample ``p`` of the training stream: epoch ``p // n`` is a seeded permutation of the split."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.cache = n, seed, {}

    def rows(self, start: int, count: int) -> list[int]:
        out = []
        for p in range(start, start + count):
            epoch = p // self.n
            if epoch not in self.cache:
                self.cache = {epoch: torch.randperm(self.n, generator=_generator(self.seed, "epoch", epoch)).tolist()}
            out.append(self.cache[epoch][p % self.n])
        return out


def _print_progress(event: dict) -> None:
    if event["event"] == "progress":
        print(f"step {event['step']}/{event['total']}  loss {event['loss']:.4f}  mlm_acc {event['mlm_accuracy']:.3f}"
              f"  pair_acc {event['pairing_accuracy']:.3f}  lr {event['lr']:.2e}  {event['steps_per_s']:.2f} steps/s"
              f"  ETA {event['eta_s']:.0f} s", file=sys.stderr, flush=True)
    else:
        print(event["message"], file=sys.stderr, flush=True)


def train_text_encoder(reports: str | Path | Sequence[str], out_dir: str | Path,
                       config: TextTrainConfig | dict | None = None, *, resume: bool = False,
                       progress: Callable[[dict], None] | None = None,
                       stop: Callable[[], bool] | None = None) -> dict:
    """Train a report encoder (MLM + Findings/Impression pairing) and write ``out_dir/text_encoder`` and
    ``out_dir/training.json``. Returns the metrics written to training.json; if the run stops early (``stop_at``
    or ``stop()`` true after a step) a checkpoint is written and ``{"stopped": True, "step": ...}`` is returned.

    reports: list of report strings, a manifest CSV or a folder of ``*.txt``.
    resume: continue from ``out_dir/checkpoint`` (the config must match the checkpoint's, see RESUMABLE_CHANGES).
    """
    cfg = config if isinstance(config, TextTrainConfig) else TextTrainConfig.from_dict(dict(config or {}))
    cfg.validate()
    emit = progress or (lambda e: log.info("%s", e.get("message") or e))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    corpus, skipped = load_corpus(reports, cfg.skip_bad)
    digest = corpus_digest(corpus)
    checkpoint = _checkpoint_dir(out)
    if checkpoint and not resume:
        raise FileExistsError(f"{out} holds a training checkpoint: pass --resume (resume=True) to continue it, "
                              "or choose another output folder")
    state = None
    if resume and checkpoint:
        state = torch.load(checkpoint / "state.pt", map_location="cpu", weights_only=True)
        saved = state["config"]
        changed = sorted(k for k, v in cfg.to_dict().items() if k not in RESUMABLE_CHANGES and saved.get(k) != v)
        if changed:
            raise ValueError(f"cannot resume {checkpoint}: options differ from the checkpoint's: "
                             + ", ".join(f"{k} {saved.get(k)!r} -> {getattr(cfg, k)!r}" for k in changed))
        if state["corpus_sha256"] != digest:
            raise ValueError(f"cannot resume {checkpoint}: the report corpus differs from the one it was trained on")
    elif resume:
        emit({"event": "message", "message": f"no checkpoint in {out}: starting from step 0"})

    train_rows, held_rows = _split(corpus, cfg)
    train_reports = [corpus[i] for i in train_rows]
    if state is not None:
        tokenizer = load_tokenizer(checkpoint, state["do_lower_case"])
        tokenizer_source = state["tokenizer_source"]
    elif cfg.init:
        init_fields = json.loads((Path(cfg.init) / "config.json").read_text()) \
            if (Path(cfg.init) / "config.json").is_file() else {}
        tokenizer = load_tokenizer(Path(cfg.init), init_fields.get("do_lower_case", True))
        tokenizer_source = f"init: {cfg.init}"
    else:
        t0 = time.perf_counter()
        vocab = train_wordpiece_vocab([r.text for r in train_reports], cfg.vocab_size, cfg.min_frequency)
        tmp_vocab = _temp_dir(out, "vocab")
        write_vocab(vocab, tmp_vocab / "vocab.txt")
        tokenizer = load_tokenizer(tmp_vocab)
        shutil.rmtree(tmp_vocab)
        tokenizer_source = "trained on the corpus"
        emit({"event": "message", "message": f"WordPiece vocabulary: {len(vocab)} tokens learnt from "
                                             f"{len(train_reports)} reports in {time.perf_counter() - t0:.1f} s"})
    do_lower_case = bool(getattr(tokenizer, "do_lower_case", True))
    train = Examples(train_reports, tokenizer, cfg.max_length)
    held = Examples([corpus[i] for i in held_rows], tokenizer, cfg.max_length) if held_rows else None
    total = cfg.total_steps(len(train))
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else max(1, round(0.1 * total))

    device = resolve_device(cfg.device)
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(_seed(cfg.seed, "init"))
        if state is not None:
            bert_config = _bert_config(state["bert_config"])
            model, _, notes = build_model(cfg, None, bert_config)
        else:
            model, bert_config, notes = build_model(cfg, len(tokenizer.get_vocab()))
        if bert_config.vocab_size < len(tokenizer.get_vocab()):
            raise ValueError(f"the vocabulary has {len(tokenizer.get_vocab())} tokens, the model only "
                             f"{bert_config.vocab_size} embeddings")
        model.to(device)
        optimizer = _optimizer(model, cfg)
        scheduler = _schedule(optimizer, warmup, total)
        step, wall, history = 0, 0.0, []
        torch.manual_seed(_seed(cfg.seed, "dropout"))
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["torch_rng"])
            if cuda and state.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(state["cuda_rng"], cuda[0])
            step, wall, history, notes = state["step"], state["wall_s"], state["history"], state["notes"]
            emit({"event": "message", "message": f"resumed {checkpoint} at step {step}/{total}"})
        parameters = sum(p.numel() for p in model.bert.parameters())
        emit({"event": "message", "message": f"text encoder: {bert_config.num_hidden_layers} layers, hidden "
              f"{bert_config.hidden_size}, {parameters / 1e6:.2f} M parameters; {len(train)} training / "
              f"{len(held) if held else 0} held-out reports; {total} steps of {cfg.batch_size} on {device}"})

        def save_checkpoint() -> None:
            tmp = _temp_dir(out, CHECKPOINT_DIR)
            torch.save({"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
                        "cuda_rng": torch.cuda.get_rng_state(cuda[0]) if cuda else None,
                        "config": cfg.to_dict(), "bert_config": bert_config.to_dict(), "corpus_sha256": digest,
                        "wall_s": wall, "history": history, "notes": notes, "do_lower_case": do_lower_case,
                        "tokenizer_source": tokenizer_source}, tmp / "state.pt")
            vocab_items = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
            write_vocab([t for t, _ in vocab_items], tmp / "vocab.txt")
            (tmp / "bert_config.json").write_text(bert_config.to_json_string())
            _replace_dir(tmp, out / CHECKPOINT_DIR)

        order = _Order(len(train), cfg.seed)
        model.train()
        window, t_window, t_run, first, wall_before = Counter(), time.perf_counter(), time.perf_counter(), step, wall
        while step < total:
            rows = order.rows(step * cfg.batch_size, cfg.batch_size)
            batch = _step_batch(train, rows, _generator(cfg.seed, "step", step), cfg)
            result = _losses(model, batch)
            optimizer.zero_grad(set_to_none=True)
            result["loss"].backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            window["n"] += 1
            for key in ("loss", "mlm_loss", "pairing_loss"):
                window[key] += float(result[key].detach())
            for key in ("mlm_correct", "mlm_count", "pair_correct", "pair_count"):
                window[key] += int(result[key])
            stopping = (cfg.stop_at is not None and step >= cfg.stop_at) or bool(stop and stop())
            if step % cfg.log_every == 0 or step == total or stopping:
                now = time.perf_counter()
                rate = window["n"] / max(now - t_window, 1e-9)
                entry = {"step": step, "loss": window["loss"] / window["n"],
                         "mlm_loss": window["mlm_loss"] / window["n"],
                         "pairing_loss": window["pairing_loss"] / window["n"],
                         "mlm_accuracy": window["mlm_correct"] / max(1, window["mlm_count"]),
                         "pairing_accuracy": window["pair_correct"] / max(1, window["pair_count"])}
                history.append(entry)
                emit({"event": "progress", **entry, "total": total, "lr": scheduler.get_last_lr()[0],
                      "steps_per_s": rate, "eta_s": (total - step) / max(rate, 1e-9)})
                window, t_window = Counter(), now
            if stopping or step % cfg.checkpoint_every == 0 or step == total:
                wall += time.perf_counter() - t_run
                t_run = time.perf_counter()
                save_checkpoint()
            if stopping and step < total:
                emit({"event": "message", "message": f"stopped at step {step}/{total}; checkpoint in "
                                                     f"{out / CHECKPOINT_DIR} (continue with --resume)"})
                return {"stopped": True, "step": step, "total_steps": total}
        wall += time.perf_counter() - t_run

        heldout = evaluate(model, held, cfg) if held is not None else None
        tmp = _temp_dir(out, ENCODER_DIR)
        ReportEncoder(model.bert.cpu(), tokenizer).save_pretrained(tmp)
        _replace_dir(tmp, out / ENCODER_DIR)
        model.train()

    metrics = {
        "text_encoder": str(out / ENCODER_DIR),
        "config": {**cfg.to_dict(), "lr": cfg.learning_rate(), "warmup_steps": warmup},
        "model": {"hidden": bert_config.hidden_size, "layers": bert_config.num_hidden_layers,
                  "heads": bert_config.num_attention_heads, "intermediate": bert_config.intermediate_size,
                  "vocab_size": bert_config.vocab_size, "max_positions": bert_config.max_position_embeddings,
                  "encoder_parameters": parameters, **notes},
        "tokenizer": {"source": tokenizer_source, "vocab_size": len(tokenizer.get_vocab()),
                      "do_lower_case": do_lower_case},
        "corpus": {"source": str(reports) if isinstance(reports, (str, Path)) else "list of strings",
                   "reports": len(corpus), "train": len(train), "heldout": len(held) if held else 0,
                   "skipped": skipped, "sha256": digest},
        "steps": step, "total_steps": total, "wall_time_s": round(wall, 3),
        "steps_per_s": round((step - first) / max(wall - wall_before, 1e-9), 3) if step > first else None,
        "heldout": heldout, "final_train": history[-1] if history else None, "history": history,
    }
    _write_json(out / METRICS_FILE, metrics)
    if heldout:
        emit({"event": "message", "message": f"held-out ({heldout['reports']} reports): MLM accuracy "
              f"{heldout['mlm_accuracy']:.3f}, pairing accuracy {heldout['pairing_accuracy']:.3f}"})
    emit({"event": "message", "message": f"wrote {out / ENCODER_DIR} and {out / METRICS_FILE}"})
    return metrics


# --- command line ---------------------------------------------------------------------------------------------
OPTIONS = (("steps", int, "optimisation steps (default 300)"), ("epochs", float, "or passes over the reports"),
           ("batch_size", int, "reports per step (default 16)"),
           ("lr", float, "peak learning rate (default 1e-4 with --init, 5e-4 from scratch)"),
           ("vocab_size", int, "WordPiece vocabulary learnt from scratch (default 3000)"),
           ("hidden", int, "from scratch: hidden size (default 128)"), ("layers", int, "from scratch: layers (2)"),
           ("heads", int, "from scratch: attention heads (4)"), ("seed", int, "seed of everything (0)"),
           ("max_length", int, "word pieces per example (256)"), ("device", str, "cpu (default), auto, cuda[:N]"))


def add_parser(sub) -> None:
    p = sub.add_parser("train-text", help="train the report text encoder (masked LM + Findings/Impression pairing)",
                       description="Train the report encoder on FINDINGS/IMPRESSION reports; writes "
                                   "OUT/text_encoder (for ReportEncoder.from_pretrained) and OUT/training.json.")
    p.add_argument("--reports", required=True, type=Path,
                   help="manifest CSV (column report = text file relative to it, or report_text) or folder of *.txt")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--init", type=Path, default=None,
                   help="start from this BERT-family folder (config.json, vocab.txt, weights); default: from scratch")
    p.add_argument("--config", type=Path, default=None, help="JSON file of defaults (command-line options win)")
    for name, kind, text in OPTIONS:
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=text)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument("--skip-bad", action="store_true", default=None,
                   help="skip reports without both FINDINGS and IMPRESSION (logged) instead of stopping")
    p.set_defaults(func=_run)


def config_from_args(args) -> TextTrainConfig:
    values = json.loads(Path(args.config).read_text()) if args.config else {}
    if not isinstance(values, dict):
        raise ValueError(f"{args.config} must hold a JSON object of options")
    for name, _, _ in OPTIONS:
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
            if name in ("steps", "epochs"):
                values.pop("epochs" if name == "steps" else "steps", None)
    if args.steps is not None and args.epochs is not None:
        raise ValueError("give --steps or --epochs, not both")
    if args.init is not None:
        values["init"] = str(args.init)
    if args.skip_bad:
        values["skip_bad"] = True
    return TextTrainConfig.from_dict(values)


def _run(args) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        config = config_from_args(args)
    except (ValueError, json.JSONDecodeError) as err:
        print(f"medsyn train-text: {err}", file=sys.stderr)
        return 2
    interrupted = []

    def request_stop(signum, frame):
        if interrupted:
            raise KeyboardInterrupt
        interrupted.append(signum)
        print("\nstopping after this step (checkpoint follows); interrupt again to abort", file=sys.stderr)

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        metrics = train_text_encoder(args.reports, args.out, config, resume=args.resume, progress=_print_progress,
                                     stop=lambda: bool(interrupted))
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"medsyn train-text: {err}", file=sys.stderr)
        return 2
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if metrics.get("stopped"):
        return 130 if interrupted else 0
    summary = {k: metrics[k] for k in ("text_encoder", "steps", "wall_time_s", "heldout")}
    print(json.dumps({"event": "done", **summary}), flush=True)
    return 0
