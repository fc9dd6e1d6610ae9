"""HTML forms of the factory. The hyperparameter rules live in services.finetune_params_validate (one set
of rules for the form and the API); these forms only collect input and place the service's messages."""
from django import forms
from django.urls import reverse

from core.errors import ApplicationError
from datanets.models import Datanet, DatanetVersion
from factory import selectors, services
from factory.models import BaseModel, FineTuneJob
from factory.training.types import OUTPUT_LAYER

PARAM_FIELDS = ("lora_r", "lora_alpha", "lora_dropout", "epochs", "patience", "learning_rate", "loraplus_ratio",
                "batch_size",
                "max_length", "eval_split", "seed")
PARAM_HELP = {
    "lora_r": "Rank of the low-rank update: higher learns more, trains more parameters.",
    "lora_alpha": "Scale of the update (often 2 × rank).",
    "lora_dropout": "Dropout on the LoRA path, 0 to 0.9.",
    "epochs": "Passes over the training split at most (a preset sizes them from the Datanet version).",
    "patience": "Stop after this many epochs without a better validation score, keeping the best epoch; 0: off.",
    "learning_rate": "AdamW learning rate; LoRA likes 1e-4 to 1e-3.",
    "loraplus_ratio": "LoRA+: the LoRA B matrices learn this many times faster than the rest; 1: plain LoRA.",
    "batch_size": "Examples per step; lower it if a run runs out of memory.",
    "max_length": "Tokens kept per example (longer texts are cut).",
    "eval_split": "Share of the version held out to evaluate each epoch (0.05 to 0.5).",
    "seed": "Same seed, data and settings give the same adapter.",
}
DEFAULT_PRESET = services.DEFAULT_PRESET


def _number_input(name: str) -> forms.NumberInput:
    kind, low, high = services.PARAM_RULES[name]
    step = "1" if kind is int else "any"
    return forms.NumberInput(attrs={"min": f"{low:g}", "max": f"{high:g}", "step": step})


def version_queryset():
    return DatanetVersion.objects.select_related("datanet").order_by("datanet__name", "-number")


class VersionChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj):
        return f"{obj.datanet.name} v{obj.number} ({obj.record_count} records, {obj.datanet.get_task_display()})"


class FineTuneForm(forms.Form):
    """The fine-tune form. Hyperparameters are text on the server side (number inputs in the browser) so
    that the service, not Django's field cleaning, writes every message."""

    name = forms.CharField(max_length=120, required=False, help_text="Optional; defaults to “base on version”.")
    datanet_version = VersionChoiceField(queryset=version_queryset(), empty_label="Pick a Datanet version",
                                         required=False)
    base_model = forms.ModelChoiceField(queryset=BaseModel.objects.filter(is_active=True),
                                        empty_label="Pick a base model", required=False)
    task = forms.ChoiceField(choices=FineTuneJob.Task.choices)
    preset = forms.ChoiceField(choices=[("", "custom")] + [(p, p) for p in services.PRESETS], required=False,
                               widget=forms.HiddenInput)
    target_modules = forms.MultipleChoiceField(choices=(), required=False, widget=forms.CheckboxSelectMultiple,
                                               help_text="Linear layers of the base model that get a LoRA update.")
    packing = forms.BooleanField(required=False, help_text="Generation: pack short examples into full rows of max "
                                                           "length (fewer steps; examples in a row see each other).")
    quantization = forms.ChoiceField(choices=list(services.QUANTIZATIONS.items()), required=False, initial="none")
    keep_epoch = forms.ChoiceField(choices=list(services.KEEP_EPOCHS.items()), required=False, initial="best",
                                   label="Adapter kept",
                                   help_text="The best validation epoch's, or the last epoch's (to learn passages "
                                             "by heart, whatever the held-out loss).")

    def __init__(self, *args, base_model: BaseModel | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        for name in PARAM_FIELDS:
            self.fields[name] = forms.CharField(label=services.PARAM_LABELS[name], widget=_number_input(name),
                                                help_text=PARAM_HELP[name], required=False)
        self.fields["datanet_version"].queryset = version_queryset()
        self.fields["base_model"].queryset = BaseModel.objects.filter(is_active=True)
        self.base_model_obj = base_model
        # A new base model means new target-module choices: htmx redraws the form body (values kept).
        # A new Datanet version re-sizes a preset's epochs (and a new task its max length): the same redraw.
        redraw = {"hx-get": reverse("factory:finetune-new"), "hx-target": "#ft-fields", "hx-swap": "outerHTML",
                  "hx-include": "#ft-form", "hx-trigger": "change"}
        self.fields["base_model"].widget.attrs.update(redraw)
        self.fields["datanet_version"].widget.attrs.update(redraw)
        self.fields["task"].widget.attrs.update(redraw)  # a language model's max length is fitted to its data
        # QLoRA is offered only while a GPU worker is up (a live worker that reported a CUDA device).
        self.gpu_workers = selectors.cuda_workers()
        field = self.fields["quantization"]
        if self.gpu_workers:
            names = ", ".join(sorted({d["name"] for w in self.gpu_workers for d in w["devices"]}))
            field.help_text = f"4-bit NF4 base (QLoRA) fits bigger bases in GPU memory; GPU workers: {names}."
        else:
            field.choices = [("none", services.QUANTIZATIONS["none"])]
            field.help_text = "QLoRA (4-bit NF4) needs a GPU worker; none is connected."
        targets = base_model.target_modules if base_model else []
        self.fields["target_modules"].choices = [(t, f"{t} (output layer, generation only)" if t == OUTPUT_LAYER else t)
                                                 for t in targets]
        self.order_fields(["name", "datanet_version", "base_model", "task", "preset", "lora_r", "lora_alpha",
                           "lora_dropout", "target_modules", *PARAM_FIELDS[3:], "keep_epoch", "packing",
                           "quantization"])

    def clean(self):
        data = super().clean()
        raw_targets = self.data.getlist("target_modules") if hasattr(self.data, "getlist") else []
        params = {name: (self.data.get(name) or "").strip() for name in PARAM_FIELDS}
        params["target_modules"] = raw_targets
        params["packing"] = self.data.get("packing", "")
        params["quantization"] = self.data.get("quantization", "")
        params["keep_epoch"] = self.data.get("keep_epoch", "")
        try:
            data["params"] = services.finetune_params_validate(
                datanet_version=data.get("datanet_version"), base_model=data.get("base_model"),
                task=data.get("task", ""), params=params)
        except ApplicationError as exc:
            for field, message in exc.extra.get("errors", {}).items():
                # The service's message replaces Django's generic one ("Select a valid choice").
                self.errors.pop(field, None)
                self.add_error(field if field in self.fields else None, message)
            if not exc.extra.get("errors"):
                self.add_error(None, exc.message)
        return data


def _version_from(query) -> DatanetVersion | None:
    value = query.get("datanet_version")
    return version_queryset().filter(pk=value).first() if str(value or "").isdigit() else None


def _still_preset(query, preset: str, base_model: BaseModel | None) -> bool:
    """The typed values are the preset's (its epochs aside, which depend on the version)."""
    if preset not in services.PRESETS:
        return False
    expected = services.preset_params(preset=preset, base_model=base_model)
    return all(str(query.get(f) or "") == str(expected[f]) for f in PARAM_FIELDS if f not in ("epochs", "max_length"))


def fine_tune_initial(*, query, base_model: BaseModel | None) -> dict:
    """Values to draw the form with from a GET. A preset button (`apply_preset`) or a first visit fills a
    preset's values fitted to the base model and the Datanet version (epochs sized from its records); a
    redraw after a change of version re-sizes a preset still untouched; otherwise (the base model changed)
    typed values are kept. Target modules are kept only where the chosen model has them, else the model's
    defaults."""
    typed = any(query.get(f) not in (None, "") for f in PARAM_FIELDS)
    preset = query.get("apply_preset") or ("" if typed else (query.get("preset") or DEFAULT_PRESET))
    if not preset and typed and _still_preset(query, query.get("preset", ""), base_model):
        preset = query.get("preset")
    initial: dict = {}
    task = query.get("task") or ""
    if base_model is not None and base_model.tasks and task not in base_model.tasks:
        task = base_model.tasks[0]  # what the form will show (below); a language model's max length depends on it
    preset_tasks = services.PRESET_TASKS.get(preset, ())
    if preset_tasks and task not in preset_tasks:
        # A preset for other tasks (verbatim: language models): switch to its task when the base has it.
        usable = [t for t in preset_tasks if base_model is None or t in base_model.tasks]
        task = initial["task"] = usable[0] if usable else task
        preset = preset if usable else DEFAULT_PRESET
    if preset in services.PRESETS:
        initial.update(services.preset_params(preset=preset, base_model=base_model, datanet_version=_version_from(query),
                                              task=task))
        initial["preset"] = preset
    else:
        initial.update({f: query.get(f) for f in PARAM_FIELDS if query.get(f) not in (None, "")})
        initial["target_modules"] = query.getlist("target_modules") if hasattr(query, "getlist") else []
        initial["preset"] = query.get("preset", "") if query.get("preset") in services.PRESETS else ""
    for key in ("name", "datanet_version", "task", "packing", "quantization", "keep_epoch"):
        if query.get(key) and key not in initial:
            initial[key] = query.get(key)
    if base_model is not None:
        initial["base_model"] = base_model.pk
        allowed = set(base_model.target_modules)
        kept = [t for t in initial.get("target_modules", []) if t in allowed]
        initial["target_modules"] = kept or list(base_model.default_target_modules)
        if initial.get("task") not in base_model.tasks and base_model.tasks:
            initial["task"] = base_model.tasks[0]
    return initial


class JobFilterForm(forms.Form):
    status = forms.ChoiceField(choices=[("", "any status")] + list(FineTuneJob.Status.choices), required=False)
    base_model = forms.ModelChoiceField(queryset=BaseModel.objects.all(), required=False,
                                        empty_label="any base model")
    datanet = forms.IntegerField(required=False, widget=forms.Select)
    mine = forms.BooleanField(required=False, label="only mine")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["base_model"].queryset = BaseModel.objects.all()
        datanets = Datanet.objects.filter(versions__finetune_jobs__isnull=False).distinct().order_by("name")
        self.fields["datanet"].widget.choices = [("", "any Datanet")] + [(d.pk, d.name) for d in datanets]
