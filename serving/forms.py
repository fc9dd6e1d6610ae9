from django import forms


class PlaygroundForm(forms.Form):
    # No max_length here: serving.services.input_clean checks SERVING_MAX_INPUT_CHARS for this path and
    # the API alike, and its message is shown.
    text = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "placeholder": "Type a sentence to try the model on"}),
                           strip=True)
