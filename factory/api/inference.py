"""Paid inference API (OpenLoRA serving); filled in by the serving work."""
urlpatterns: list = []
