from django.shortcuts import render
from django.views.decorators.http import require_GET


@require_GET
def factory_home(request):
    return render(request, "factory/home.html")


@require_GET
def model_list(request):
    return render(request, "factory/models.html")
