"""Read queries for Datanets."""
from __future__ import annotations

import re

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import BooleanField, Count, F, Q, QuerySet, Sum
from django.db.models.expressions import RawSQL

from core.roles import CURATOR
from datanets.models import Contribution, CurationDecision, Datanet, DatanetVersion, Record
from ledger.models import LedgerTransaction
from ledger.selectors import transactions_get


def datanets_curated_by(*, user) -> QuerySet[Datanet]:
    """Datanets `user` may curate: superusers and staff who are not curators all; curators theirs; others none."""
    if not user.is_authenticated or not user.is_active:
        return Datanet.objects.none()
    if user.is_superuser:
        return Datanet.objects.all()
    if user.groups.filter(name=CURATOR).exists():
        return Datanet.objects.filter(curators=user)
    if user.is_staff:
        return Datanet.objects.all()
    return Datanet.objects.none()


def datanet_list(*, search: str = "", domain: str = "") -> QuerySet[Datanet]:
    qs = Datanet.objects.annotate(
        accepted_records=Count("records", filter=Q(records__contribution__status=Contribution.Status.ACCEPTED)),
    )
    if search:
        qs = qs.filter(Q(name__icontains=search) | Q(description__icontains=search) | Q(slug__icontains=search))
    if domain:
        qs = qs.filter(domain=domain)
    return qs.order_by("name")


def _accepted_contributions(datanet: Datanet) -> QuerySet[Contribution]:
    return Contribution.objects.filter(datanet=datanet, status=Contribution.Status.ACCEPTED)


def datanet_label_distribution(*, datanet: Datanet, accepted_only: bool = True) -> list[tuple[str, int]]:
    """(label, records) by count, from the per-contribution counts stored at ingest: a few rows summed,
    whatever the number of records (a GROUP BY over a million records took ~0.5 s a view)."""
    qs = _accepted_contributions(datanet) if accepted_only else Contribution.objects.filter(datanet=datanet)
    totals: dict[str, int] = {}
    for counts in qs.exclude(record_count=0).values_list("label_counts", flat=True):
        for label, n in (counts or {}).items():
            totals[label] = totals.get(label, 0) + n
    return sorted(((lab, n) for lab, n in totals.items() if n), key=lambda x: (-x[1], x[0]))


def datanet_contributors_ranked(*, datanet: Datanet, limit: int = 20) -> list[dict]:
    """Contributors by accepted training records (curator-held evaluation records are not contributions to rank);
    summed from the contributions' record counts."""
    return list(
        _accepted_contributions(datanet).filter(is_evaluation=False, record_count__gt=0)
        .values("contributor__username").annotate(records=Sum("record_count"))
        .order_by("-records", "contributor__username")[:limit]
    )


def datanet_counts(*, datanet: Datanet) -> dict:
    """The Datanet page's counts, from the contributions (records per contribution are counted at ingest)
    and the small partial index of conflicting records."""
    accepted = Q(status=Contribution.Status.ACCEPTED)
    agg = datanet.contributions.aggregate(
        total=Count("id"), pending=Count("id", filter=Q(status=Contribution.Status.PENDING)),
        accepted=Count("id", filter=accepted), rejected=Count("id", filter=Q(status=Contribution.Status.REJECTED)),
        records_total=Sum("record_count"), records_accepted=Sum("record_count", filter=accepted),
        contributors=Count("contributor", filter=accepted & Q(record_count__gt=0), distinct=True),
    )
    records = {
        "total": agg.pop("records_total") or 0, "accepted": agg.pop("records_accepted") or 0,
        "contributors": agg.pop("contributors"),
        "conflicts": Record.objects.filter(datanet=datanet, is_conflict=True,
                                           contribution__status=Contribution.Status.ACCEPTED).count(),
    }
    return {"contributions": agg, "records": records, "versions": datanet.versions.count()}


_WORD = re.compile(r"\w+")


def record_search(qs: QuerySet[Record], search: str) -> QuerySet[Record]:
    """Records whose text holds every word of `search` (whole words, any case), through the database's
    full-text index (migration 0012): PostgreSQL to_tsvector('simple') @@ plainto_tsquery, SQLite FTS5."""
    words = _WORD.findall(search)
    if not words:
        return qs
    if connection.vendor == "postgresql":
        # The expression must be the GIN index's, word for word, for the planner to use it.
        return qs.filter(RawSQL("to_tsvector('simple'::regconfig, datanets_record.text) "
                                "@@ plainto_tsquery('simple'::regconfig, %s)", [" ".join(words)],
                                output_field=BooleanField()))
    if connection.vendor == "sqlite":
        match = " ".join('"' + w.replace('"', '""') + '"' for w in words)  # each a quoted term: no FTS syntax
        return qs.filter(id__in=RawSQL("SELECT rowid FROM datanets_record_fts WHERE datanets_record_fts MATCH %s",
                                       [match]))
    q = Q()
    for w in words:
        q &= Q(text__icontains=w)
    return qs.filter(q)


def record_list(*, datanet: Datanet | None = None, label: str = "", contribution_id: int | None = None,
                contributor: str = "", search: str = "", accepted_only: bool = False, version: DatanetVersion | None = None,
                conflicts: bool | None = None) -> QuerySet[Record]:
    qs = version.records.all() if version is not None else Record.objects.all()
    if datanet is not None:
        qs = qs.filter(datanet=datanet)
    if label:
        qs = qs.filter(label=label)
    if contribution_id:
        qs = qs.filter(contribution_id=contribution_id)
    if contributor:
        # By id, not a join on the username: the (contributor, datanet, id) index then serves the page.
        user_id = get_user_model().objects.filter(username=contributor).values_list("id", flat=True).first()
        qs = qs.filter(contributor_id=user_id) if user_id is not None else qs.none()
    if search:
        qs = record_search(qs, search)
    if accepted_only:
        qs = qs.filter(contribution__status=Contribution.Status.ACCEPTED)
    if conflicts is not None:
        qs = qs.filter(is_conflict=conflicts)
    return qs.select_related("contributor").order_by("id")


def contribution_conflicts(*, contribution: Contribution, limit: int = 50) -> list[dict]:
    """This contribution's conflicting records, each with the other labels the same text has in the Datanet."""
    mine = list(contribution.records.filter(is_conflict=True).values("id", "text", "label", "text_sha256")[:limit])
    others: dict[str, set] = {}
    for h, lab, who in (Record.objects.filter(datanet_id=contribution.datanet_id, text_sha256__in=[m["text_sha256"] for m in mine])
                        .exclude(contribution=contribution).values_list("text_sha256", "label", "contributor__username")):
        others.setdefault(h, set()).add(f"{lab} ({who})")
    return [{**m, "others": sorted(others.get(m["text_sha256"], ()))} for m in mine]


def user_can_curate(*, user, datanet: Datanet) -> bool:
    """Whether `user` decides on the Datanet's contributions (its curators; admins; never the inactive)."""
    if not user.is_authenticated or not user.is_active:
        return False
    if user.is_superuser:
        return True
    if datanet.curators.filter(pk=user.pk).exists():
        return True
    # Staff who are not curators are admins: they may curate everything.
    return user.is_staff and not user.groups.filter(name=CURATOR).exists()


def contributions_of(*, user) -> QuerySet[Contribution]:
    return Contribution.objects.filter(contributor=user).select_related("datanet").order_by("-created_at")


def contributions_visible_to(*, user, datanet: Datanet) -> QuerySet[Contribution]:
    """A Datanet's contributions that `user` may see: all for its curators, otherwise their own."""
    qs = datanet.contributions.select_related("datanet", "contributor", "curator").order_by("-created_at")
    return qs if user_can_curate(user=user, datanet=datanet) else qs.filter(contributor=user)


RECORD_STATUSES = tuple(Contribution.Status.values)


def records_visible_to(*, user, datanet: Datanet, label: str = "", contribution_id: int | None = None,
                       contributor: str = "", conflicts: bool | None = None, search: str = "",
                       status: str = "") -> QuerySet[Record]:
    """Records `user` may read, in id order: a curator all of the Datanet's; others accepted ones and their
    own. `status` keeps those of contributions in that review status (accepted, pending, rejected)."""
    qs = record_list(datanet=datanet, label=label, contribution_id=contribution_id, contributor=contributor,
                     conflicts=conflicts, search=search)
    # Review status by the ids of the Datanet's contributions in it (a handful), not a join: the planner
    # then combines the contribution index with the others (search, id order) instead of walking a million
    # records through a join it mis-estimates (benchmarks/browse.py).
    if status:
        qs = qs.filter(contribution_id__in=_contribution_ids(datanet, status))
    if not user.is_authenticated:
        return qs.filter(contribution_id__in=_contribution_ids(datanet, Contribution.Status.ACCEPTED))
    if not user_can_curate(user=user, datanet=datanet):
        qs = qs.filter(Q(contribution_id__in=_contribution_ids(datanet, Contribution.Status.ACCEPTED)) | Q(contributor=user))
    return qs


def _contribution_ids(datanet: Datanet, status: str) -> list[int]:
    return list(Contribution.objects.filter(datanet=datanet, status=status).values_list("id", flat=True))


CHAIN_STEPS = (("contribution_stake", "Stake"), ("contribution_accept", "Accept"), ("contribution_reject", "Reject"),
               ("contribution_slash", "Slash"), ("contribution_release", "Release"))


def contribution_chain_state(*, contribution: Contribution) -> dict:
    """Where the contribution's chain writes stand, from the ledger outbox rows it enqueued.

    {"state": "none"|"pending"|"confirmed"|"failed", "steps": [{kind, label, status, error, row_id}],
     "failed": the first failed step or None}. A failed stake or accept is shown as such, never as Accepted.
    """
    keys = {f"{kind}:{contribution.pk}": (kind, label) for kind, label in CHAIN_STEPS}
    rows = transactions_get(idempotency_keys=keys)
    steps = []
    for key, (kind, label) in keys.items():
        row = rows.get(key)
        if row is not None:
            steps.append({"kind": kind, "label": label, "status": row.status, "error": row.last_error,
                          "row_id": row.pk, "key": key})
    failed = next((s for s in steps if s["status"] == LedgerTransaction.Status.FAILED), None)
    if not steps:
        state = "none"
    elif failed:
        state = "failed"
    elif all(s["status"] == LedgerTransaction.Status.CONFIRMED for s in steps):
        state = "confirmed"
    else:
        state = "pending"
    return {"state": state, "steps": steps, "failed": failed}


def contribution_near_duplicates(*, contribution: Contribution, examples: int = 5) -> dict:
    """How many of this contribution's records joined the near-duplicate cluster of an earlier record
    (found at ingest, datanets/neardup.py), split into twins within this contribution and copies of
    other contributions' records, by whose, with a few examples side by side. Later copies earn no
    credit (docs/attribution.md)."""
    members = contribution.records.filter(near_dup_of__isnull=False)
    twins = members.filter(near_dup_of__contribution=contribution).count()
    earlier = members.exclude(near_dup_of__contribution=contribution)
    by_whom = [{"contributor_id": row["near_dup_of__contributor"], "username": row["near_dup_of__contributor__username"],
                "count": row["n"]}
               for row in earlier.values("near_dup_of__contributor", "near_dup_of__contributor__username")
               .annotate(n=Count("id")).order_by("-n", "near_dup_of__contributor__username")]
    fields = ("id", "text", "label", "near_dup_similarity", "near_dup_of", "near_dup_of__text", "near_dup_of__label",
              "near_dup_of__contributor__username", "near_dup_of__contribution")
    sample = list(earlier.order_by("id").values(*fields)[:examples])  # copies of earlier records first, then twins
    if len(sample) < examples:
        sample += members.filter(near_dup_of__contribution=contribution).order_by("id").values(*fields)[:examples - len(sample)]
    return {
        "records": members.count(),
        "twins": twins,
        "copies_of_earlier": earlier.count(),
        "threshold": contribution.datanet.near_duplicate_threshold,
        "by_contributor": by_whom,
        "examples": [{"record_id": s["id"], "text": s["text"], "label": s["label"],
                      "similarity": s["near_dup_similarity"], "of_record_id": s["near_dup_of"],
                      "of_text": s["near_dup_of__text"], "of_label": s["near_dup_of__label"],
                      "of_contributor": s["near_dup_of__contributor__username"],
                      "of_contribution_id": s["near_dup_of__contribution"]} for s in sample],
    }


def version_training_records(*, version: DatanetVersion) -> QuerySet[Record]:
    """The version's records a fine-tune trains on (and whose contributors may be paid): all but the
    curator-held evaluation records and the later copies (docs/datanets.md).

    A later copy is a record that ingest put in a near-duplicate cluster whose root (the earliest copy) is
    itself trained on here and carries the same label: it is not trained on, so it is neither weighted twice
    in training nor paid beside the earliest copy, for the model or for any one answer (docs/attribution.md).
    A copy with another label is kept (it is a different example), as is one whose root the version lacks."""
    trained = version.records.filter(contribution__is_evaluation=False)
    later_copy = Q(near_dup_of__in=trained.values("id")) & Q(near_dup_of__label=F("label"))
    return trained.exclude(later_copy)


def version_evaluation_records(*, version: DatanetVersion) -> QuerySet[Record]:
    """The version's curator-held evaluation records: the attribution build's validation queries."""
    return version.records.filter(contribution__is_evaluation=True)


def version_near_duplicate_clusters(*, version: DatanetVersion) -> dict[str, str]:
    """{record id: cluster id} for the version's records in a near-duplicate cluster of two or more
    (members and their roots; the cluster id is the root's record id). Records not listed are alone."""
    clusters: dict[str, str] = {}
    roots: set[int] = set()
    for rid, root in version.records.filter(near_dup_of__isnull=False).values_list("id", "near_dup_of").iterator(
            chunk_size=10_000):
        clusters[str(rid)] = str(root)
        roots.add(root)
    ordered = sorted(roots)
    for i in range(0, len(ordered), 10_000):
        for rid in version.records.filter(id__in=ordered[i:i + 10_000]).values_list("id", flat=True):
            clusters[str(rid)] = str(rid)
    return clusters


def cpu_queue_ahead(*, contribution: Contribution | None = None, version: DatanetVersion | None = None) -> int:
    """Waiting `cpu` work queued before this ingest or export (ingests and exports, oldest first): what the
    page shows while it waits. An estimate: the broker, not this count, decides the order."""
    since = contribution.updated_at if contribution is not None else version.created_at
    return (Contribution.objects.filter(ingest_state=Contribution.IngestState.QUEUED, updated_at__lt=since).count()
            + DatanetVersion.objects.filter(export_state=DatanetVersion.ExportState.QUEUED, created_at__lt=since).count())


# --- curator console ----------------------------------------------------------------------------------

SKEW_SHARE = 0.8  # a contribution with this share or more of one label is flagged for a look


def review_queue(*, datanet: Datanet, preview: int = 5) -> dict:
    """The Datanet's pending contributions for its curators: the reviewable ones (ingested) with hints each
    (a record preview, near-duplicates of earlier records, its label distribution against the Datanet's
    accepted one, conflicts), and the ones not reviewable yet (mapping, ingesting, failed) with their state."""
    pending = (datanet.contributions.filter(status=Contribution.Status.PENDING)
               .select_related("contributor").order_by("created_at", "id"))
    accepted = dict(datanet_label_distribution(datanet=datanet))
    accepted_total = sum(accepted.values())
    ready, waiting = [], []
    for c in pending:
        if c.ingest_state != Contribution.IngestState.DONE:
            waiting.append(c)
            continue
        counts = dict(c.records.values_list("label").annotate(n=Count("id")).order_by("-n", "label"))
        total = sum(counts.values()) or 1
        labels = [{"label": lab or "(none)", "n": n, "pct": round(100 * n / total, 1),
                   "datanet_pct": round(100 * accepted.get(lab, 0) / accepted_total, 1) if accepted_total else None}
                  for lab, n in counts.items()]
        top = max(counts.values(), default=0)
        ready.append({
            "c": c,
            "records": list(c.records.order_by("row_number", "id")[:preview]),
            "labels": labels,
            "skewed": bool(counts) and len(datanet.labels) > 1 and top / total >= SKEW_SHARE and c.record_count > 1,
            "near_dups": contribution_near_duplicates(contribution=c, examples=3),
        })
    return {"ready": ready, "waiting": waiting}


def curation_trail(*, datanet: Datanet) -> QuerySet[CurationDecision]:
    """Every decision on the Datanet's contributions, newest first: the audit trail (never edited)."""
    return (CurationDecision.objects.filter(contribution__datanet=datanet)
            .select_related("contribution", "contribution__contributor", "curator").order_by("-created_at", "-id"))


def datanets_to_review(*, user) -> list[dict]:
    """The Datanets `user` curates, each with its number of pending contributions."""
    qs = datanets_curated_by(user=user).annotate(
        pending=Count("contributions", filter=Q(contributions__status=Contribution.Status.PENDING)))
    return list(qs.order_by("-pending", "name"))


def contribution_withdrawable(*, contribution: Contribution, user) -> bool:
    """Whether to offer `user` the withdraw button (datanets.services.contribution_withdraw decides, and says
    why not): their own pending contribution, not ingesting, with nothing sent on-chain."""
    return (contribution.contributor_id == user.pk and contribution.status == Contribution.Status.PENDING
            and contribution.ingest_state not in (Contribution.IngestState.QUEUED, Contribution.IngestState.RUNNING)
            and not contribution_chain_state(contribution=contribution)["steps"])
