from django.shortcuts import render
from django.views.decorators.http import require_GET

from datanets.models import Datanet


@require_GET
def datanet_list(request):
    return render(request, "datanets/list.html", {"datanets": Datanet.objects.all()})
