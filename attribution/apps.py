from django.apps import AppConfig


class AttributionConfig(AppConfig):
    name = "attribution"
    verbose_name = "Proof of Attribution"

    def ready(self) -> None:
        # The factory sits below this app: it learns the canvas that follows a training run from here.
        # Imported here: an AppConfig module is loaded before the app registry is ready (Django's rule).
        from attribution.pipeline import post_training
        from factory.services import finetune_pipeline_set

        finetune_pipeline_set(post_training)
