from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from accounts.forms import ApiKeyForm, ProfileForm, SignUpForm
from accounts.services import api_key_create, api_key_revoke, profile_get, profile_update, user_create
from core.errors import ApplicationError


@require_http_methods(["GET", "POST"])
def signup(request):
    if request.user.is_authenticated:
        return redirect("accounts:profile")
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = user_create(
            username=form.cleaned_data["username"],
            email=form.cleaned_data["email"],
            password=form.cleaned_data["password1"],
            roles=form.cleaned_data["roles"],
            wallet_address=form.cleaned_data["wallet_address"],
        )
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, f"Welcome, {user.username}. Your account is ready.")
        return redirect("home")
    return render(request, "accounts/signup.html", {"form": form})


@login_required
@require_http_methods(["GET", "POST"])
def profile(request):
    prof = profile_get(user=request.user)
    initial = {"email": request.user.email, "wallet_address": prof.wallet_address, "bio": prof.bio}
    form = ProfileForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        profile_update(user=request.user, **form.cleaned_data)
        messages.success(request, "Profile saved.")
        return redirect("accounts:profile")
    return render(request, "accounts/profile.html", {
        "form": form, "profile": prof, "key_form": ApiKeyForm(), "api_keys": request.user.api_keys.all(),
    })


@login_required
@require_http_methods(["POST"])
def api_key_new(request):
    """Create a key and show its secret once, on this response only (never stored in plain)."""
    form = ApiKeyForm(request.POST)
    new_key = None
    if form.is_valid():
        try:
            key, raw = api_key_create(user=request.user, name=form.cleaned_data["name"],
                                      rate_limit_per_minute=form.cleaned_data["rate_limit_per_minute"])
            new_key = {"key": key, "raw": raw}
        except ApplicationError as exc:
            messages.error(request, exc.message)
    prof = profile_get(user=request.user)
    initial = {"email": request.user.email, "wallet_address": prof.wallet_address, "bio": prof.bio}
    return render(request, "accounts/profile.html", {
        "form": ProfileForm(initial=initial), "profile": prof, "key_form": form if not new_key else ApiKeyForm(),
        "api_keys": request.user.api_keys.all(), "new_key": new_key,
    })


@login_required
@require_http_methods(["POST"])
def api_key_delete(request, key_id: int):
    try:
        api_key_revoke(user=request.user, key_id=key_id)
        messages.success(request, "API key revoked.")
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return redirect("accounts:profile")
