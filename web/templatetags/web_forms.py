"""Template helpers of the new-run form: the posted value of a row's field."""

from django import template

register = template.Library()


@register.simple_tag
def posted(post, *parts):
    """``post[<parts joined>]`` or "" (re-showing a form that had an error)."""
    return post.get("".join(str(part) for part in parts), "") if post else ""
