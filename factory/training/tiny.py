"""Tiny random models saved with save_pretrained, as transformers' own tests build them.

For tests and the demo's generation entry: no weights can be downloaded on these machines. The GPT-2
gets a byte-level BPE tokenizer trained on the given text, so it round-trips any input.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch

EOS = "<|endoftext|>"
SAMPLE_TEXT = [
    "First Citizen: Before we proceed any further, hear me speak.",
    "All: Speak, speak. You are all resolved rather to die than to famish?",
    "Operating profit rose to EUR 13.1 mn from EUR 8.7 mn in the corresponding period in 2007.",
    "The company's net sales decreased by 5% compared to the previous year.",
]


def build_tiny_gpt2(path: str | Path, *, texts: list[str] | None = None, vocab_size: int = 320,
                    n_embd: int = 32, n_layer: int = 2, n_head: int = 2, n_positions: int = 256,
                    seed: int = 0) -> Path:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts or SAMPLE_TEXT, vocab_size=vocab_size, min_frequency=1,
                            special_tokens=[EOS], show_progress=False)
    special = dict.fromkeys(("bos_token", "eos_token", "unk_token"), EOS)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, model_max_length=n_positions, **special)
    tok.save_pretrained(str(path))
    eos = tok.convert_tokens_to_ids(EOS)
    config = GPT2Config(vocab_size=len(tok), n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                        n_positions=n_positions, bos_token_id=eos, eos_token_id=eos)
    torch.manual_seed(seed)
    GPT2LMHeadModel(config).save_pretrained(str(path))
    return path


def build_chat_tokenizer(path: str | Path, *, texts: list[str], vocab_size: int = 8000,
                         model_max_length: int = 512):
    """A byte-level BPE trained on `texts` with ChatML's special tokens and chat template, saved to `path`.
    Byte-level: every input round-trips, whatever the corpus was."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    from factory.training.chat import CHATML_SPECIAL_TOKENS, CHATML_TEMPLATE

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=CHATML_SPECIAL_TOKENS,
                            show_progress=False)
    endoftext, start, end = CHATML_SPECIAL_TOKENS
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, model_max_length=model_max_length,
                                  bos_token=endoftext, eos_token=end, pad_token=endoftext, unk_token=None,
                                  additional_special_tokens=[start])
    tok.chat_template = CHATML_TEMPLATE
    tok.save_pretrained(str(path))
    return tok


# Tiny random configs of each causal-LM family the catalog is tested on (transformers' own test sizes).
FAMILIES = ("llama", "qwen2", "mistral", "gemma", "phi")


def _family_config(family: str, *, vocab_size: int, hidden: int, layers: int, heads: int, kv_heads: int,
                   intermediate: int, max_positions: int, ids: dict):
    import transformers

    common = dict(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                  intermediate_size=intermediate, max_position_embeddings=max_positions, **ids)
    if family == "llama":
        return transformers.LlamaConfig(num_key_value_heads=kv_heads, tie_word_embeddings=True, **common)
    if family == "qwen2":
        return transformers.Qwen2Config(num_key_value_heads=kv_heads, tie_word_embeddings=True, **common)
    if family == "mistral":
        return transformers.MistralConfig(num_key_value_heads=kv_heads, sliding_window=None, **common)
    if family == "gemma":
        return transformers.GemmaConfig(num_key_value_heads=kv_heads, head_dim=hidden // heads, **common)
    if family == "phi":
        return transformers.PhiConfig(num_key_value_heads=heads, partial_rotary_factor=0.5, **common)
    raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")


def build_tiny_causal_lm(path: str | Path, *, family: str = "llama", texts: list[str] | None = None,
                         vocab_size: int = 400, hidden: int = 32, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                         intermediate: int = 64, max_positions: int = 256, seed: int = 0) -> Path:
    """A random causal LM of `family` with a ChatML tokenizer trained on `texts`, via save_pretrained."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    path = Path(path)
    tok = build_chat_tokenizer(path, texts=texts or SAMPLE_TEXT * 4, vocab_size=vocab_size,
                               model_max_length=max_positions)
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    config = _family_config(family, vocab_size=len(tok), hidden=hidden, layers=layers, heads=heads,
                            kv_heads=kv_heads, intermediate=intermediate, max_positions=max_positions, ids=ids)
    config.architectures = [f"{type(config).__name__.removesuffix('Config')}ForCausalLM"]
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    # Generation stops at the end of the assistant's turn (<|im_end|>) or at <|endoftext|>.
    model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id,
                                               eos_token_id=[tok.eos_token_id, tok.bos_token_id])
    model.save_pretrained(str(path))
    return path


# The demo's chat base: ~5M parameters, a size a 2-core CPU pre-trains in minutes.
DEMO_CHAT_BASE = dict(vocab_size=8000, hidden=256, layers=4, heads=4, kv_heads=4, intermediate=688,
                      max_positions=512)


def build_demo_chat_base(path: str | Path, *, texts: list[str], steps: int, on_progress=None,
                         should_stop=None, threads: int = 0) -> dict | None:
    """The demo's generation base: a Llama-architecture chat model (DEMO_CHAT_BASE) whose ChatML BPE and
    weights are trained here on `texts` (no download), pre-trained for `steps` steps (none when 0) on the
    text and on "continue this passage" conversations, so it knows the chat format before any fine-tune.
    Returns pretrain_causal_lm's figures, or None without pre-training."""
    from factory.training.pretrain import chat_corpus, pretrain_causal_lm

    build_tiny_causal_lm(path, family="llama", texts=texts, **DEMO_CHAT_BASE)
    if steps <= 0:
        return None
    return pretrain_causal_lm(path, texts=chat_corpus(texts, path=path), steps=steps, seq_len=128, batch_size=8,
                              lr=2e-3, on_progress=on_progress, should_stop=should_stop, threads=threads)


def build_demo_generator(path: str | Path, *, texts: list[str], steps: int, log=None) -> dict | None:
    """The earlier demo base, "tiny-gpt2 (Shakespeare)": a 2-layer, 128-wide GPT-2 with a BPE of 2,000
    tokens trained on `texts`, pre-trained for `steps` steps. Kept for the span benchmark's comparison."""
    from factory.training.pretrain import pretrain_causal_lm

    build_tiny_gpt2(path, texts=texts[:4000], vocab_size=2000, n_embd=128, n_layer=2, n_head=2, n_positions=256)
    if steps <= 0:
        return None
    return pretrain_causal_lm(path, texts=texts, steps=steps, batch_size=32,
                              on_progress=(lambda s, t, loss: log(f"pre-training step {s}/{t}: loss {loss:.3f}")
                                           if log and s % 100 == 0 else None))


def build_tiny_bert(path: str | Path, *, vocab_from: str | Path, hidden_size: int = 32, layers: int = 2,
                    heads: int = 2, seed: int = 0) -> Path:
    """A random BERT sharing `vocab_from`'s WordPiece tokenizer (e.g. MiniLM's)."""
    from transformers import BertConfig, BertModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    src = Path(vocab_from)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (src / name).is_file():
            shutil.copy(src / name, path / name)
    vocab = sum(1 for _ in open(src / "vocab.txt", encoding="utf-8"))
    config = BertConfig(vocab_size=vocab, hidden_size=hidden_size, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=hidden_size * 2, max_position_embeddings=128,
                        architectures=["BertModel"])
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(str(path))
    return path
