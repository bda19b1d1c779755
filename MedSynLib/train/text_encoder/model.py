"""The pre-training network (BERT + masked-LM head + pairing classifier), its optimizer and schedule."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from transformers import BertConfig, BertModel
from transformers.models.bert.modeling_bert import BertOnlyMLMHead

from ...models.text_encoder import encoder_state, fit_positions, read_weights
from .config import TextTrainConfig, draw_generator
from .examples import IGNORE


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


def bert_config_from(fields: dict) -> BertConfig:
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
        fields = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        bert_config = bert_config_from(fields)
        bert_config.max_position_embeddings = max(cfg.max_positions, bert_config.max_position_embeddings)
        weights = next((folder / n for n in ("model.safetensors", "pytorch_model.bin") if (folder / n).is_file()),
                       None)
        if weights is None:
            raise FileNotFoundError(f"--init folder {folder} has no model.safetensors or pytorch_model.bin")
        state = read_weights(weights)
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
        encoder = encoder_state(state)
        fit_positions(encoder, bert_config.max_position_embeddings, draw_generator(cfg.seed, "positions"))
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


def make_optimizer(model: nn.Module, cfg: TextTrainConfig) -> torch.optim.AdamW:
    decay, no_decay, seen = [], [], set()
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        (no_decay if p.ndim < 2 or "LayerNorm" in name else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=cfg.learning_rate(), betas=(0.9, 0.999), eps=1e-8)


def make_schedule(optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def losses(model: PretrainingModel, batch: dict) -> dict[str, torch.Tensor]:
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
