from django.apps import AppConfig


class ServingConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "serving"
    verbose_name = "Paid inference"

    def ready(self) -> None:
        # Attribution sits below serving and does not import it; it signals, serving acts. Imported here, not
        # at the top: an AppConfig module is loaded before the app registry is ready (Django's rule).
        from attribution.signals import attribution_index_ready, attribution_index_unsupported
        from serving.receivers import on_attribution_index_ready, on_attribution_index_unsupported

        attribution_index_ready.connect(on_attribution_index_ready, dispatch_uid="serving-settle-on-index-ready")
        attribution_index_unsupported.connect(on_attribution_index_unsupported,
                                              dispatch_uid="serving-spans-for-generators")
