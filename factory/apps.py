from django.apps import AppConfig


class FactoryConfig(AppConfig):
    name = "factory"
    verbose_name = "Model Factory"
