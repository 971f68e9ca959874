"""Template helpers of the new-run form: the posted value of a row's field, and the field at fault."""

from django import template
from django.utils.safestring import mark_safe

register = template.Library()


@register.simple_tag
def posted(post, *parts):
    """``post[<parts joined>]`` or "" (re-showing a form that had an error)."""
    return post.get("".join(str(part) for part in parts), "") if post else ""


@register.simple_tag
def invalid_attrs(invalid, *parts):
    """aria-invalid (and the error's id) on the input whose id ``parts`` make, if it is ``invalid``."""
    if invalid and "".join(str(part) for part in parts) == invalid:
        return mark_safe(' aria-invalid="true" aria-errormessage="form-error"')
    return ""
