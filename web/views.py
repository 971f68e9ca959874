"""The pages: landing, the run list, the new-run form and a run's live page.

Reads via selectors, writes via services; the live parts are
static/web/run-view.js on top of the realtime client.
"""

from __future__ import annotations

import re

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from realtime.summaries import run_summaries_for_user
from runs import selectors, services
from runs.serializers import RunSerializer
from runs.tools import PlanError, list_tools
from web.forms import INITIAL_ROWS, FormError, parse_steps, tool_fields


@login_required
def home(request):
    recent = run_summaries_for_user(user=request.user, limit=5)
    return render(request, "web/home.html", {"recent": recent})


@login_required
def run_list(request):
    return render(request, "web/run_list.html", {"runs": run_summaries_for_user(user=request.user)})


@login_required
def run_new(request):
    tools = tool_fields(list_tools())
    context = {"tools": tools, "rows": range(INITIAL_ROWS), "error": None, "post": request.POST}
    if request.method == "POST":
        fields = {tool["name"]: None if tool["any_args"] else tool["fields"] for tool in tools}
        rows: list[int] = []
        try:
            steps, rows = parse_steps(request.POST, fields)
            run = services.run_create(owner=request.user, steps=steps, prompt=request.POST.get("prompt", ""))
        except FormError as error:
            context["error"] = _row_message(error.message, error.row)
        except PlanError as error:
            # The plan's step numbers skip the empty rows; say which row of the form it is.
            row = rows[error.step] if error.step is not None and error.step < len(rows) else None
            context["error"] = _row_message(_PLAN_STEP_PREFIX.sub("", error.message), row)
        except services.QuotaExceeded as error:
            context["error"] = f"Not created: {error.message}."
            response = render(
                request, "web/run_new.html", {**context, "rows": range(INITIAL_ROWS)}, status=429
            )
            response["Retry-After"] = str(error.retry_after)
            return response
        else:
            return redirect("run-page", run_id=run.id)
        posted = [int(key.split("-")[1]) for key in request.POST if re.match(r"step-\d+-", key)]
        context["rows"] = range(max(INITIAL_ROWS, max(posted, default=0) + 1))
        return render(request, "web/run_new.html", context, status=400)
    return render(request, "web/run_new.html", context)


_PLAN_STEP_PREFIX = re.compile(r"^step \d+: ")


def _not_found(request):
    """A page for people (the project's 404 handler answers JSON, for the API)."""
    return render(request, "web/not_found.html", status=404)


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
