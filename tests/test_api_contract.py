"""The API contract: schemathesis fuzzes every operation of /api/v1/schema/ (all methods, every check,
the examples, coverage, fuzzing and stateful phases following the schema's links) against a live test
server with seeded data, the contracts on anvil and an API token, and finds nothing.

Run alone: `pytest tests/test_api_contract.py` (5-15 minutes on two cores). What it finds is printed with a
curl line to reproduce each failure. `schemathesis.toml` (repository root) names the business rules a JSON
schema cannot state; MF_CONTRACT_EXAMPLES sets the examples per operation.
"""
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from ledger.tests.conftest import chain_deployment, chain_settings, chain_tx  # noqa: F401 - fixtures

pytestmark = [pytest.mark.slow, pytest.mark.chain, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parent.parent

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
MAX_EXAMPLES = int(os.environ.get("MF_CONTRACT_EXAMPLES", "5"))
SEED = 14
CSV = b"text,label\nrevenue rose by a fifth,positive\nthe plant closed,negative\nsales held steady,neutral\n"


def seed() -> str:
    """Users, a Datanet with a pending and an accepted contribution and a version; returns the fuzzer's token
    (staff, with every role: every operation is reachable)."""
    from rest_framework.authtoken.models import Token

    from accounts.services import user_create
    from core.roles import ROLES
    from datanets import services

    fuzzer = user_create(username="fuzzer", password=secrets.token_urlsafe(), roles=list(ROLES), is_staff=True)
    owner = user_create(username="owner", password=secrets.token_urlsafe(), roles=list(ROLES))
    alice = user_create(username="alice", password=secrets.token_urlsafe(), roles=list(ROLES))
    datanet = services.datanet_create(owner=owner, curators=[owner, fuzzer], name="Contract news",
                                      labels=["positive", "negative", "neutral"])
    for user, body in ((alice, CSV), (owner, CSV.replace(b"fifth", b"third"))):
        services.contribution_upload(datanet=datanet, contributor=user, file=SimpleUploadedFile("n.csv", body),
                                     file_name="n.csv", inline=True)
    accepted = datanet.contributions.get(contributor=alice)
    services.contribution_accept(contribution=accepted, curator=owner)
    services.datanet_version_create(datanet=datanet, user=owner)
    return Token.objects.create(user=fuzzer).key


@pytest.fixture
def _fast(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    from accounts.authentication import ApiKeyRateThrottle

    # the fuzzer sends thousands of requests a minute; the limit itself is tested in accounts/tests
    rate = ApiKeyRateThrottle.USER_RATE
    ApiKeyRateThrottle.USER_RATE = "100000/min"
    yield
    ApiKeyRateThrottle.USER_RATE = rate


def test_schemathesis_finds_no_failures(live_server, chain_tx, _fast, tmp_path):  # noqa: F811
    token = seed()
    cmd = [str(SCHEMATHESIS), "--config-file", str(ROOT / "schemathesis.toml"), "--no-color", "run",
           f"{live_server.url}/api/v1/schema/?format=json", "--checks", "all", "--phases", "examples,coverage,fuzzing,stateful", "-H", f"Authorization: Token {token}",
           "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED), "--workers", "1",
           "--request-timeout", "60", "--report", "junit", "--report-dir", str(tmp_path)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=2400, check=False, cwd=tmp_path)
    print(run.stdout[-20000:], run.stderr[-4000:])
    assert run.returncode == 0, f"schemathesis found failures (exit {run.returncode}):\n{run.stdout[-6000:]}"
