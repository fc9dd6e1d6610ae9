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


def build_demo_generator(path: str | Path, *, texts: list[str], steps: int, log=None) -> dict | None:
    """The demo's generation base, "tiny-gpt2 (Shakespeare)": a 2-layer, 128-wide GPT-2 with a BPE of
    2,000 tokens trained on `texts`, pre-trained for `steps` steps (none when 0). Returns the
    pre-training's losses and seconds (pretrain_causal_lm), or None without pre-training."""
    from factory.training.pretrain import pretrain_causal_lm

    build_tiny_gpt2(path, texts=texts[:4000], vocab_size=2000, n_embd=128, n_layer=2, n_head=2, n_positions=256)
    if steps <= 0:
        return None
    return pretrain_causal_lm(path, texts=texts, steps=steps, batch_size=32, log=log)


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
