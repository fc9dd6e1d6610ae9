"""The playground's form for the model page, which the factory renders without knowing the serving app."""
from django import template

from serving.forms import PlaygroundForm

register = template.Library()


@register.simple_tag
def playground_form() -> PlaygroundForm:
    return PlaygroundForm()
