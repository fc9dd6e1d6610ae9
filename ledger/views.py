from django.shortcuts import render
from django.views.decorators.http import require_GET

from ledger.models import LedgerTransaction


@require_GET
def explorer(request):
    return render(request, "ledger/explorer.html", {"transactions": LedgerTransaction.objects.order_by("-id")[:50]})
