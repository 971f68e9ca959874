"""The pages: landing, the run list, the new-run form and a run's live page.

Reads via selectors, writes via services; the live parts are
static/web/run-view.js on top of the realtime client.
"""

from __future__ import annotations

import re

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from realtime.reads.summaries import run_summaries_for_user
from runs import selectors, services
from runs.serializers import RunSerializer
from runs.tools import PlanError, list_tools
from web.forms import INITIAL_ROWS, FormError, parse_steps, rows_to_show, tool_fields

RECENT_RUNS = 5  # on the home page


@login_required
def home(request):
    recent = run_summaries_for_user(user=request.user, limit=RECENT_RUNS)
    return render(request, "web/home.html", {"recent": recent, "recent_limit": RECENT_RUNS})


@never_cache  # the page shows a new key once: no copy of it in any cache
@login_required
@require_http_methods(["GET", "POST"])
def api_token(request):
    """The user's API token: create it, see it once, regenerate or revoke it (POST, CSRF-checked)."""
    action = request.POST.get("action") if request.method == "POST" else None
    new_key, error, status = None, None, 200
    if action == "create":
        try:
            new_key = services.api_token_create(user=request.user).key
        except services.TokenExistsError as refused:
            error, status = str(refused), 409
    elif action == "regenerate":
        new_key = services.api_token_regenerate(user=request.user).key
    elif action == "revoke":
        revoked = services.api_token_revoke(user=request.user)
        messages.info(request, "Your API token is revoked." if revoked else "You had no API token.")
        return redirect("api-token-page")
    elif request.method == "POST":
        error, status = "Unknown action: use the page's buttons.", 400
    token = selectors.api_token_for_user(user=request.user)
    context = {"token": token, "new_key": new_key, "error": error}
    return render(request, "web/api_token.html", context, status=status)


@login_required
def run_list(request):
    return render(request, "web/run_list.html", {"runs": run_summaries_for_user(user=request.user)})


@login_required
def run_new(request):
    tools = tool_fields(list_tools())
    context = {
        "tools": tools,
        "rows": range(INITIAL_ROWS),
        "error": None,
        "post": request.POST,
        "invalid": "",
    }
    if request.method == "POST":
        fields = {tool["name"]: None if tool["any_args"] else tool["fields"] for tool in tools}
        rows: list[int] = []
        try:
            steps, rows = parse_steps(request.POST, fields)
            run = services.run_create(owner=request.user, steps=steps, prompt=request.POST.get("prompt", ""))
        except FormError as error:
            context["error"] = _row_message(error.message, error.row)
            context["invalid"] = _field_id(request.POST, error.row, error.field, fields)
        except PlanError as error:
            # The plan's step numbers skip the empty rows; say which row of the form it is.
            row = rows[error.step] if error.step is not None and error.step < len(rows) else None
            context["error"] = _row_message(_PLAN_STEP_PREFIX.sub("", error.message), row)
            context["invalid"] = _field_id(request.POST, row, error.field, fields)
        except services.QuotaExceeded as error:
            context["error"] = f"Not created: {error.message}."
            response = render(
                request, "web/run_new.html", {**context, "rows": rows_to_show(request.POST)}, status=429
            )
            response["Retry-After"] = str(error.retry_after)
            return response
        else:
            return redirect("run-page", run_id=run.id)
        context["rows"] = rows_to_show(request.POST)
        return render(request, "web/run_new.html", context, status=400)
    return render(request, "web/run_new.html", context)


_PLAN_STEP_PREFIX = re.compile(r"^step \d+: ")


def _not_found(request):
    """A page for people (the project's 404 handler answers JSON, for the API)."""
    return render(request, "web/not_found.html", status=404)


class LogoutView(auth_views.LogoutView):
    """Log out, and say so on the login page it leads to."""

    def post(self, request, *args, **kwargs):
        response = super().post(request, *args, **kwargs)
        messages.info(request, "You are logged out.")
        return response


def _field_id(post, row: int | None, field: str | None, fields: dict) -> str:
    """The id of the form's input at fault (marked aria-invalid), or "" when no one input is."""
    if row is None:
        return ""
    tool = (post.get(f"step-{row}-tool") or "").strip()
    if field in (None, "tool") or tool not in fields:
        return f"step-{row}-tool"
    if fields[tool] is None:  # a tool taking any arguments: its name/value pair
        return f"step-{row}-any-{tool}-value"
    if any(declared.name == field for declared in fields[tool]):
        return f"step-{row}-arg-{tool}-{field}"
    return f"step-{row}-tool"


def _row_message(message: str, row: int | None) -> str:
    return message if row is None else f"Step {row + 1}: {message}"


@login_required
def run_detail(request, run_id):
    run = selectors.run_get_for_user(user=request.user, run_id=run_id)
    if run is None:
        return _not_found(request)
    return render(request, "web/run_detail.html", {"run": run, "snapshot": RunSerializer(run).data})


@login_required
@require_POST
def run_cancel(request, run_id):
    if selectors.run_get_for_user(user=request.user, run_id=run_id) is None:
        return _not_found(request)
    try:
        services.run_cancel(run_id=run_id)
    except services.TransitionError as error:
        messages.warning(request, error.message)
    else:
        messages.success(request, "Cancel requested: the run stops before its next step.")
    return redirect("run-page", run_id=run_id)


@login_required
@require_POST
def run_rerun(request, run_id):
    """A new run with the same prompt and plan, the owner's (run_create's rules apply), and its page."""
    run = selectors.run_get_for_user(user=request.user, run_id=run_id)
    if run is None:
        return _not_found(request)
    try:
        new = services.run_rerun(run=run, owner=run.owner)
    except PlanError as error:
        # The plan was valid once; a tool may have been removed or changed since.
        messages.warning(request, f"Not re-run: {error.message}")
        return redirect("run-page", run_id=run_id)
    except services.QuotaExceeded as error:
        messages.warning(request, f"Not re-run: {error.message}.")
        return redirect("run-page", run_id=run_id)
    messages.success(request, f"A re-run of run {str(run_id)[:8]}: same prompt, same steps.")
    return redirect("run-page", run_id=new.id)
