"""A CLIPTokenizer built offline: CLIP's byte alphabet plus, optionally, one whole-word token per word.

No vocabulary can be downloaded here. With no words it is a byte-level CLIP BPE (514 tokens) for
random test and benchmark models; the miniature model passes the world's words, whose BPE merges
join each into a single token, so captions become short word sequences a tiny text encoder can
learn. Any other text still tokenizes, byte by byte.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers.pre_tokenizers import ByteLevel
from transformers import CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def offline_clip_tokenizer(folder: str | Path, max_length: int = 77, words=()) -> CLIPTokenizer:
    """Write vocab.json/merges.txt to `folder` and load them as a CLIPTokenizer (bos 0, eos = pad 1)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = sorted(ByteLevel.alphabet())
    merges = _word_merges(list(words))
    tokens = [BOS, EOS, *alphabet, *(a + "</w>" for a in alphabet), *(m.replace(" ", "") for m in merges)]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges))
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": max_length}))
    tokenizer = CLIPTokenizer.from_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))  # complete the folder (special tokens map, tokenizer.json)
    return tokenizer


def _chain(word: str) -> list[str]:
    """Merges that join a word left to right: "r e", "re d</w>"."""
    pieces = [*word[:-1], word[-1] + "</w>"]
    out, joined = [], pieces[0]
    for piece in pieces[1:]:
        out.append(f"{joined} {piece}")
        joined += piece
    return out


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    parts = [*word[:-1], word[-1] + "</w>"]
    while len(parts) > 1:
        pairs = [(ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
        rank, i = min(pairs)
        if rank == 1 << 30:
            break
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return parts


def _word_merges(words: list[str]) -> list[str]:
    """Order the words' merge chains so that no word's chain is cut short by another's merges.

    BPE applies the lowest-ranked merge first; a word whose inner letter pair starts another
    word's chain ("an" inside "orange") can end up in pieces. Words that split move to the
    front and the order is tried again.
    """
    order, merges = list(dict.fromkeys(words)), []
    for _ in range(4 * len(order)):
        merges = list(dict.fromkeys(m for w in order for m in _chain(w)))
        ranks = {tuple(m.split(" ")): i for i, m in enumerate(merges)}
        split = [w for w in order if len(_bpe(w, ranks)) > 1]
        if not split:
            return merges
        order = split + [w for w in order if w not in split]
    return merges  # best effort: a split word still tokenizes, in a few pieces
