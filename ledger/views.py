"""Ledger pages: the explorer (chain, contracts, on-chain records beside the database), the outbox
(staff), epochs, a user's rewards with the claim button, and governance by OPEN holders. Thin: reads in selectors, writes in services."""
import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from core.errors import ApplicationError
from core.roles import staff_required
from ledger import governance, selectors, services
from ledger.audit import ledger_audit
from ledger.forms import ProposeForm
from ledger.models import GovernanceProposal, LedgerTransaction, RewardClaim, RewardEpoch

PAGE_SIZE = 50
AUDIT_ROWS_PER_KIND = 10  # a page view reads the events once; the rows checked per kind stay few


@require_GET
def explorer(request):
    overview = selectors.chain_overview()
    ctx = {
        "overview": overview,
        "transactions": LedgerTransaction.objects.order_by("-id")[:15],
        # skip the record reads (and their retries) when the node already did not answer
        "compare": selectors.onchain_compare() if overview["status"]["ok"] else
        {"ok": False, "error": overview["status"]["detail"], "datanets": [], "models": []},
        # every outbox kind against the chain's events: the checks of `manage.py ledger_audit`, latest rows only
        "audit": ledger_audit(per_kind=AUDIT_ROWS_PER_KIND) if overview["status"]["ok"] else None,
    }
    return render(request, "ledger/explorer.html", ctx)


@require_GET
@staff_required
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
@staff_required
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


# --- governance by OPEN holders (every page needs a signed-in user; the chain checks votes and states) -----

def _governance_context(request, **extra) -> dict:
    proposals = list(GovernanceProposal.objects.all()[:50])
    waiting = {GovernanceProposal.Status.PROPOSING, GovernanceProposal.Status.PENDING, GovernanceProposal.Status.ACTIVE}
    return {"account": governance.governance_account(user=request.user), "fee_split": services.fee_split_get(),
            "epoch_seconds": governance.epoch_seconds_get(), "proposals": proposals,
            "form": extra.pop("form", None) or ProposeForm(), "polling": any(p.status in waiting for p in proposals),
            **extra}


def _signing(exc: ApplicationError, request) -> dict | None:
    """The typed data (and calldata) an own wallet signs, with what to post back; None for other errors."""
    if exc.status_code != governance.SIGN_YOURSELF:
        return None
    typed = exc.extra.get("typed_data", {})
    fields = {k: v for k, v in request.POST.items() if k not in ("csrfmiddlewaretoken", "signature")}
    fields.update({k: typed.get("message", {}).get(k) for k in ("nonce", "expiry") if k in typed.get("message", {})})
    return {"typed_json": json.dumps(typed, indent=1), "to": exc.extra.get("to"), "calldata": exc.extra.get("calldata"),
            "fields": fields, "action_url": request.path, "message": exc.message}


@require_GET
@login_required
def governance_page(request):
    governance.proposals_sync_open()
    template = "ledger/_proposals.html" if request.htmx else "ledger/governance.html"
    return render(request, template, _governance_context(request))


@require_POST
@login_required
def governance_delegate(request):
    try:
        governance.governance_delegate(user=request.user, delegatee=request.POST.get("delegatee") or None,
                                       signature=request.POST.get("signature", ""),
                                       nonce=_int(request.POST.get("nonce")), expiry=_int(request.POST.get("expiry")))
        messages.success(request, "Delegation queued: your OPEN counts as votes once it is mined.")
    except ApplicationError as exc:
        signing = _signing(exc, request)
        if signing:
            return render(request, "ledger/governance.html", _governance_context(request, signing=signing), status=428)
        messages.error(request, exc.message)
    return redirect("ledger:governance")


@require_POST
@login_required
def governance_propose(request):
    form = ProposeForm(request.POST)
    if not form.is_valid():
        return render(request, "ledger/governance.html", _governance_context(request, form=form), status=400)
    try:
        proposal = governance.governance_propose(user=request.user, action=form.cleaned_data["action"],
                                                 params=form.params(), reason=form.cleaned_data["reason"],
                                                 signature=form.cleaned_data["signature"])
    except ApplicationError as exc:
        signing = _signing(exc, request)
        if signing:
            return render(request, "ledger/governance.html", _governance_context(request, form=form, signing=signing),
                          status=428)
        messages.error(request, exc.message)
        return render(request, "ledger/governance.html", _governance_context(request, form=form), status=400)
    messages.success(request, "Proposal sent: voting opens after the voting delay.")
    return redirect("ledger:proposal", pk=proposal.pk)


def _proposal_context(request, proposal, **extra) -> dict:
    vote = proposal.votes.filter(user=request.user).first()
    return {"proposal": proposal, "my_vote": vote, "account": governance.governance_account(user=request.user),
            "polling": proposal.status in (GovernanceProposal.Status.PROPOSING, GovernanceProposal.Status.PENDING)
            or (vote is not None and not vote.cast), **extra}


@require_GET
@login_required
def proposal_detail(request, pk: int):
    proposal = governance.proposal_sync(proposal=get_object_or_404(GovernanceProposal, pk=pk))
    template = "ledger/_proposal.html" if request.htmx else "ledger/proposal.html"
    return render(request, template, _proposal_context(request, proposal))


@require_POST
@login_required
def proposal_act(request, pk: int, act: str):
    """vote / queue / execute: each a service call; an own wallet gets the typed data to sign."""
    proposal = get_object_or_404(GovernanceProposal, pk=pk)
    try:
        if act == "vote":
            governance.governance_vote(user=request.user, proposal=proposal, support=request.POST.get("support", ""),
                                       signature=request.POST.get("signature", ""))
            messages.success(request, "Vote queued.")
        elif act == "queue":
            governance.governance_queue(user=request.user, proposal=proposal)
            messages.success(request, "Queueing in the timelock.")
        else:
            governance.governance_execute(user=request.user, proposal=proposal)
            messages.success(request, "Executing.")
    except ApplicationError as exc:
        signing = _signing(exc, request)
        if signing:
            return render(request, "ledger/proposal.html", _proposal_context(request, proposal, signing=signing),
                          status=428)
        messages.error(request, exc.message)
    return redirect("ledger:proposal", pk=pk)


def _int(value) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
