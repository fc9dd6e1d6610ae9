from django import forms

from attribution.services import MAX_EXPLAIN_CHARS, MAX_TOP_K


class ExplainForm(forms.Form):
    text = forms.CharField(max_length=MAX_EXPLAIN_CHARS, widget=forms.Textarea(attrs={"rows": 3}),
                           help_text="A sentence to classify and trace back to the training records.")
    top_k = forms.IntegerField(min_value=1, max_value=MAX_TOP_K, initial=5, label="Records")
