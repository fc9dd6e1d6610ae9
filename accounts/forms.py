from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import UserCreationForm

from accounts.models import wallet_validator
from core.roles import SELF_SERVICE_ROLES


class SignUpForm(UserCreationForm):
    email = forms.EmailField(required=False)
    roles = forms.MultipleChoiceField(
        choices=[(r, r.capitalize()) for r in SELF_SERVICE_ROLES],
        widget=forms.CheckboxSelectMultiple,
        required=True,
        initial=list(SELF_SERVICE_ROLES),
        help_text="Contributors upload data; model developers fine-tune models. Curators are appointed by an admin.",
    )
    wallet_address = forms.CharField(required=False, max_length=42, validators=[wallet_validator],
                                     help_text="Optional: the EVM address your rewards are paid to.")

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username", "email")


class ProfileForm(forms.Form):
    email = forms.EmailField(required=False)
    wallet_address = forms.CharField(required=False, max_length=42, validators=[wallet_validator],
                                     help_text="0x followed by 40 hexadecimal characters.")
    bio = forms.CharField(required=False, max_length=280, widget=forms.Textarea(attrs={"rows": 3}))


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=80, help_text="What this key is for, e.g. 'pricing bot'.")
    rate_limit_per_minute = forms.IntegerField(min_value=1, max_value=10_000, initial=60)
