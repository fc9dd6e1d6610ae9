"""Publish and verify: a model's contributor weights as an OpenZeppelin Merkle tree, its root on-chain once
through the outbox, the file downloadable, and `verify_attribution` checking a file against the chain."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse

from accounts.tests.factories import UserFactory
from attribution import services
from attribution.models import AttributionIndex, AttributionPublication, ModelContributorWeight
from attribution.publication import (
    UNITS,
    attribution_weights_publish,
    model_onchain_register,
    published_matches_current,
    weight_units,
    weights_file_check,
)
from attribution.tests.factories import make_model
from ledger.models import LedgerTransaction
from ledger.services import address_for_user
from ledger.tests.conftest import chain_deployment, chain_settings, chain_tx  # noqa: F401 - chain fixtures

ROOT = Path(__file__).resolve().parents[2]
ZERO = "0x" + "00" * 32
THIRD = Decimal("0.333333333333333333")
MODEL_KINDS = ["model_register", "attribution_root_set"]  # the version's own rows (datanet, stakes, root) aside


@pytest.fixture
def model(trained_adapter, attr_base_dir, tmp_path):
    return make_model(adapter_src=trained_adapter, base_dir=attr_base_dir, workdir=tmp_path)


def oz(document: dict) -> dict:
    """What OpenZeppelin's own merkle-tree package makes of the file: load (validates every node), root, proofs."""
    script = """
const { StandardMerkleTree } = require("@openzeppelin/merkle-tree");
const doc = JSON.parse(require("fs").readFileSync(0, "utf8"));
const tree = StandardMerkleTree.load(doc.tree);
const fresh = StandardMerkleTree.of(doc.tree.values.map(v => v.value), ["address", "uint256"]);
const ok = [...tree.entries()].every(([i, v]) => StandardMerkleTree.verify(tree.root, ["address", "uint256"], v, tree.getProof(i)));
console.log(JSON.stringify({root: tree.root, fresh: fresh.root, proofs_ok: ok}));
"""
    out = subprocess.run([shutil.which("node"), "-e", script], input=json.dumps(document), cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


def test_weight_units_are_exact_integers_that_sum_to_one():
    assert weight_units({1: THIRD, 2: THIRD, 3: THIRD + Decimal("1e-18")}) == {
        1: 333333333333333333, 2: 333333333333333333, 3: 333333333333333334}
    # more than 18 digits (not what the build stores, but never a float): rounded, remainder to the largest
    units = weight_units({4: Decimal("0.6666666666666666666"), 5: Decimal("0.3333333333333333334"), 6: Decimal(0)})
    assert units == {4: 666666666666666667, 5: 333333333333333333} and sum(units.values()) == UNITS
    assert weight_units({}) == {}


@pytest.mark.django_db
def test_the_file_is_an_openzeppelin_tree_over_exact_weights(model, django_capture_on_commit_callbacks):
    a, b, c = UserFactory(), UserFactory(), UserFactory()
    weights = {a.pk: Decimal("0.5"), b.pk: Decimal("0.3") - Decimal("1e-18"), c.pk: Decimal("0.2") + Decimal("1e-18")}
    with django_capture_on_commit_callbacks():
        model_onchain_register(model_id=model.pk)  # registered before it had weights: its root is set afterwards
        publication = attribution_weights_publish(model=model, weights=weights)
    doc = publication.document
    assert doc["root"] == publication.root != ZERO
    assert doc["adapter_hash"] == "0x" + model.adapter_sha256
    assert doc["accounts"][address_for_user(b)] == {
        "user_ids": [b.pk], "usernames": [b.username], "weight": "0.299999999999999999", "units": "299999999999999999"}
    assert sum(int(v["value"][1]) for v in doc["tree"]["values"]) == UNITS
    # OpenZeppelin's package validates the dump, rebuilds the same root from the values, and verifies every proof
    assert oz(doc) == {"root": publication.root, "fresh": publication.root, "proofs_ok": True}
    assert weights_file_check(doc) == (publication.root, [])
    assert published_matches_current(publication=publication, weights=weights)
    assert not published_matches_current(publication=publication, weights={a.pk: Decimal(1)})

    # set once: the outbox row carries every value the ledger needs, and a second publish changes nothing
    row = LedgerTransaction.objects.get(kind="attribution_root_set")
    assert row.payload == {"model_id": model.pk, "adapter_hash": "0x" + model.adapter_sha256,
                           "root": publication.root, "uri": f"/api/v1/models/{model.pk}/attribution-weights"}
    assert attribution_weights_publish(model=model, weights={a.pk: Decimal(1)}).root == publication.root
    assert LedgerTransaction.objects.filter(kind="attribution_root_set").count() == 1
    assert attribution_weights_publish(model=model, weights={}).root == publication.root


@pytest.mark.django_db
def test_a_model_registered_after_publication_carries_its_root(model, django_capture_on_commit_callbacks):
    """The canvas's order (attribution/pipeline.py): weights published first, then the registration holds the
    real root, and no separate root write is needed."""
    a = UserFactory()
    with django_capture_on_commit_callbacks():
        publication = attribution_weights_publish(model=model, weights={a.pk: Decimal(1)})
        assert not LedgerTransaction.objects.filter(kind__in=MODEL_KINDS).exists()
        row = model_onchain_register(model_id=model.pk)
        assert model_onchain_register(model_id=model.pk).pk == row.pk  # idempotent per model
    assert row.kind == "model_register" and row.payload == {
        "model_id": model.pk, "name": model.name, "adapter_hash": "0x" + model.adapter_sha256,
        "base_model": model.base_model.name, "version_root": model.version_root, "attribution_root": publication.root,
        "developer_id": model.developer_id}
    assert publication.root != ZERO and LedgerTransaction.objects.filter(kind__in=MODEL_KINDS).count() == 1


@pytest.mark.django_db
def test_a_tampered_file_is_caught_without_the_chain(model, django_capture_on_commit_callbacks):
    a, b = UserFactory(), UserFactory()
    with django_capture_on_commit_callbacks():
        doc = attribution_weights_publish(model=model, weights={a.pk: Decimal("0.75"), b.pk: Decimal("0.25")}).document
    moved = json.loads(json.dumps(doc))  # one unit moved from a to b: still sums to 1e18
    for v in moved["tree"]["values"]:
        v["value"][1] = str(int(v["value"][1]) + (1 if v["value"][0] == address_for_user(b) else -1))
    root, problems = weights_file_check(moved)
    assert root != doc["root"] and any("says root" in p for p in problems)
    only_names = json.loads(json.dumps(doc))
    only_names["accounts"][address_for_user(a)]["units"] = "1"
    assert weights_file_check(only_names)[1] == ["the accounts list does not match the tree's values"]
    assert weights_file_check({"tree": {"format": "standard-v1", "leafEncoding": ["address", "uint256"],
                                        "values": [{"value": ["0xnot-an-address", "1"]}]}})[0] is None


@pytest.mark.django_db
def test_the_file_is_downloadable_from_the_api_and_the_model_page(model, django_capture_on_commit_callbacks):
    anon = Client()
    api = f"/api/v1/models/{model.pk}/attribution-weights"
    assert anon.get(api).status_code == 404
    a = UserFactory()
    with django_capture_on_commit_callbacks():
        publication = attribution_weights_publish(model=model, weights={a.pk: Decimal(1)})
    AttributionIndex.objects.create(model=model, status=AttributionIndex.Status.READY)
    ModelContributorWeight.objects.create(model=model, contributor=a, weight=Decimal(1), record_count=1)
    response = anon.get(api)  # public: anyone may check what is paid
    assert response.status_code == 200 and response.json() == publication.document
    download = anon.get(f"/attribution/models/{model.pk}/weights.json")
    assert download.status_code == 200 and "attachment" in download["Content-Disposition"]
    assert json.loads(download.content) == publication.document
    page = anon.get(reverse("factory:model", args=[model.pk]))
    assert page.status_code == 200
    assert f"/attribution/models/{model.pk}/weights.json" in page.content.decode()
    assert publication.root[:10] in page.content.decode()
    member = Client()
    member.force_login(UserFactory())
    details = member.get(reverse("attribution:model", args=[model.pk])).content.decode()
    assert publication.root in details and "queued" in details and "Rebuilt since" not in details


def _verify(env, model_id: int, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", "verify_attribution", str(model_id), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.chain
@pytest.mark.django_db(transaction=True)  # committed rows: the command runs in its own process
def test_publish_on_anvil_through_the_outbox_and_verify(chain_tx, worker_env, model, tmp_path):  # noqa: F811
    from ledger import outbox

    env = {**worker_env, "WEB3_PROVIDER_URI": chain_tx.url, "OMP_NUM_THREADS": "1"}
    model_onchain_register(model_id=model.pk)  # registered before it has weights: the zero placeholder root
    outbox.outbox_process()
    index = AttributionIndex.objects.create(model=model, settings=services.engine_settings())
    index = services.attribution_index_build(index_id=index.pk, hostname="test")
    assert index.status == AttributionIndex.Status.READY, index.error
    publication = AttributionPublication.objects.get(model=model)
    adapter = bytes.fromhex(model.adapter_sha256)
    registry = chain_tx.c["ModelRegistry"]
    assert registry.functions.getModel(adapter).call()[4] == b"\0" * 32

    not_yet = _verify(env, model.pk)
    assert not_yet.returncode == 1 and "no attribution root" in not_yet.stderr, not_yet.stdout + not_yet.stderr

    block = chain_tx.w3.eth.block_number
    outbox.outbox_process()
    rows = {r.kind: r for r in LedgerTransaction.objects.all()}
    assert rows["model_register"].status == rows["attribution_root_set"].status == "confirmed", \
        [(r.kind, r.last_error) for r in rows.values()]
    on_chain = "0x" + bytes(registry.functions.getModel(adapter).call()[4]).hex()
    assert on_chain == publication.root != ZERO
    (event,) = registry.events.AttributionRootSet().get_logs(from_block=block + 1)
    assert event.args.modelId == model.pk and "0x" + event.args.root.hex() == publication.root
    assert event.args.uri == f"/api/v1/models/{model.pk}/attribution-weights"

    ok = _verify(env, model.pk)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.count(publication.root) == 2  # both roots printed

    # the file as anyone downloads it verifies; the same file with one unit moved between two accounts does not
    downloaded = tmp_path / "weights.json"
    downloaded.write_bytes(Client().get(f"/api/v1/models/{model.pk}/attribution-weights").content)
    assert _verify(env, model.pk, "--file", str(downloaded)).returncode == 0
    doc = json.loads(downloaded.read_text())
    first, second = doc["tree"]["values"][:2]
    first["value"][1], second["value"][1] = str(int(first["value"][1]) - 1), str(int(second["value"][1]) + 1)
    for v in (first, second):
        doc["accounts"][v["value"][0]]["units"] = v["value"][1]
    from attribution.publication import _tree

    doc["root"], doc["tree"] = _tree([v["value"] for v in doc["tree"]["values"]])  # a consistent forgery
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(doc))
    bad = _verify(env, model.pk, "--file", str(tampered))
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert publication.root in bad.stdout and doc["root"] in bad.stdout
    assert "not the root on-chain" in bad.stderr
