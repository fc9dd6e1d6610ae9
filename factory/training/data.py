"""Data for the loop: a seeded stratified split, tokenisation once, length-grouped batches, dynamic padding."""
from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

import torch

from factory.training.types import CLASSIFICATION, Example, TrainingError

# Batches are sorted by length inside windows of this many batches, then the batches are shuffled:
# little padding, yet a different mix every epoch (as transformers' LengthGroupedSampler does).
MEGABATCH_FACTOR = 50
LABEL_PAD = -100


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
    """Tokenised examples: token ids (unpadded) and, for classification, the label index."""

    input_ids: list[list[int]]
    labels: list[int]

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
    eos = tokenizer.eos_token_id
    room = max_length - (1 if eos is not None else 0)
    ids = tokenizer(texts, truncation=True, max_length=room, add_special_tokens=False)["input_ids"]
    ids = [(x + [eos]) if eos is not None else x for x in ids]
    ids = [x for x in ids if len(x) >= 2]
    if not ids:
        raise TrainingError("No record has enough text to train a language model on.")
    return Encoded(input_ids=ids, labels=[])


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
        batch["labels"] = labels
    return batch
