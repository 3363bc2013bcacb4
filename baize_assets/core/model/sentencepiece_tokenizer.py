"""A Llama-style SentencePiece tokenizer trained locally, in either layout Llama tokenizers ship in.

SentencePiece trains a BPE model as Llama's was made: byte fallback, digits split, no
normalization, ``<unk>`` ``<s>`` ``</s>`` at ids 0-2 and no pad token. Its pieces and
merges become a ``tokenizers`` BPE model laid out one of two ways:

* ``legacy``: as Llama 2's published ``tokenizer.json``: a normalizer prepends ``▁`` to the
  text and turns spaces into ``▁``, so every piece of text (also the one after a special
  token) starts with a word boundary, as SentencePiece itself encodes;
* ``first``: as transformers converts Llama and Mistral tokenizers now (``legacy=False``):
  a Metaspace pre-tokenizer with ``prepend_scheme: first`` adds the ``▁`` only at the very
  start of the text, so ``"<s>The"`` gives ``<s>``, ``The`` where ``"The"`` alone gives ``▁The``.

The chat markers stay plain text, split into pieces, as in any released Llama vocabulary.
"""

from __future__ import annotations

import io
from typing import Iterable, Literal

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SentencePieceLayout = Literal["legacy", "first"]
UNK, BOS, EOS = "<unk>", "<s>", "</s>"
WORD_BOUNDARY = "▁"  # SentencePiece's mark of a preceding space


def _merges(vocab: dict[str, int], ordinary: set[str]) -> list[tuple[str, str]]:
    """BPE merges that rebuild each ordinary piece, in vocabulary order (the order SentencePiece merged in)."""
    ranked = []
    for piece in ordinary:
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                ranked.append((vocab[piece], vocab[left], vocab[right], left, right))
    return [(left, right) for *_, left, right in sorted(ranked)]


def train_sentencepiece_model(texts: Iterable[str], vocab_size: int):
    """SentencePiece's own BPE model of at most ``vocab_size`` pieces, trained on ``texts`` as Llama's was."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        hard_vocab_limit=False,  # fewer pieces when the texts hold fewer
        byte_fallback=True,
        split_digits=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        max_sentence_length=1 << 16,
        minloglevel=2,
    )
    return sentencepiece.SentencePieceProcessor(model_proto=model.getvalue())


def train_sentencepiece_tokenizer(
    texts: Iterable[str], vocab_size: int, layout: SentencePieceLayout
) -> PreTrainedTokenizerFast:
    """A SentencePiece BPE tokenizer of at most ``vocab_size`` pieces trained on ``texts``, in ``layout``."""
    processor = train_sentencepiece_model(texts, vocab_size)
    vocab = {processor.id_to_piece(i): i for i in range(processor.get_piece_size())}
    ordinary = {
        piece
        for piece, i in vocab.items()
        if not (processor.is_control(i) or processor.is_unknown(i) or processor.is_byte(i))
    }
    tokenizer = Tokenizer(
        models.BPE(vocab=vocab, merges=_merges(vocab, ordinary), unk_token=UNK, byte_fallback=True, fuse_unk=True)
    )
    if layout == "legacy":
        tokenizer.normalizer = normalizers.Sequence(
            [normalizers.Prepend(WORD_BOUNDARY), normalizers.Replace(" ", WORD_BOUNDARY)]
        )
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(WORD_BOUNDARY, prepend_scheme="first", split=False)
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace(WORD_BOUNDARY, " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )  # Strip: the space prepended to the text
    tokenizer.add_special_tokens([AddedToken(token, normalized=False, special=True) for token in (UNK, BOS, EOS)])
    # As Llama's: encoding with special tokens puts BOS first (training adds it itself).
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, unk_token=UNK)
