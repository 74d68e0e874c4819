"""The tiny Llama-architecture model and character-level tokenizer that ship with hydratune.

The default run must work on 2 CPU cores with no hub access, so the project builds its own base
model: a character-level tokenizer (made with the `tokenizers` library) and a small Llama config.
Everything here is deterministic: the same seed gives byte-identical files.
"""

from __future__ import annotations

import string
from pathlib import Path

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]
# Printable ASCII and a newline: enough for the synthetic corpus and for Alpaca-style templates.
CHARACTERS = list(string.printable[:95]) + ["\n"]

# A ChatML-like template, kept short because every character is one token.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '</s>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def char_backend(special_tokens: list[str], unk: str):
    """A `tokenizers` backend with the special tokens first, then one token per character."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {token: i for i, token in enumerate(special_tokens + CHARACTERS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    # Every character is its own pre-token; the decoder glues them back without spaces.
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return backend


def build_tokenizer():
    """Return a `PreTrainedTokenizerFast` with one token per character."""
    from transformers import PreTrainedTokenizerFast

    backend = char_backend(SPECIAL_TOKENS, "<unk>")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=1024,
        # BOS first, as Llama's own tokenizers do: tokenizer.json's post-processor writes it, so a plain
        # `tokenizer(prompt)` in transformers (or `tokenizers`) starts as every training row starts.
        add_bos_token=True,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_config(vocab_size: int, **overrides):
    """A Llama config small enough to train on a laptop CPU in a minute or two."""
    from transformers import LlamaConfig

    values = dict(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=384,  # a multiple of 64: bitsandbytes blocks 4-bit weights by 64 on CPU
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    values.update(overrides)
    return LlamaConfig(**values)


def build_random_model(seed: int = 0, **config_overrides):
    """A randomly initialised tiny Llama (float32) and its tokenizer."""
    import torch
    from transformers import LlamaForCausalLM

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(build_config(len(tokenizer), **config_overrides))
    return model, tokenizer


def save_random_model(out_dir: str | Path, seed: int = 0, **config_overrides) -> Path:
    """Write a random-init tiny Llama and its tokenizer in `save_pretrained` layout."""
    out_dir = Path(out_dir)
    model, tokenizer = build_random_model(seed, **config_overrides)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    from hydratune.export import save_tokenizer

    save_tokenizer(tokenizer, out_dir)
    return out_dir


ENCODER_SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def save_tiny_encoder(out_dir: str | Path, seed: int = 0, num_labels: int = 2) -> Path:
    """A random-init BERT-style encoder with a classification head of `num_labels` (as a fine-tuned hub
    classifier is saved) and its character tokenizer ([CLS] text [SEP], pairs with a second [SEP])."""
    import torch
    from tokenizers import processors
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    backend = char_backend(ENCODER_SPECIAL_TOKENS, "[UNK]")
    vocab = backend.get_vocab()
    cls, sep = vocab["[CLS]"], vocab["[SEP]"]
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=512,
        pad_token_id=vocab["[PAD]"],
        num_labels=num_labels,
    )
    torch.manual_seed(seed)
    out_dir = Path(out_dir)
    BertForSequenceClassification(config).save_pretrained(out_dir)
    from hydratune.export import save_tokenizer

    save_tokenizer(tokenizer, out_dir)
    return out_dir
