"""Ledger pages: the explorer (chain, contracts, on-chain records beside the database), the outbox
(staff), epochs, and a user's rewards with the claim button. Thin: reads in selectors, writes in services."""
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from core.errors import ApplicationError
from ledger import selectors, services
from ledger.models import LedgerTransaction, RewardClaim, RewardEpoch

PAGE_SIZE = 50


@require_GET
def explorer(request):
    overview = selectors.chain_overview()
    ctx = {
        "overview": overview,
        "transactions": LedgerTransaction.objects.order_by("-id")[:15],
        # skip the record reads (and their retries) when the node already did not answer
        "compare": selectors.onchain_compare() if overview["status"]["ok"] else
        {"ok": False, "error": overview["status"]["detail"], "datanets": [], "models": []},
    }
    return render(request, "ledger/explorer.html", ctx)


@require_GET
@staff_member_required
def transaction_list(request):
    status, kind = request.GET.get("status", ""), request.GET.get("kind", "")
    page = Paginator(selectors.transaction_list(status=status, kind=kind), PAGE_SIZE).get_page(request.GET.get("page"))
    # poll only while something is on its way
    active = LedgerTransaction.objects.filter(status__in=[LedgerTransaction.Status.QUEUED, LedgerTransaction.Status.SENT]).exists()
    ctx = {"page": page, "status": status, "kind": kind, "statuses": LedgerTransaction.Status.choices, "active": active,
           "counts": selectors.transaction_counts()}
    template = "ledger/_transactions.html" if request.htmx else "ledger/transactions.html"
    return render(request, template, ctx)


@require_POST
@staff_member_required
def transaction_retry(request, pk: int):
    row = get_object_or_404(LedgerTransaction, pk=pk)
    try:
        services.ledger_transaction_retry(row=row)
        messages.success(request, f"Transaction #{row.pk} ({row.kind}) queued again.")
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return redirect("ledger:transactions")


@require_GET
def epoch_list(request):
    page = Paginator(selectors.epoch_list(), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "ledger/epochs.html", {"page": page})


@require_GET
def epoch_tree(request, pk: int):
    """The epoch's full tree (OpenZeppelin StandardMerkleTree dump + every proof) as a JSON download: anyone can
    recompute the published root with `StandardMerkleTree.load(dump).root`."""
    epoch = get_object_or_404(RewardEpoch, pk=pk)
    response = JsonResponse(services.epoch_tree_download(epoch=epoch), json_dumps_params={"indent": 1})
    response["Content-Disposition"] = f'attachment; filename="reward-epoch-{epoch.pk}-tree.json"'
    return response


@require_GET
@login_required
def my_rewards(request):
    claims = list(selectors.claim_list(user=request.user))
    ctx = {
        "balances": selectors.balances_for(user=request.user),
        "claims": claims,
        "earnings": selectors.earnings_by_model(user=request.user),
        "accruals": selectors.accrual_list(user=request.user)[:50],
        "polling": any(c.status == RewardClaim.Status.QUEUED for c in claims),
    }
    template = "ledger/_claims.html" if request.htmx else "ledger/rewards.html"
    return render(request, template, ctx)


@require_POST
@login_required
def claim(request, pk: int):
    # 404 for someone else's claim: no existence leak
    c = get_object_or_404(RewardClaim.objects.select_related("epoch"), pk=pk, user=request.user)
    try:
        services.reward_claim_request(claim=c, user=request.user)
        messages.success(request, f"Claim queued: everything your account earned up to epoch {c.epoch_id} and after, in one "
                                  "transaction.")
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return redirect("ledger:rewards")
