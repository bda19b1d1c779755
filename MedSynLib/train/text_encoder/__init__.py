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

Files: ``config`` (options, seeds), ``corpus`` (reports, sections, held-out split), ``vocab`` (WordPiece),
``examples`` (pairing, masking), ``model`` (network, optimizer), ``checkpoint`` (run folder), ``loop`` (training,
evaluation), ``cli`` (``medsyn train-text``).

The names below load on first use, so that ``medsyn train-text --help`` (:mod:`.cli`) imports neither torch nor
transformers.
"""

from typing import TYPE_CHECKING

from ...lazy import lazy_exports

if TYPE_CHECKING:  # what the lazy names are, for editors and type checkers (nothing is imported at run time)
    from .checkpoint import CHECKPOINT_DIR, ENCODER_DIR, METRICS_FILE
    from .config import TextTrainConfig
    from .corpus import Report, ReportFormatError, corpus_digest, heldout_split, load_corpus, split_sections
    from .examples import Examples, mask_tokens
    from .loop import evaluate, train_text_encoder
    from .model import PretrainingModel, build_model
    from .vocab import SPECIAL_TOKENS, load_tokenizer, train_wordpiece_vocab, write_vocab

_EXPORTS = {"CHECKPOINT_DIR": "checkpoint", "ENCODER_DIR": "checkpoint", "METRICS_FILE": "checkpoint",
            "TextTrainConfig": "config", "Report": "corpus", "ReportFormatError": "corpus",
            "corpus_digest": "corpus", "heldout_split": "corpus", "load_corpus": "corpus", "split_sections": "corpus",
            "Examples": "examples", "mask_tokens": "examples", "evaluate": "loop", "train_text_encoder": "loop",
            "PretrainingModel": "model", "build_model": "model", "SPECIAL_TOKENS": "vocab",
            "load_tokenizer": "vocab", "train_wordpiece_vocab": "vocab", "write_vocab": "vocab"}
__all__ = list(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
