"""Harmful data has a cost: the bond of an accepted stake, harm flags, and the slash after acceptance.

An accepted contribution's stake stays bonded on-chain for LEDGER_STAKE_BOND_SECONDS (DatanetRegistry
`bondSeconds`). When a model trained on the Datanet finds a contributor's records, together, significantly
harmful on its clean validation set (attribution's index build, `harm_flags_record`), the curators see a
HarmFlag with the evidence; within the bond a curator slashes the contributor's bonded contributions through
the same path as a rejection (`contribution_slash`: the Datanet's slash fraction to the treasury, the rest
back, its records out of later versions), or dismisses the flag. After the bond a beat task releases the
stake (`contribution_bonds_release`). The rule and its reasons: docs/attribution.md, docs/datanets.md.
"""
from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from core.errors import ApplicationError
from datanets.models import Contribution, CurationDecision, Datanet, HarmFlag, Record
from datanets.services import ERR_NOT_CURATOR, ERR_OWN_CONTRIBUTION, decimal_str, user_can_curate
from ledger.services import enqueue

EVIDENCE_RECORDS = 20  # the most harmful records kept per flag
EVIDENCE_TEXT_CHARS = 300
# The chain's bond starts when the accept is mined, after the database's `decided_at`: the release waits
# this much longer than `bonded_until` so it is not sent before the chain allows it (it would be retried).
RELEASE_MARGIN = timedelta(minutes=5)

ERR_SLASH_REASON = "A slash needs a reason."
ERR_NOT_BONDED = "Contribution {id} has no bonded stake to slash ({bond})."
ERR_BOND_OVER = "The bond of contribution {id} ended on {until:%Y-%m-%d %H:%M} UTC; its stake can no longer be slashed."
ERR_FLAG_DECIDED = "This flag was already {status}."
ERR_NOTHING_TO_SLASH = "None of the flagged contributions still has a bonded stake."


# --- flags (written by the attribution step) -------------------------------------------------------------

def harm_flags_record(*, datanet: Datanet, model_id: int, model_name: str, harms: list[dict],
                      validation_queries: int) -> list[HarmFlag]:
    """Store one model's harm flags: `harms` = [{contributor_id, statistic, null_bound, contribution_ids,
    records: [(record id, part of T_c)] most harmful first}]. Idempotent per (model, contributor): a rebuilt index refreshes an open flag's evidence,
    never reopens a decided one, and removes the model's open flags no longer found."""
    flags = []
    with transaction.atomic():
        found = {int(h["contributor_id"]) for h in harms}
        HarmFlag.objects.filter(model_id=model_id, status=HarmFlag.Status.OPEN).exclude(contributor_id__in=found).delete()
        for harm in harms:
            scores = {int(rid): float(s) for rid, s in harm["records"][:EVIDENCE_RECORDS]}
            rows = {r.pk: r for r in Record.objects.filter(pk__in=scores).only("id", "contribution_id", "label", "text")}
            evidence = {
                "model_id": model_id, "model_name": model_name, "validation_queries": validation_queries,
                "records": [{"record_id": rid, "contribution_id": rows[rid].contribution_id, "label": rows[rid].label,
                             "text": rows[rid].text[:EVIDENCE_TEXT_CHARS], "score": s}
                            for rid, s in scores.items() if rid in rows],
            }
            flag, created = HarmFlag.objects.get_or_create(
                model_id=model_id, contributor_id=int(harm["contributor_id"]),
                defaults={"datanet": datanet, "model_name": model_name, "statistic": harm["statistic"],
                          "null_bound": harm["null_bound"], "harm_threshold": datanet.harm_threshold,
                          "evidence": evidence})
            if not created and flag.status == HarmFlag.Status.OPEN:
                flag.statistic, flag.null_bound, flag.evidence = harm["statistic"], harm["null_bound"], evidence
                flag.harm_threshold, flag.model_name = datanet.harm_threshold, model_name
                flag.save(update_fields=["statistic", "null_bound", "evidence", "harm_threshold", "model_name"])
            # Every contribution of theirs the model trained on: the harm is measured over all their records
            # together (the evidence names the worst ones').
            ids = set(harm.get("contribution_ids") or ()) | {r["contribution_id"] for r in evidence["records"]}
            flag.contributions.set(Contribution.objects.filter(pk__in=ids, contributor_id=flag.contributor_id))
            flags.append(flag)
    return flags


def harm_flags_visible_to(*, user, contribution: Contribution) -> QuerySet[HarmFlag]:
    """The flags naming a contribution, for its contributor and the Datanet's curators; none for others."""
    if contribution.contributor_id != user.pk and not user_can_curate(user=user, datanet=contribution.datanet):
        return HarmFlag.objects.none()
    return contribution.harm_flags.select_related("contributor", "decided_by").prefetch_related("contributions")


def harm_flags_for_datanet(*, datanet: Datanet, user, status: str = HarmFlag.Status.OPEN) -> QuerySet[HarmFlag]:
    if not user_can_curate(user=user, datanet=datanet):
        return HarmFlag.objects.none()
    return datanet.harm_flags.filter(status=status).select_related("contributor").prefetch_related("contributions")


# --- curator actions -----------------------------------------------------------------------------------

def _curator_of(curator, datanet: Datanet, contributor_id: int) -> None:
    if contributor_id == curator.pk:
        raise ApplicationError(ERR_OWN_CONTRIBUTION, status_code=403)
    if not user_can_curate(user=curator, datanet=datanet):
        raise ApplicationError(ERR_NOT_CURATOR.format(datanet=datanet.name), status_code=403)


@transaction.atomic
def contribution_slash(*, contribution: Contribution, curator, reason: str, flag: HarmFlag | None = None) -> Contribution:
    """Slash an accepted contribution's bonded stake (outbox `contribution_slash`, the rejection's split) and
    take it out of later versions (status rejected). Fails (4xx) for a non-curator, the contributor
    themself, no reason, no bonded stake, or a bond that has ended."""
    reason = (reason or "").strip()
    if not reason:
        raise ApplicationError(ERR_SLASH_REASON)
    c = Contribution.objects.select_for_update().select_related("datanet").get(pk=contribution.pk)
    _curator_of(curator, c.datanet, c.contributor_id)
    if c.status != Contribution.Status.ACCEPTED or c.bond != Contribution.Bond.BONDED:
        raise ApplicationError(ERR_NOT_BONDED.format(id=c.id, bond=c.get_bond_display().lower()))
    if c.bonded_until is not None and c.bonded_until <= timezone.now():
        raise ApplicationError(ERR_BOND_OVER.format(id=c.id, until=c.bonded_until))
    c.status, c.bond, c.curator, c.reason = Contribution.Status.REJECTED, Contribution.Bond.SLASHED, curator, reason
    c.save(update_fields=["status", "bond", "curator", "reason", "updated_at"])
    CurationDecision.objects.create(contribution=c, curator=curator, decision=CurationDecision.Decision.SLASHED,
                                    reason=reason)
    enqueue("contribution_slash", {"contribution_id": c.id, "datanet_id": c.datanet_id,
                                   "content_hash": "0x" + c.file_sha256, "curator_id": curator.pk,
                                   "slash_fraction": decimal_str(c.datanet.slash_fraction), "reason": reason,
                                   "harm_flag_id": flag.pk if flag else None},
            f"contribution_slash:{c.id}")
    return c


def _decide_flag(flag: HarmFlag, curator) -> HarmFlag:
    flag = HarmFlag.objects.select_for_update().select_related("datanet").get(pk=flag.pk)
    _curator_of(curator, flag.datanet, flag.contributor_id)
    if flag.status != HarmFlag.Status.OPEN:
        raise ApplicationError(ERR_FLAG_DECIDED.format(status=flag.get_status_display().lower()))
    return flag


@transaction.atomic
def harm_flag_slash(*, flag: HarmFlag, curator, reason: str) -> list[Contribution]:
    """Slash every flagged contribution whose stake is still bonded; the flag becomes `slashed`."""
    reason = (reason or "").strip()
    if not reason:
        raise ApplicationError(ERR_SLASH_REASON)
    flag = _decide_flag(flag, curator)
    now = timezone.now()
    bonded = flag.contributions.filter(status=Contribution.Status.ACCEPTED, bond=Contribution.Bond.BONDED,
                                       bonded_until__gt=now).order_by("id")
    slashed = [contribution_slash(contribution=c, curator=curator, reason=reason, flag=flag) for c in bonded]
    if not slashed:
        raise ApplicationError(ERR_NOTHING_TO_SLASH)
    flag.status, flag.decided_by, flag.decided_at, flag.reason = HarmFlag.Status.SLASHED, curator, now, reason
    flag.save(update_fields=["status", "decided_by", "decided_at", "reason"])
    return slashed


@transaction.atomic
def harm_flag_dismiss(*, flag: HarmFlag, curator, reason: str = "") -> HarmFlag:
    """The curator finds the harm acceptable (e.g. hard but correct examples): the flag is closed, no slash."""
    flag = _decide_flag(flag, curator)
    flag.status, flag.decided_by, flag.decided_at = HarmFlag.Status.DISMISSED, curator, timezone.now()
    flag.reason = (reason or "").strip()
    flag.save(update_fields=["status", "decided_by", "decided_at", "reason"])
    return flag


# --- release after the bond (beat) -----------------------------------------------------------------------

def contribution_bonds_release(*, now=None, limit: int = 500) -> int:
    """Queue the release (outbox `contribution_release`) of every stake whose bond has ended; returns how
    many. Safe to run concurrently and repeatedly: a guarded UPDATE claims each one, the key is per contribution."""
    now = now or timezone.now()
    due = list(Contribution.objects.filter(status=Contribution.Status.ACCEPTED, bond=Contribution.Bond.BONDED,
                                           bonded_until__lte=now - RELEASE_MARGIN)
               .order_by("bonded_until", "id").values_list("id", "datanet_id", "file_sha256")[:limit])
    released = 0
    for cid, datanet_id, sha in due:
        with transaction.atomic():
            if not Contribution.objects.filter(pk=cid, bond=Contribution.Bond.BONDED).update(bond=Contribution.Bond.RELEASED):
                continue  # slashed or claimed by another run meanwhile
            enqueue("contribution_release", {"contribution_id": cid, "datanet_id": datanet_id,
                                             "content_hash": "0x" + sha}, f"contribution_release:{cid}")
            released += 1
    return released
