"""The API contract: schemathesis fuzzes every operation of /api/v1/schema/ (all methods, every check,
stateful links) against a live test server with seeded data and an API token, and finds nothing.

Run alone: `pytest tests/test_api_contract.py` (about a few minutes on two cores). What it finds is
printed with a curl line to reproduce each failure.
"""
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
MAX_EXAMPLES = int(os.environ.get("MF_CONTRACT_EXAMPLES", "8"))
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


def test_schemathesis_finds_no_failures(live_server, _fast, tmp_path):
    token = seed()
    cmd = [str(SCHEMATHESIS), "run", f"{live_server.url}/api/v1/schema/?format=json", "--checks", "all",
           "--phases", "examples,coverage,fuzzing,stateful", "-H", f"Authorization: Token {token}",
           "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED), "--workers", "1", "--no-color",
           "--request-timeout", "60", "--report", "junit", "--report-dir", str(tmp_path)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
    print(run.stdout[-20000:], run.stderr[-4000:])
    assert run.returncode == 0, f"schemathesis found failures (exit {run.returncode}):\n{run.stdout[-6000:]}"
