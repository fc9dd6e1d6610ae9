# ruff: noqa: F811 - the fixtures imported from ui_helpers are the test arguments of the same names
"""The factory's HTML pages through the Django test client: permissions, validation messages, htmx
fragments. Jobs are created by the real service; no worker runs (the queueing happens after a commit
that these tests never reach)."""
import io
import re
import zipfile

import pytest
from django.test import Client
from django.urls import reverse

from accounts.tests.factories import UserFactory
from core.roles import CONTRIBUTOR
from factory.models import FineTuneJob, JobMetric
from factory.tests.factories import developer, make_version, small_params
from factory.tests.ui_helpers import (  # noqa: F401 - fixtures
    dev_client,
    make_job,
    make_model,
    tiny_bert,
    trained_adapter,
)
from factory.ui_services import markdown_render

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


def form_data(version, base, **kw) -> dict:
    data = {"datanet_version": version.pk, "base_model": base.pk, "task": "classification", "name": "",
            "preset": "", "lora_r": "4", "lora_alpha": "8", "lora_dropout": "0", "target_modules": ["query", "value"],
            "epochs": "2", "learning_rate": "0.005", "batch_size": "8", "max_length": "32", "eval_split": "0.25",
            "seed": "7"}
    data.update(kw)
    return data


# --- the fine-tune form ------------------------------------------------------------------------------

def test_form_needs_the_model_developer_role(client):
    url = reverse("factory:finetune-new")
    assert client.get(url).status_code == 302  # to the login page
    client.force_login(UserFactory(roles=[CONTRIBUTOR]))
    assert client.get(url).status_code == 403
    assert client.post(url, {}).status_code == 403
    assert client.get(reverse("factory:finetune-estimate")).status_code == 403


def test_form_shows_presets_and_the_models_target_modules(dev_client, tiny_bert):
    r = dev_client.get(reverse("factory:finetune-new"), {"base_model": tiny_bert.pk})
    html = r.content.decode()
    assert r.status_code == 200
    for preset in ("Quick", "Balanced", "Thorough"):
        assert f">{preset}</button>" in html
    for module in tiny_bert.target_modules:
        assert f'value="{module}"' in html
    assert 'hx-get="/factory/jobs/new/estimate/"' in html and 'id="ft-estimate"' in html
    # the first visit fills the balanced preset: every linear layer ticked, rank 16
    assert html.count('name="target_modules"') == len(tiny_bert.target_modules)
    assert html.count("checked") >= len(tiny_bert.target_modules)
    assert 'name="lora_r" value="16"' in html
    assert 'type="checkbox" name="packing"' in html and "checked" not in html.split('name="packing"')[1][:40]


def test_the_verbatim_preset_switches_to_generation_and_ticks_the_output_layer(dev_client, tiny_bert, tiny_gpt2_dir):
    from factory import services

    gpt = services.base_model_register(path=str(tiny_gpt2_dir), name="tiny-gpt2")
    version = make_version(n=12, task="generation", slug="lines")
    query = {**form_data(version, gpt, task="classification"), "apply_preset": "verbatim"}
    html = dev_client.get(reverse("factory:finetune-new"), query, **HTMX).content.decode()
    assert re.search(r'value="generation"[^>]*checked|value="generation"[^>]*selected', html)
    assert re.search(r'value="lm_head"[^>]*checked', html) and "output layer, generation only" in html
    assert 'name="epochs" value="40"' in html and 'name="loraplus_ratio" value="16.0"' in html
    # A base without generation keeps its task and gets the default preset instead.
    html = dev_client.get(reverse("factory:finetune-new"), {**form_data(make_version(n=12), tiny_bert),
                                                           "apply_preset": "verbatim"}, **HTMX).content.decode()
    assert 'name="lora_r" value="16"' in html and 'name="loraplus_ratio" value="1.0"' in html
    assert 'value="lm_head"' not in html


def test_preset_button_fills_the_form_through_htmx(dev_client, tiny_bert):
    version = make_version(n=12)
    r = dev_client.get(reverse("factory:finetune-new"), {**form_data(version, tiny_bert, lora_r="3"),
                                                         "apply_preset": "thorough"}, **HTMX)
    html = r.content.decode()
    assert r.status_code == 200 and "<html" not in html and html.lstrip().startswith('<div id="ft-fields">')
    assert r["HX-Trigger"] == "ft-redrawn"
    # thorough sized for 12 records: 10 training rows, one step an epoch -> its cap of 40 epochs
    assert 'name="lora_r" value="32"' in html and 'name="epochs" value="40"' in html and 'name="patience" value="4"' in html
    assert 'name="max_length" value="128"' in html  # thorough's 128 fits tiny-bert's limit of 128
    assert f'<option value="{version.pk}" selected>' in html
    # without a preset button the typed values are kept (a redraw after a change of base model)
    r = dev_client.get(reverse("factory:finetune-new"), form_data(version, tiny_bert, lora_r="3"), **HTMX)
    assert 'name="lora_r" value="3"' in r.content.decode()


def test_changing_base_model_keeps_only_its_layers(dev_client, tiny_bert, tiny_gpt2_dir):
    from factory import services

    gpt = services.base_model_register(path=str(tiny_gpt2_dir), name="tiny-gpt2")
    version = make_version(n=12)
    r = dev_client.get(reverse("factory:finetune-new"), form_data(version, gpt), **HTMX)
    html = r.content.decode()
    assert 'value="c_attn"' in html and 'value="query"' not in html
    # the typed query/value are not GPT-2 layers, so its defaults are ticked instead
    assert re.search(r'value="c_attn"[^>]*checked', html) and not re.search(r'value="c_fc"[^>]*checked', html)


def test_estimate_panel_matches_the_service(dev_client, tiny_bert):
    from factory import services

    version = make_version(n=40)
    r = dev_client.get(reverse("factory:finetune-estimate"), form_data(version, tiny_bert), **HTMX)
    html = r.content.decode()
    params = services.finetune_params_validate(datanet_version=version, base_model=tiny_bert, task="classification",
                                               params={**form_data(version, tiny_bert)})
    est = services.finetune_estimate(datanet_version=version, base_model=tiny_bert, task="classification",
                                     params=params)
    assert r.status_code == 200 and "<html" not in html
    assert f"{est.trainable_params:,}" in html and "Time on CPU" in html and "Time on a GPU" in html
    assert f"{est.total_steps} <span" in html
    r = dev_client.get(reverse("factory:finetune-estimate"), form_data(version, tiny_bert, lora_r="0"), **HTMX)
    assert "LoRA rank must be greater than 0" in r.content.decode()


def test_submit_queues_the_job_and_redirects(dev_client, tiny_bert):
    version = make_version(n=24)
    r = dev_client.post(reverse("factory:finetune-new"), form_data(version, tiny_bert, name="my run"))
    job = FineTuneJob.objects.get()
    assert r.status_code == 302 and r["Location"] == reverse("factory:job", args=[job.pk])
    assert job.status == "queued" and job.owner == dev_client.user and job.name == "my run"
    assert job.hyperparameters["lora_r"] == 4 and job.hyperparameters["target_modules"] == ["query", "value"]
    assert job.preset == ""
    page = dev_client.get(r["Location"]).content.decode()
    assert "my run" in page and f"Job {job.pk} queued" in page


def test_submit_keeps_a_preset_name_only_when_unchanged(dev_client, tiny_bert):
    from factory import services

    version = make_version(n=24)
    quick = services.preset_params(preset="quick", base_model=tiny_bert, datanet_version=version, task="classification")
    assert quick["epochs"] == 2  # 19 training rows at batch 32: one step an epoch, capped at 2
    data = form_data(version, tiny_bert, preset="quick", **{k: str(v) for k, v in quick.items() if k != "target_modules"})
    data["target_modules"] = quick["target_modules"]
    dev_client.post(reverse("factory:finetune-new"), data)
    dev_client.post(reverse("factory:finetune-new"), {**data, "epochs": "3"})
    assert list(FineTuneJob.objects.order_by("id").values_list("preset", flat=True)) == ["quick", ""]


@pytest.mark.parametrize("kw, message", [
    ({"lora_r": "0"}, "LoRA rank must be greater than 0."),
    ({"lora_r": "two"}, "LoRA rank must be a whole number."),
    ({"max_length": "4096"}, "Max sequence length 4096 is over tiny-bert&#x27;s limit of 128 tokens."),
    ({"target_modules": []}, "Pick at least one target module."),
    ({"target_modules": ["c_attn"]}, "are not layers of tiny-bert"),
    ({"task": "generation"}, "tiny-bert does not support generation"),
    ({"eval_split": "0.9"}, "Evaluation split must be between 0.05 and 0.5."),
    ({"datanet_version": ""}, "Pick a Datanet version."),
    ({"base_model": ""}, "Pick a base model from the catalog."),
])
def test_submit_shows_clear_validation_messages(dev_client, tiny_bert, kw, message):
    version = make_version(n=24)
    r = dev_client.post(reverse("factory:finetune-new"), form_data(version, tiny_bert, **kw))
    assert r.status_code == 200
    assert message in r.content.decode()
    assert FineTuneJob.objects.count() == 0


def test_submit_rejects_a_datanet_that_does_not_fit(dev_client, tiny_bert):
    version = make_version(n=12, rows=[(f"t{i}", "neutral") for i in range(12)])
    r = dev_client.post(reverse("factory:finetune-new"), form_data(version, tiny_bert))
    assert "records of only one label" in r.content.decode() and FineTuneJob.objects.count() == 0


# --- jobs ----------------------------------------------------------------------------------------------

def test_job_page_draws_curves_and_polls_while_running(dev_client, tiny_bert):
    job = make_job(owner=dev_client.user, base=tiny_bert, status="running", curve=8)
    r = dev_client.get(reverse("factory:job", args=[job.pk]))
    html = r.content.decode()
    assert r.status_code == 200
    assert 'hx-trigger="every 2s"' in html and reverse("factory:job-live", args=[job.pk]) in html
    assert html.count("<svg") == 2 and html.count('class="ft-line"') == 4  # loss: train+eval; accuracy, macro-F1
    assert "training loss" in html and "macro-f1" in html and "<script" not in html.split("</header>")[1]
    assert "LoRA rank <span" in html and "query, value" in html  # hyperparameters, in the form's order
    assert html.index("LoRA rank <span") < html.index("LoRA alpha <span") < html.index("Seed <span")
    assert "queued by dev" in html  # the log
    assert f'action="{reverse("factory:job-cancel", args=[job.pk])}"' in html
    assert reverse("factory:job-retry", args=[job.pk]) not in html


def test_live_fragment_stops_polling_when_the_job_ends(dev_client, tiny_bert):
    job = make_job(owner=dev_client.user, base=tiny_bert, status="running", curve=4)
    url = reverse("factory:job-live", args=[job.pk])
    html = dev_client.get(url, **HTMX).content.decode()
    assert html.startswith('<div id="job-live" hx-get=') and "every 2s" in html and "<html" not in html
    JobMetric.objects.create(job=job, kind="train", step=5, epoch=1.0, loss=0.5)
    job.status = "failed"
    job.error = "Out of memory: lower the batch size."
    job.save()
    html = dev_client.get(url, **HTMX).content.decode()
    assert "every 2s" not in html and "hx-get" not in html.split(">")[0]
    assert "Out of memory: lower the batch size." in html and "Retry" in html


def test_queued_job_page_shows_its_place_in_the_queue_and_disk_use(dev_client, tiny_bert, settings, tmp_path):
    settings.MODELS_DIR = tmp_path
    running = make_job(owner=dev_client.user, base=tiny_bert, status="running")
    first = make_job(owner=dev_client.user, base=tiny_bert)
    second = make_job(owner=dev_client.user, base=tiny_bert)
    html = dev_client.get(reverse("factory:job", args=[second.pk])).content.decode()
    assert "Waiting for the gpu worker: 1 job ahead, 1 running now." in html
    html = dev_client.get(reverse("factory:job-live", args=[first.pk]), **HTMX).content.decode()
    assert "next in the queue, 1 running now." in html
    assert 'id="job-queue"' not in dev_client.get(reverse("factory:job", args=[running.pk])).content.decode()
    import pathlib

    out = pathlib.Path(running.output_dir)
    (out / "checkpoint").mkdir(parents=True, exist_ok=True)
    (out / "checkpoint" / "adapter.bin").write_bytes(b"x" * 2048)
    assert "2.0\xa0KB on disk" in dev_client.get(reverse("factory:job", args=[running.pk])).content.decode()


def test_job_page_shows_the_majority_baseline_and_warns_when_the_model_does_not_beat_it(dev_client, tiny_bert):
    baseline = {"label": "neutral", "accuracy": 0.594, "macro_f1": 0.2487}
    job = make_job(owner=dev_client.user, base=tiny_bert, status="running", curve=4, patience=2, epochs=5)
    JobMetric.objects.create(job=job, kind="eval", step=5, epoch=1, loss=0.9, values={
        "eval_loss": 0.9, "accuracy": 0.59, "macro_f1": 0.30, "baseline": baseline})
    live = reverse("factory:job-live", args=[job.pk])
    html = dev_client.get(live, **HTMX).content.decode()
    assert "Majority-class baseline (always “neutral”): accuracy 0.594, macro-F1 0.2487." in html
    assert 'id="job-baseline-warning"' in html and "So far the model does not beat the majority-class baseline" in html
    # finished above the baseline on both: the baseline line stays, the warning goes
    job.status, job.best_epoch = "succeeded", 2
    job.metrics = {"accuracy": 0.83, "macro_f1": 0.80, "eval_loss": 0.5, "baseline": baseline}
    job.save()
    html = dev_client.get(reverse("factory:job", args=[job.pk])).content.decode()
    assert 'id="job-baseline"' in html and 'id="job-baseline-warning"' not in html
    # two evaluations of five epochs: early stopping ended it
    assert "Early stopping ended the run after epoch 2 of 5: 2 epochs without a better score." in html
    # finished on the majority label's accuracy: warned
    job.metrics = {"accuracy": 0.594, "macro_f1": 0.2487, "eval_loss": 0.9, "baseline": baseline}
    job.save()
    html = dev_client.get(live, **HTMX).content.decode()
    assert "This model does not beat the majority-class baseline (accuracy 0.594 against 0.594" in html
    # evaluations without a baseline (jobs from before it was recorded) show none
    assert 'id="job-baseline"' not in dev_client.get(reverse("factory:job", args=[make_job(
        owner=dev_client.user, base=tiny_bert, status="running", curve=4).pk])).content.decode()


def test_job_page_needs_login_and_404s(client, dev_client, tiny_bert):
    job = make_job(base=tiny_bert)
    client.logout()
    assert client.get(reverse("factory:job", args=[job.pk])).status_code == 302
    assert dev_client.get(reverse("factory:job", args=[job.pk + 999])).status_code == 404


def test_cancel_and_retry_are_permission_checked_posts(dev_client, tiny_bert):
    job = make_job(owner=dev_client.user, base=tiny_bert)
    cancel, retry = reverse("factory:job-cancel", args=[job.pk]), reverse("factory:job-retry", args=[job.pk])
    assert dev_client.get(cancel).status_code == 405
    r = dev_client.post(cancel)
    assert r.status_code == 302 and FineTuneJob.objects.get(pk=job.pk).status == "cancelled"
    r = dev_client.post(cancel, follow=True)  # a second cancel is refused with the reason
    assert "only queued or running jobs can be cancelled" in r.content.decode()
    r = dev_client.post(retry, **HTMX)
    assert r.status_code == 204 and r["HX-Redirect"] == reverse("factory:job", args=[job.pk])
    assert FineTuneJob.objects.get(pk=job.pk).status == "queued"
    other = developer()
    dev_client.force_login(other)
    assert dev_client.post(cancel).status_code == 403
    assert FineTuneJob.objects.get(pk=job.pk).status == "queued"
    dev_client.force_login(UserFactory(roles=[CONTRIBUTOR]))
    assert dev_client.post(retry).status_code == 403


def test_other_users_see_no_action_buttons(dev_client, tiny_bert):
    job = make_job(base=tiny_bert, status="running")
    html = dev_client.get(reverse("factory:job", args=[job.pk])).content.decode()
    assert reverse("factory:job-cancel", args=[job.pk]) not in html


def test_jobs_list_filters(dev_client, tiny_bert):
    mine = make_job(owner=dev_client.user, base=tiny_bert, status="running")
    theirs = make_job(base=tiny_bert, status="failed")
    url = reverse("factory:jobs")
    html = dev_client.get(url).content.decode()
    assert f"#{mine.pk} " in html and f"#{theirs.pk} " in html and 'name="ids"' in html

    def shown(**params):
        html = dev_client.get(url, params, **HTMX).content.decode()
        assert "<html" not in html
        return {j.pk for j in (mine, theirs) if f">#{j.pk} " in html}

    assert shown(status="failed") == {theirs.pk}
    assert shown(mine="on") == {mine.pk}
    assert shown(datanet=mine.datanet_version.datanet_id) == {mine.pk}
    assert shown(base_model=tiny_bert.pk) == {mine.pk, theirs.pk}
    assert shown(status="succeeded") == set()


def test_compare_two_runs(dev_client, tiny_bert):
    a = make_job(owner=dev_client.user, base=tiny_bert, status="succeeded", curve=8)
    b = make_job(owner=dev_client.user, base=tiny_bert, status="succeeded", curve=4, lora_r=8)
    a.metrics = {"macro_f1": 0.9, "accuracy": 0.91, "eval_loss": 0.3}
    a.save()
    r = dev_client.get(reverse("factory:compare"), {"ids": [a.pk, b.pk]})
    html = r.content.decode()
    assert r.status_code == 200 and html.count('class="ft-line"') == 2
    assert f"#{a.pk} {a.name}" in html and f"#{b.pk} {b.name}" in html
    assert 'class="ft-differs"><th>lora_r</th>' in html and 'class="ft-best">0.9<' in html
    r = dev_client.get(reverse("factory:compare"), {"ids": f"{a.pk}"}, follow=True)
    assert "Pick two or more jobs to compare." in r.content.decode()


# --- catalog and models --------------------------------------------------------------------------------

def test_base_model_catalog_is_public(client, tiny_bert):
    html = client.get(reverse("factory:base-models")).content.decode()
    assert "tiny-bert" in html and "<strong>query</strong>" in html and "classification" in html


def test_home_page(client, dev_client, tiny_bert):
    job = make_job(owner=dev_client.user, base=tiny_bert)
    html = dev_client.get(reverse("factory:home")).content.decode()
    assert reverse("factory:finetune-new") in html and f"#{job.pk}" in html
    client.logout()
    assert client.get(reverse("factory:home")).status_code == 200


def test_models_list_and_page(client, dev_client, tiny_bert, trained_adapter):
    model = make_model(job=make_job(owner=dev_client.user, base=tiny_bert), result=trained_adapter)
    html = client.get(reverse("factory:models")).content.decode()
    assert model.name in html and reverse("factory:model", args=[model.pk]) in html
    html = dev_client.get(reverse("factory:model", args=[model.pk])).content.decode()
    assert model.version_root in html and model.adapter_sha256 in html
    assert "<h3>Training data</h3>" in html and "<td>alice&lt;b&gt;</td>" in html and "<td>bob|x</td>" in html
    assert reverse("factory:model-download", args=[model.pk]) in html and 'id="playground"' in html
    assert "Top contributors" in html  # attribution's block, included since its template exists


def test_model_page_works_without_the_other_apps_blocks(dev_client, tiny_bert, trained_adapter, monkeypatch):
    from factory import ui_services

    monkeypatch.setattr(ui_services, "MODEL_PAGE_EXTRAS", {"contributors": ("attribution/_absent.html",),
                                                           "paid_inference": ("serving/_absent.html",)})
    model = make_model(job=make_job(owner=dev_client.user, base=tiny_bert), result=trained_adapter)
    r = dev_client.get(reverse("factory:model", args=[model.pk]))
    html = r.content.decode()
    assert r.status_code == 200 and 'id="model-contributors"' not in html and 'id="model-paid-inference"' not in html


def test_model_page_includes_other_apps_blocks_when_present(dev_client, tiny_bert, trained_adapter, settings,
                                                            tmp_path):
    model = make_model(job=make_job(owner=dev_client.user, base=tiny_bert), result=trained_adapter)
    (tmp_path / "attribution").mkdir()  # the tmp folder comes first, so its templates win
    (tmp_path / "attribution" / "_model_contributors.html").write_text("TOP CONTRIBUTORS OF {{ model.name }}")
    (tmp_path / "serving").mkdir()
    (tmp_path / "serving" / "_model_playground.html").write_text("PAID INFERENCE {{ model.pk }}")
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [tmp_path, *settings.TEMPLATES[0]["DIRS"]]}]
    html = dev_client.get(reverse("factory:model", args=[model.pk])).content.decode()
    assert f"TOP CONTRIBUTORS OF {model.name}" in html and f"PAID INFERENCE {model.pk}" in html


def test_adapter_download(client, dev_client, tiny_bert, trained_adapter):
    model = make_model(job=make_job(owner=dev_client.user, base=tiny_bert), result=trained_adapter)
    url = reverse("factory:model-download", args=[model.pk])
    r = dev_client.get(url)
    assert r.status_code == 200 and r["Content-Type"] == "application/zip"
    assert r["X-Adapter-SHA256"] == model.adapter_sha256
    names = {n.rsplit("/", 1)[-1] for n in zipfile.ZipFile(io.BytesIO(r.content)).namelist()}
    assert {"adapter_model.safetensors", "adapter_config.json"} <= names
    client.logout()
    assert client.get(url).status_code == 302
    model.adapter_dir = "/nonexistent/adapter"
    model.save()
    assert dev_client.get(url).status_code == 404


def test_markdown_render_escapes_everything():
    html = markdown_render("# T <script>\n\n| a | b |\n| --- | --- |\n| <i>x</i> | `y<z>` |\n\n- **bold** & more\n\n```\n<b>\n```")
    assert "<script>" not in html and "&lt;script&gt;" in html and "<td>&lt;i&gt;x&lt;/i&gt;</td>" in html
    assert "<code>y&lt;z&gt;</code>" in html and "<strong>bold</strong> &amp; more" in html
    assert "<pre><code>&lt;b&gt;</code></pre>" in html and "<th>a</th>" in html


def test_chart_layout_ticks_thinning_and_empty():
    from factory.ui_services import MAX_POINTS, Series, chart_build

    chart = chart_build(title="Loss", series=[Series(name="a", points=[(s, 2.0 / s) for s in range(1, 1001)])])
    assert len(chart.series[0].points) <= MAX_POINTS + 1 and chart.series[0].points[-1] == (1000, 0.002)
    assert [label for _, label in chart.x_ticks][0] == "0" and chart.x_ticks[-1][1] == "1,000"
    xs = [float(p.split(",")[0]) for p in chart.series[0].svg_points.split()]
    ys = [float(p.split(",")[1]) for p in chart.series[0].svg_points.split()]
    assert chart.left <= min(xs) and max(xs) <= chart.right and chart.top <= min(ys) and max(ys) <= chart.bottom
    assert chart_build(title="x", series=[Series(name="a", points=[(1, float("nan"))])]).empty
    one = chart_build(title="x", series=[Series(name="a", points=[(3, 0.5)])])
    assert len(one.series[0].dots) == 1  # a single point still shows


def test_generation_job_draws_perplexity(dev_client, tiny_gpt2_dir):
    from factory import services

    gpt = services.base_model_register(path=str(tiny_gpt2_dir), name="tiny-gpt2")
    version = make_version(n=12, task="generation", slug="plays")
    job = services.finetune_job_create(owner=dev_client.user, datanet_version=version, base_model=gpt,
                                       task="generation", params=small_params(target_modules=["c_attn"]))
    JobMetric.objects.create(job=job, kind="train", step=1, epoch=0.5, loss=5.0)
    JobMetric.objects.create(job=job, kind="eval", step=2, epoch=1, loss=4.0, values={"perplexity": 54.6})
    html = dev_client.get(reverse("factory:job", args=[job.pk])).content.decode()
    assert "Perplexity" in html and html.count("<svg") == 2 and "54.6" in html


# --- in a real browser: the htmx parts ---------------------------------------------------------------

@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_browser_form_presets_estimate_and_live_job_page(live_server, tiny_bert_dir):
    """Presets redraw the form, the estimate follows the fields, submit lands on the job page, which polls
    until the job ends and then shows the curves. (The job is queued to Redis; no worker runs here.)"""
    from playwright.sync_api import sync_playwright

    from factory import services
    from tests.test_browser import CHROMIUM, CHROMIUM_ARGS

    tiny = services.base_model_register(path=str(tiny_bert_dir), name="tiny-bert")
    services.base_model_register(path=str(tiny_bert_dir), name="a-tiny-bert-too")
    version = make_version(n=24)
    user = developer(username="walker")
    user.set_password("a-long-secret-42")
    user.save()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.goto(live_server.url + "/accounts/login/?next=/factory/jobs/new/")
        page.fill("input[name=username]", "walker")
        page.fill("input[name=password]", "a-long-secret-42")
        page.click("button[type=submit]")
        page.wait_for_selector("#ft-form")
        page.select_option("select[name=base_model]", str(tiny.pk))
        page.wait_for_function("document.querySelector('#ft-base-info').textContent.startsWith('tiny-bert:')")
        page.select_option("select[name=datanet_version]", str(version.pk))
        # the version redraws the form: balanced's epochs sized for 24 records (2 steps an epoch -> 20)
        page.wait_for_function("document.querySelector('input[name=epochs]').value === '20'")
        page.wait_for_selector("#ft-estimate:has-text('Trainable parameters')")
        page.click("button[value=quick]")
        page.wait_for_function("document.querySelector('input[name=lora_r]').value === '8'")
        assert page.locator("input[name=target_modules]:checked").count() == len(tiny.target_modules)  # every one
        assert page.locator("input[name=epochs]").input_value() == "2"  # quick: 100 steps wanted, at most 2 epochs
        page.wait_for_selector("#ft-estimate:has-text('Trainable parameters')")
        page.fill("input[name=lora_r]", "0")
        page.locator("input[name=lora_r]").dispatch_event("change")
        page.wait_for_selector("#ft-estimate:has-text('LoRA rank must be greater than 0')")
        page.fill("input[name=lora_r]", "4")
        page.click("button[name=submit]")
        page.wait_for_selector("#job-status:has-text('Queued')")
        job = FineTuneJob.objects.get()
        assert job.hyperparameters["lora_r"] == 4 and job.preset == ""
        # the worker's progress, as the page sees it while polling
        FineTuneJob.objects.filter(pk=job.pk).update(status="running", step=4, total_steps=8)
        for step in range(1, 5):
            JobMetric.objects.create(job=job, kind="train", step=step, epoch=step / 4, loss=1.0 / step)
        page.wait_for_selector("#job-status:has-text('Running')", timeout=10_000)
        page.wait_for_selector("polyline.ft-line")
        JobMetric.objects.create(job=job, kind="eval", step=4, epoch=1, loss=0.4,
                                 values={"accuracy": 0.8, "macro_f1": 0.75})
        FineTuneJob.objects.filter(pk=job.pk).update(status="failed", error="Out of memory: lower the batch size.")
        page.wait_for_selector("text=Out of memory: lower the batch size.", timeout=10_000)
        assert page.locator("#job-live[hx-trigger]").count() == 0  # polling stopped
        assert page.locator("svg.ft-svg").count() == 2
        browser.close()
    from config.celery import app

    app.control.purge()  # the queued job's message: no worker here will ever take it


@pytest.mark.slow
@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_balanced_preset_through_the_pages_with_a_real_worker(start_worker, tiny_bert_dir, settings, tmp_path):
    """The issue's "done when", on a tiny model: pick the Datanet, take the balanced preset, submit, watch
    the job page until it stops polling, then try the finished model in the playground."""
    import time

    from factory import services
    from factory.models import FineTunedModel

    settings.MODELS_DIR = tmp_path
    tiny = services.base_model_register(path=str(tiny_bert_dir), name="tiny-bert")
    version = make_version(n=40)
    worker = start_worker(queues="gpu", MODELS_DIR=tmp_path, FACTORY_PROGRESS_SECONDS=0, FACTORY_CPU_THREADS=1)
    client = Client()
    client.force_login(developer(username="dev"))
    form = client.get(reverse("factory:finetune-new"), {"base_model": tiny.pk, "datanet_version": version.pk,
                                                        "apply_preset": "balanced"}).context["form"]
    data = {k: v for k, v in form.initial.items() if v is not None}
    r = client.post(reverse("factory:finetune-new"), {**data, "datanet_version": version.pk})
    job = FineTuneJob.objects.get()
    # 40 records: 32 training rows, 2 steps an epoch: balanced asks for 300 steps -> its cap of 20 epochs,
    # which early stopping (patience 3) cuts short
    assert r.status_code == 302 and job.preset == "balanced" and job.hyperparameters["epochs"] == 20
    live = reverse("factory:job-live", args=[job.pk])
    deadline = time.monotonic() + 180
    while "every 2s" in (html := client.get(live, **HTMX).content.decode()):
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.5)
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert 'class="ft-line"' in html and "Model ready" in html and "Confusion matrix" in html
    assert "Majority-class baseline (always" in html
    model = FineTunedModel.objects.get(job=job)
    r = client.post(reverse("serving:model-playground", args=[model.pk]), {"text": "profit rose strongly"}, **HTMX)
    assert html.count("<svg") == 2 and r.content.decode().split('id="playground-label">')[1].split("<")[0] in model.labels
