"""Data for the loop: a seeded stratified split, tokenisation once, length-grouped batches, dynamic padding."""
from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass

import torch

from factory.training.types import CLASSIFICATION, Example, TrainingError

# Batches are sorted by length inside windows of this many batches, then the batches are shuffled:
# little padding, yet a different mix every epoch (as transformers' LengthGroupedSampler does).
MEGABATCH_FACTOR = 50
LABEL_PAD = -100
# A language model's fitted max length keeps this share of its examples whole (fitted_max_length).
FITTED_SHARE = 0.95


def split_examples(examples: list[Example], *, eval_split: float, seed: int, task: str) -> tuple[list, list]:
    """Split into train and eval, stratified by label for classification, reproducible from the seed."""
    if not 0 < eval_split < 1:
        raise TrainingError("The evaluation split must be between 0 and 1.")
    rng = random.Random(seed)
    groups: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        groups[ex.label if task == CLASSIFICATION else ""].append(ex)
    train, held = [], []
    for key in sorted(groups):
        items = groups[key][:]
        rng.shuffle(items)
        n_eval = round(len(items) * eval_split)
        if len(items) >= 2:
            n_eval = min(max(n_eval, 1), len(items) - 1)
        held.extend(items[:n_eval])
        train.extend(items[n_eval:])
    if not train or not held:
        raise TrainingError(
            f"Too few records ({len(examples)}) to hold out {eval_split:.0%} for evaluation; add records or "
            "change the split."
        )
    rng.shuffle(train)
    return train, held


@dataclass
class Encoded:
    """Tokenised examples: token ids (unpadded) and, for classification, the label index. For causal LMs
    `loss_masks` (when set) marks per token whether the loss is taken on it (a chat's assistant turns)."""

    input_ids: list[list[int]]
    labels: list[int]
    loss_masks: list[list[int]] | None = None
    dropped: int = 0  # conversations left with no assistant token after truncation

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> list[int]:
        return [len(x) for x in self.input_ids]


def encode(examples: list[Example], *, tokenizer, task: str, labels: list[str], max_length: int) -> Encoded:
    texts = [ex.text for ex in examples]
    if task == CLASSIFICATION:
        index = {name: i for i, name in enumerate(labels)}
        unknown = sorted({ex.label for ex in examples if ex.label not in index})
        if unknown:
            raise TrainingError(f"Records carry labels outside the label set {labels}: {unknown[:5]}")
        ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
        return Encoded(input_ids=ids, labels=[index[ex.label] for ex in examples])
    if any(ex.messages for ex in examples):
        return _encode_chats(examples, tokenizer=tokenizer, max_length=max_length)
    eos = tokenizer.eos_token_id
    room = max_length - (1 if eos is not None else 0)
    ids = tokenizer(texts, truncation=True, max_length=room, add_special_tokens=False)["input_ids"]
    ids = [(x + [eos]) if eos is not None else x for x in ids]
    ids = [x for x in ids if len(x) >= 2]
    if not ids:
        raise TrainingError("No record has enough text to train a language model on.")
    return Encoded(input_ids=ids, labels=[])


def _encode_chats(examples: list[Example], *, tokenizer, max_length: int) -> Encoded:
    """Conversations through the chat template, with the assistant-only mask; plain texts among them are
    trained on whole. A conversation truncated before its first answer is dropped (and counted)."""
    from factory.training.chat import encode_chat

    ids_all, masks, dropped = [], [], 0
    eos = tokenizer.eos_token_id
    for ex in examples:
        if ex.messages:
            ids, mask = encode_chat(tokenizer, list(ex.messages), max_length=max_length)
        else:
            ids = tokenizer(ex.text, truncation=True, max_length=max_length - 1, add_special_tokens=False)["input_ids"]
            ids = ids + ([eos] if eos is not None else [])
            mask = [1] * len(ids)
        if sum(mask[1:]) == 0:  # the first token is never predicted: nothing to learn from this one
            dropped += 1
            continue
        ids_all.append(ids)
        masks.append(mask)
    if not ids_all:
        raise TrainingError(f"No conversation keeps an assistant answer within {max_length} tokens; raise the "
                            "max sequence length.")
    return Encoded(input_ids=ids_all, labels=[], loss_masks=masks, dropped=dropped)


def causal_lm_lengths(examples: list[Example], *, tokenizer) -> list[int]:
    """Each example's tokens as `encode` makes them for a language model, before truncation: a conversation
    through the chat template, a plain text with its end-of-sequence token."""
    from factory.training.chat import encode_chat

    eos = 1 if tokenizer.eos_token_id is not None else 0
    return [len(encode_chat(tokenizer, list(ex.messages), max_length=1 << 30)[0]) if ex.messages else
            len(tokenizer(ex.text, add_special_tokens=False)["input_ids"]) + eos for ex in examples]


def fitted_max_length(lengths: list[int], *, floor: int, cap: int, share: float = FITTED_SHARE) -> int:
    """A language model's max sequence length for its data: long enough that `share` of the examples fit
    whole (rounded up to a multiple of 32), never below `floor` (a preset's value) nor above `cap` (the
    base's limit). A conversation cut before its answer teaches nothing and one cut inside it teaches half
    of it: a preset's 64 tokens, made for classifiers' sentences, dropped or cut most of the demo's chats."""
    if not lengths:
        return min(floor, cap)
    ordered = sorted(lengths)
    wanted = ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]
    return max(1, min(cap, max(floor, -(-wanted // 32) * 32)))


def pack(data: Encoded, *, max_length: int, seed: int) -> Encoded:
    """Whole examples packed into rows of at most `max_length` tokens (first fit, longest first; the rows
    then shuffled by the seed). Examples in one row attend to each other, as TRL's "wrapped" packing does;
    the loss mask keeps each example's own. Fewer pad tokens, fewer steps."""
    masks = data.loss_masks or [[1] * len(x) for x in data.input_ids]
    order = sorted(range(len(data)), key=lambda i: -len(data.input_ids[i]))
    rows: list[list[int]] = []
    room: list[int] = []
    for i in order:
        n = len(data.input_ids[i])
        slot = next((r for r, left in enumerate(room) if left >= n), None)
        if slot is None:
            rows.append([])
            room.append(max_length)
            slot = len(rows) - 1
        rows[slot].append(i)
        room[slot] -= n
    random.Random(seed).shuffle(rows)
    ids = [[t for i in row for t in data.input_ids[i]] for row in rows]
    packed_masks = [[m for i in row for m in masks[i]] for row in rows]
    return Encoded(input_ids=ids, labels=[], loss_masks=packed_masks, dropped=data.dropped)


def batch_order(lengths: list[int], *, batch_size: int, seed: int, epoch: int, group_by_length: bool) -> list[list[int]]:
    """The batches of one epoch, a pure function of (lengths, seed, epoch): resuming regenerates it exactly."""
    rng = random.Random(seed * 1_000_003 + epoch)
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    if not group_by_length:
        return [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
    mega = batch_size * MEGABATCH_FACTOR
    batches: list[list[int]] = []
    for start in range(0, len(idx), mega):
        chunk = sorted(idx[start:start + mega], key=lambda j: -lengths[j])
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    # The longest batch goes first, so a batch size that does not fit fails at once, not at the end.
    longest = max(range(len(batches)), key=lambda b: max(lengths[j] for j in batches[b]))
    batches.insert(0, batches.pop(longest))
    return batches


def collate(data: Encoded, indices: list[int], *, pad_id: int, task: str) -> dict[str, torch.Tensor]:
    """Pad one batch to its own longest sequence (dynamic padding)."""
    seqs = [data.input_ids[i] for i in indices]
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        input_ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, :len(seq)] = 1
    batch = {"input_ids": input_ids, "attention_mask": mask}
    if task == CLASSIFICATION:
        batch["labels"] = torch.tensor([data.labels[i] for i in indices], dtype=torch.long)
    else:
        labels = input_ids.clone()
        labels[mask == 0] = LABEL_PAD
        if data.loss_masks is not None:  # assistant tokens only
            for row, i in enumerate(indices):
                keep = torch.tensor(data.loss_masks[i], dtype=torch.bool)
                labels[row, :len(keep)][~keep] = LABEL_PAD
        batch["labels"] = labels
    return batch
