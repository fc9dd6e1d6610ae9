"""Forms of the governance pages: a proposal's action and its parameters (validated again by the service)."""
from django import forms

from ledger.models import GovernanceProposal


class ProposeForm(forms.Form):
    action = forms.ChoiceField(choices=GovernanceProposal.Action.choices)
    contributors_bps = forms.IntegerField(min_value=0, max_value=10_000, required=False, initial=7000)
    developer_bps = forms.IntegerField(min_value=0, max_value=10_000, required=False, initial=2000)
    protocol_bps = forms.IntegerField(min_value=0, max_value=10_000, required=False, initial=1000)
    datanet_id = forms.IntegerField(min_value=1, required=False)
    min_stake = forms.DecimalField(min_value=0, max_digits=38, decimal_places=18, required=False, label="Minimum stake (OPEN)")
    slash_bps = forms.IntegerField(min_value=0, max_value=10_000, required=False, label="Slash rate (bps)")
    seconds = forms.IntegerField(min_value=60, max_value=30 * 86400, required=False, label="Epoch length (seconds)")
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False, max_length=2000)
    signature = forms.CharField(required=False, max_length=200, widget=forms.HiddenInput)

    FIELDS = {
        GovernanceProposal.Action.FEE_SPLIT: ("contributors_bps", "developer_bps", "protocol_bps"),
        GovernanceProposal.Action.DATANET_TERMS: ("datanet_id", "min_stake", "slash_bps"),
        GovernanceProposal.Action.EPOCH_SECONDS: ("seconds",),
    }

    def clean(self):
        data = super().clean()
        missing = [f for f in self.FIELDS.get(data.get("action"), ()) if data.get(f) in (None, "")]
        for name in missing:
            self.add_error(name, "Needed for this kind of proposal.")
        return data

    def params(self) -> dict:
        data = self.cleaned_data
        return {f: str(data[f]) if f == "min_stake" else data[f] for f in self.FIELDS[data["action"]]}
