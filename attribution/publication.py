"""Publish a model's contributor weights as a Merkle tree and verify a weights file against the chain.

The tree is an OpenZeppelin `StandardMerkleTree` over (address account, uint256 weight in 1e-18 units),
the leaf encoding of the reward tree: anyone can recompute its root from the downloadable file with
`StandardMerkleTree.load(file.tree).root` (JS) or `manage.py verify_attribution`. The root goes on-chain
once per model through the ledger outbox: with the model's registration, the last step of the post-training
canvas (attribution/pipeline.py), or by `attribution_root_set` for a model registered before it had weights;
see docs/attribution.md.
"""
from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from django.contrib.auth import get_user_model
from django.db import transaction

from attribution.models import AttributionPublication
from attribution.selectors import model_contributor_weights, usernames
from core.errors import ApplicationError
from core.merkle import standard_tree
from factory.models import FineTunedModel
from ledger.selectors import model_attribution_root, transaction_get
from ledger.services import address_for_user, enqueue

LEAF_TYPES = ["address", "uint256"]
UNITS = 10**18  # a weight of 1 is 1e18 units, as token amounts are in wei
FILE_FORMAT = "model-factory-attribution-weights-v1"
WEIGHTS_API_PATH = "/api/v1/models/{model_id}/attribution-weights"
OUTBOX_KEY = "attribution_root_set:{model_id}"
REGISTER_KEY = "model_register:{model_id}"
ZERO_ROOT = "0x" + "00" * 32

ERR_NOT_PUBLISHED = "This model's attribution weights are not published yet (its index is not ready)."


def _tree(values: list[list]) -> tuple[str, dict]:
    """(root as 0x-hex, StandardMerkleTree dump) of (account, units) values."""
    tree = standard_tree(values, LEAF_TYPES)
    return "0x" + tree.root.hex(), tree.dump()


# --- weights -> integer units ----------------------------------------------------------------------------

def weight_units(weights: dict[int, Decimal]) -> dict[int, int]:
    """{user id: weight in 1e-18 units}: exact integers summing to exactly 1e18 (positive weights only).

    Weights are stored with 18 decimals and sum to 1, so this is normally exact; any rounding remainder
    (a weight with more digits) goes to the largest weight, ties to the lowest user id, as the weights do.
    """
    units = {int(uid): int((Decimal(str(w)) * UNITS).to_integral_value(rounding=ROUND_HALF_EVEN))
             for uid, w in weights.items() if Decimal(str(w)) > 0}
    if units:
        top = min(units, key=lambda k: (-units[k], k))
        units[top] += UNITS - sum(units.values())
        if units[top] <= 0:
            raise ValueError("contributor weights do not sum to 1")
    return units


def _as_weight(units: int) -> str:
    return format(Decimal(units) / UNITS, "f") if units else "0"


def weights_document(*, model, weights: dict[int, Decimal]) -> dict:
    """The downloadable weights file: the StandardMerkleTree dump plus, per account, who it is and its weight.

    One leaf per account (two users who set the same wallet share one leaf, their units added).
    """
    units = weight_units(weights)
    users = get_user_model().objects.select_related("profile").in_bulk(list(units))
    per_account: dict[str, dict] = {}
    for uid in sorted(units):
        account = address_for_user(users[uid])
        entry = per_account.setdefault(account, {"user_ids": [], "usernames": [], "units": 0})
        entry["user_ids"].append(uid)
        entry["units"] += units[uid]
    names = usernames(list(units))
    accounts = sorted(per_account)
    root, dump = _tree([[a, per_account[a]["units"]] for a in accounts])
    return {
        "format": FILE_FORMAT,
        "model_id": model.pk,
        "adapter_hash": "0x" + model.adapter_sha256,
        "root": root,
        "leaf_encoding": LEAF_TYPES,
        "units_per_weight": str(UNITS),
        "accounts": {
            a: {"user_ids": per_account[a]["user_ids"], "usernames": [names.get(u, "") for u in per_account[a]["user_ids"]],
                "weight": _as_weight(per_account[a]["units"]), "units": str(per_account[a]["units"])}
            for a in accounts
        },
        "tree": dump,
    }


def attribution_weights_publish(*, model, weights: dict[int, Decimal]) -> AttributionPublication | None:
    """Freeze the model's weights file, in the caller's transaction; its root reaches the chain with the model's
    registration (`model_onchain_register`, the canvas's next step) or, for a model registered before its
    weights were known, through the outbox's `attribution_root_set`.

    Once per model, as on-chain (the contract sets the root once): a model already published keeps its
    first file and root, and a rebuild's weights are not re-published (`published_matches_current` says
    whether they still agree). None when there are no positive weights and nothing was published.
    """
    with transaction.atomic():
        FineTunedModel.objects.select_for_update().filter(pk=model.pk).first()  # one at a time with registration
        existing = AttributionPublication.objects.select_for_update().filter(model=model).first()
        if existing is not None or not weight_units(weights):
            return existing
        document = weights_document(model=model, weights=weights)
        uri = WEIGHTS_API_PATH.format(model_id=model.pk)
        publication = AttributionPublication.objects.create(model=model, root=document["root"], document=document,
                                                            uri=uri)
        registered = transaction_get(idempotency_key=REGISTER_KEY.format(model_id=model.pk))
        if registered is not None and registered.payload.get("attribution_root") != publication.root:
            enqueue("attribution_root_set", {
                "model_id": model.pk, "adapter_hash": "0x" + model.adapter_sha256, "root": document["root"],
                "uri": uri,
            }, OUTBOX_KEY.format(model_id=model.pk))
    return publication


def model_onchain_register(*, model_id: int):
    """Register the model on ModelRegistry through the outbox, with its published attribution root (zero when
    none is published yet: the index failed, found no positive weights, or the model generates text; a later
    publication then sets the root once). Idempotent: the outbox row is keyed by the model. None when the
    model is gone."""
    with transaction.atomic():
        model = FineTunedModel.objects.select_for_update(of=("self",)).select_related("base_model").filter(pk=model_id).first()
        if model is None:
            return None
        publication = AttributionPublication.objects.filter(model=model).first()
        return enqueue("model_register", {
            "model_id": model.pk, "name": model.name, "adapter_hash": "0x" + model.adapter_sha256,
            "base_model": model.base_model.name if model.base_model else "",
            "version_root": model.version_root, "attribution_root": publication.root if publication else ZERO_ROOT,
            "developer_id": model.developer_id,
        }, REGISTER_KEY.format(model_id=model.pk))


def published_matches_current(*, publication: AttributionPublication, weights: dict[int, Decimal]) -> bool:
    """Whether the model's current weights are still those published (a rebuild may have changed them)."""
    per_user = {}
    for entry in publication.document.get("accounts", {}).values():
        if len(entry["user_ids"]) != 1:
            return weights_document(model=publication.model, weights=weights)["root"] == publication.root
        per_user[entry["user_ids"][0]] = int(entry["units"])
    return per_user == weight_units(weights)


def weights_file_name(model) -> str:
    return f"model-{model.pk}-attribution-weights.json"


def publication_get(*, model) -> AttributionPublication:
    publication = AttributionPublication.objects.filter(model=model).first()
    if publication is None:
        raise ApplicationError(ERR_NOT_PUBLISHED, status_code=404)
    return publication


# --- verify --------------------------------------------------------------------------------------------

def weights_file_check(document: dict) -> tuple[str | None, list[str]]:
    """(root recomputed from the file's tree values, problems found in the file). Trusts nothing in the file
    but its values: the root is rebuilt from them, then compared with the file's own root and tree."""
    problems: list[str] = []
    try:
        dump = document["tree"]
        if dump.get("format") != "standard-v1" or list(dump.get("leafEncoding", [])) != LEAF_TYPES:
            problems.append(f"the tree is not a standard-v1 tree over {LEAF_TYPES}")
            return None, problems
        values = [list(v["value"]) for v in dump["values"]]
        root, rebuilt = _tree(values)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return None, [f"the file cannot be read as a weights tree: {type(exc).__name__}: {exc}"]
    except Exception as exc:  # eth_abi rejects a bad address or a negative/oversized integer
        return None, [f"a tree value cannot be encoded: {type(exc).__name__}: {exc}"]
    if str(document.get("root", "")).lower() != root:
        problems.append(f"the file says root {document.get('root')} but its values make {root}")
    if [str(x).lower() for x in dump.get("tree", [])] != rebuilt["tree"]:
        problems.append("the file's tree nodes are not the tree of its values")
    units = [int(v[1]) for v in values]
    if sum(units) != UNITS:
        problems.append(f"the weights sum to {sum(units)} units, not {UNITS}")
    accounts = document.get("accounts") or {}
    by_value = {str(v[0]).lower(): str(int(v[1])) for v in values}
    if {a.lower(): str(e.get("units")) for a, e in accounts.items()} != by_value:
        problems.append("the accounts list does not match the tree's values")
    return root, problems


def attribution_file_verify(*, model, document: dict) -> dict:
    """Check a weights file against the chain: {ok, file_root, chain_root, chain_error, problems}.

    ok only when the file is consistent, is this model's, and its recomputed root is the model's root
    on-chain. Never raises for a bad file or a node that is down; it says why in `problems`.
    """
    file_root, problems = weights_file_check(document)
    adapter = "0x" + model.adapter_sha256
    if str(document.get("adapter_hash", "")).lower() != adapter.lower():
        problems.append(f"the file is for adapter {document.get('adapter_hash')}, this model's is {adapter}")
    chain = model_attribution_root(adapter_hash=adapter)
    chain_root = chain["attribution_root"]
    if not chain["ok"]:
        problems.append(f"the chain could not be read: {chain['error']}")
    elif not chain["registered"]:
        problems.append("the model is not registered on-chain")
    elif chain_root == "0x" + "00" * 32:
        problems.append("the chain holds no attribution root for this model yet (the zero placeholder)")
    elif file_root != chain_root:
        problems.append("the root recomputed from the file is not the root on-chain")
    return {"ok": not problems, "file_root": file_root, "chain_root": chain_root, "chain_error": chain["error"],
            "problems": problems}


# --- read ----------------------------------------------------------------------------------------------

def model_publication_overview(*, model) -> dict | None:
    """The published weights root of a model and where its chain write stands (the registration that carried
    it, or the later `attribution_root_set`); None while unpublished."""
    publication = AttributionPublication.objects.filter(model=model).first()
    if publication is None:
        return None
    row = transaction_get(idempotency_key=OUTBOX_KEY.format(model_id=model.pk))
    if row is None:
        registered = transaction_get(idempotency_key=REGISTER_KEY.format(model_id=model.pk))
        row = registered if registered and registered.payload.get("attribution_root") == publication.root else None
    return {
        "root": publication.root, "uri": publication.uri, "published_at": publication.created_at,
        "accounts": len(publication.document.get("accounts", {})),
        "chain_status": row.status if row else "", "tx_hash": row.tx_hash if row else "",
        "chain_error": row.last_error if row else "",
        "matches_current": published_matches_current(publication=publication,
                                                     weights=model_contributor_weights(model=model)),
    }
