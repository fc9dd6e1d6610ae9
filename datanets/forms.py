from django import forms

from datanets.models import Contribution, Datanet
from datanets.readers import TEXT_MODES


class DatanetFilterForm(forms.Form):
    q = forms.CharField(required=False, label="Search")
    domain = forms.ChoiceField(required=False, choices=[("", "All domains"), *Datanet.Domain.choices])


class RecordFilterForm(forms.Form):
    """The Datanet page's record browser: full-text search, label, contributor, review status, keyset cursor."""

    q = forms.CharField(required=False, max_length=200, label="Search")
    label = forms.ChoiceField(required=False)
    contributor = forms.CharField(required=False, max_length=150)
    # Accepted records unless asked otherwise; "any" = every status the caller may read.
    status = forms.ChoiceField(required=False, choices=[*Contribution.Status.choices, ("any", "Any status")])
    after = forms.IntegerField(required=False, min_value=0, widget=forms.HiddenInput)

    def __init__(self, *args, labels: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["label"].choices = [("", "All labels"), *((lab, lab) for lab in labels)]


class UploadForm(forms.Form):
    file = forms.FileField(help_text="CSV, TSV, JSONL, Parquet or plain text (.txt); .gz or .zip of one is fine.")
    text_mode = forms.ChoiceField(choices=[(m, f"one record per {m}") for m in TEXT_MODES], initial="line",
                                  help_text="Plain text only.")
    drop_bad_rows = forms.BooleanField(required=False, help_text="Store the valid rows even if some fail validation.")
    is_evaluation = forms.BooleanField(
        required=False, label="Curator-held evaluation data",
        help_text="Frozen in versions but never trained on and never paid; the attribution build's validation "
                  "queries. No stake. Curators of this Datanet only.")


class MappingForm(forms.Form):
    text_column = forms.ChoiceField(label="Text column")
    label_column = forms.ChoiceField(label="Label column", required=False)
    text_mode = forms.ChoiceField(choices=[(m, f"one record per {m}") for m in TEXT_MODES], initial="line")
    drop_bad_rows = forms.BooleanField(required=False, help_text="Store the valid rows even if some fail validation.")

    def __init__(self, *args, columns: list[str], needs_label: bool, is_text: bool, is_chat: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        choices = [("", "—")] + [(c, c) for c in columns]
        self.fields["text_column"].choices = choices
        self.fields["label_column"].choices = choices
        if is_chat:  # instruction data: a messages column, or a prompt column and a response column
            needs_label = True
            self.fields["text_column"].label = "Messages or prompt column"
            self.fields["label_column"].label = "Response column"
            self.fields["label_column"].help_text = "Blank when the first column holds chat messages (role/content turns)."
        if is_text:
            del self.fields["text_column"]
            del self.fields["label_column"]
        else:
            del self.fields["text_mode"]
            if not needs_label:
                del self.fields["label_column"]


class DatanetCreateForm(forms.Form):
    name = forms.CharField(max_length=120)
    domain = forms.ChoiceField(choices=Datanet.Domain.choices, initial=Datanet.Domain.OTHER)
    task = forms.ChoiceField(choices=Datanet.Task.choices, initial=Datanet.Task.CLASSIFICATION)
    labels = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 4}),
                             help_text="Text classification: the allowed labels, one per line.")
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 4}))
    license = forms.CharField(required=False, max_length=120)
    min_stake = forms.DecimalField(min_value=0, max_digits=38, decimal_places=18, initial=10,
                                   help_text="OPEN locked by each contribution until a curator decides.")
    slash_fraction = forms.DecimalField(min_value=0, max_value=1, max_digits=5, decimal_places=4, initial="0.5",
                                        help_text="Share of the stake slashed when a contribution is rejected.")
    max_text_length = forms.IntegerField(min_value=1, max_value=1_000_000, initial=10_000,
                                         help_text="Longest record text accepted, in characters.")
    harm_threshold = forms.FloatField(min_value=0, max_value=1, initial=0.0, required=False,
                                      help_text="Flag a contributor to curators when their records' mean influence on a "
                                                "model's validation set is significantly negative and below minus this.")

    def clean_harm_threshold(self) -> float:
        return self.cleaned_data.get("harm_threshold") or 0.0

    def clean_labels(self) -> list[str]:
        return [line.strip() for line in self.cleaned_data["labels"].splitlines() if line.strip()]
