"""The WordPiece vocabulary learnt on the corpus, and the tokenizer that reads it."""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from transformers import BertTokenizer

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0..4, as in CXR-BERT


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
