"""`{{ moment|to_second }}`: a time as every page shows it (runs/display.py)."""

from django import template

from runs.display import to_second as to_second_text

register = template.Library()


@register.filter
def to_second(moment):
    return to_second_text(moment)
