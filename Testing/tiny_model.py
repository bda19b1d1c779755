"""Builds a tiny random-weight MedSyn model folder (text encoder + both stages + model.json) for tests.

The weights are random: outputs mean nothing, but every code path (encoding, both stages, holding, writing,
geometry) runs for real, in seconds, on the CPU.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import BertConfig, BertModel, BertTokenizer

from MedSynLib.io.images import Geometry
from MedSynLib.models import LowResUNet, SuperResUNet, UNetConfig
from MedSynLib.models.text_encoder import ReportEncoder
from MedSynLib.models_hub.bundle import write_model_spec
from MedSynLib.models_hub.store import save_stage

WORDS = ("findings impression no pleural effusion large bilateral effusions the heart is enlarged lungs are clear "
         "emphysema with bullae consolidation right lower lobe cardiomegaly normal chest ct . , :").split()
GRID = Geometry((32, 32, 32), (4.0, 4.0, 4.0), (-62.0, -62.0, -62.0))


def build_tiny_model(folder: Path, seed: int = 0) -> Path:
    folder = Path(folder)
    torch.manual_seed(seed)
    text_dir = folder / "text_encoder"
    text_dir.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(WORDS))
    (text_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    bert = BertModel(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32, max_position_embeddings=2048), add_pooling_layer=False)
    ReportEncoder(bert, BertTokenizer(str(text_dir / "vocab.txt"))).save_pretrained(text_dir)
    save_stage(LowResUNet(UNetConfig(kind="lowres", dim=8, dim_mults=(1, 2), attn_heads=1, text_dim=16,
                                     mid_depth=1)), folder / "lowres")
    save_stage(SuperResUNet(UNetConfig(kind="superres", dim=8, dim_mults=(1, 2), attn_heads=1, mid_depth=1)),
               folder / "superres")
    write_model_spec(folder, name="tiny-test", title="tiny random test model", license="Apache-2.0", grid=GRID,
                     defaults={"steps_lowres": 4, "steps_sr": 2, "guidance": 1.0, "sampler": "ddim"})
    return folder
