"""A language model's max sequence length fitted to its Datanet: conversations whose answers a preset's 64
tokens would cut or drop get a length that keeps them whole (95% of them), within the base's limit."""
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from datanets import services as datanet_services
from datanets.models import Datanet
from datanets.tests.factories import DatanetFactory, contributor, curator_of
from factory import services
from factory.training.data import causal_lm_lengths, encode, fitted_max_length
from factory.training.modeling import load_tokenizer
from factory.training.tiny import build_tiny_causal_lm
from factory.training.types import Example

pytestmark = pytest.mark.django_db

LINE = "the quick brown fox jumps over the lazy dog and runs far away"


def long_answers(n: int = 20) -> list[str]:
    """n answers of 2-5 lines, each in words of its own: the same line repeated would make the answers
    near-duplicates of each other (ingest clusters them), and a fine-tune trains on one copy only."""
    return [" ".join(f"{w}{i}" for w in LINE.split()) + (" " + " ".join(f"{w}{i}" for w in LINE.split())) * (1 + i % 4)
            for i in range(n)]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-llama"), family="llama", max_positions=512)


def chat_version(answers: list[str], *, who: str = "ann"):
    datanet = DatanetFactory(task=Datanet.Task.CHAT, labels=[])
    cora = curator_of(datanet)
    lines = [json.dumps({"messages": [{"role": "user", "content": f"Continue passage {i}:"},
                                      {"role": "assistant", "content": a}]}) for i, a in enumerate(answers)]
    result = datanet_services.contribution_upload(datanet=datanet, contributor=contributor(who), inline=True,
                                                  file_name="chat.jsonl",
                                                  file=SimpleUploadedFile("chat.jsonl", "\n".join(lines).encode()))
    assert result.contribution.record_count == len(answers), result.contribution.ingest_errors
    datanet_services.contribution_accept(contribution=result.contribution, curator=cora)
    return datanet_services.datanet_version_create(datanet=datanet, user=cora)


def test_fitted_max_length_keeps_the_share_whole_within_floor_and_cap():
    lengths = list(range(1, 101))  # 95% of them are at most 95 tokens
    assert fitted_max_length(lengths, floor=64, cap=512) == 96
    assert fitted_max_length(lengths, floor=64, cap=80) == 80
    assert fitted_max_length([10] * 50, floor=64, cap=512) == 64
    assert fitted_max_length(lengths, floor=64, cap=512, share=1.0) == 128
    assert fitted_max_length([], floor=64, cap=32) == 32


def test_long_conversations_get_a_longer_max_length_that_keeps_them_whole(llama_dir):
    base = services.base_model_register(path=str(llama_dir), name="tiny-llama")
    long_version = chat_version(long_answers())
    fitted = services.generation_max_length(datanet_version=long_version, base_model=base, floor=64)
    assert 64 < fitted <= base.max_length and fitted % 32 == 0

    tokenizer = load_tokenizer(str(llama_dir), chat_template=base.chat_template)
    examples = [Example(text=t, messages=json.loads(t)) for t in long_version.records.values_list("text", flat=True)]
    lengths = causal_lm_lengths(examples, tokenizer=tokenizer)
    assert max(lengths) > 64  # the preset's 64 would cut these answers ...
    cut = encode(examples, tokenizer=tokenizer, task="generation", labels=[], max_length=64)
    assert sum(len(ids) < n for ids, n in zip(cut.input_ids, lengths, strict=True)) > len(examples) // 2
    whole = encode(examples, tokenizer=tokenizer, task="generation", labels=[], max_length=fitted)
    assert [len(ids) for ids in whole.input_ids] == lengths  # ... the fitted length keeps them all whole

    small = services.base_model_register(path=str(llama_dir), name="tiny-llama-short")
    small.max_length = 96
    assert services.generation_max_length(datanet_version=long_version, base_model=small, floor=64) == 96
    short_version = chat_version([f"Yes {i}." for i in range(8)], who="ben")
    assert services.generation_max_length(datanet_version=short_version, base_model=base, floor=64) == 64

    # The preset fills it for a language model on the version; a classifier keeps the preset's length.
    assert services.preset_params(preset="balanced", base_model=base, datanet_version=long_version,
                                  task="generation")["max_length"] == fitted
    assert services.preset_params(preset="balanced", base_model=base, datanet_version=long_version,
                                  task="classification")["max_length"] == 64
    assert services.preset_params(preset="balanced", base_model=base)["max_length"] == 64


def test_the_form_fills_a_chat_fine_tunes_max_length_from_its_version(client, llama_dir):
    from django.urls import reverse

    from factory.tests.factories import developer

    base = services.base_model_register(path=str(llama_dir), name="tiny-llama")
    base.tasks = ["generation"]  # as the demo chat base: the form picks generation for it
    base.save(update_fields=["tasks"])
    version = chat_version(long_answers())
    fitted = services.generation_max_length(datanet_version=version, base_model=base, floor=64)
    client.force_login(developer(username="dev"))
    html = client.get(reverse("factory:finetune-new"), {"base_model": base.pk, "datanet_version": version.pk}).content.decode()
    assert f'name="max_length" value="{fitted}"' in html and fitted > 64
    # the task select redraws the form too (a classifier keeps the preset's 64: test above)
    assert 'name="task"' in html and html.split('name="task"')[1].split(">")[0].count("hx-get") == 1
