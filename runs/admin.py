"""The Django admin for runs: watch and steer. Every change goes through services.

Staff get only the transitions that make sense — cancel, and re-run as a new
run — as buttons on a run's page and as list actions. There is no status
field: marking a processing run succeeded behind its worker's back is not an
operator's call. The change page and the change list update live: their
templates (web/templates/admin/runs/run/) mount the realtime client on the
run snapshot and the cells marked here with data-run-* attributes.
"""

import uuid

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.views.main import ERROR_FLAG
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.forms.fields import InvalidJSONInput
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from runs import selectors, services
from runs.display import to_second
from runs.models import RUN_TERMINAL, Run, StepStatus
from runs.serializers import RunSerializer
from runs.tools import PlanError, validate_plan
from runs.validation import InputError, json_depth, load_json, prompt_problem


class PlanField(forms.JSONField):
    """A plan typed as JSON, parsed with the API's bounds; shown again exactly as typed.

    Django's JSONField would parse any depth (a RecursionError past about a
    thousand levels) and show a refused value again through json.dumps, which
    fails on the very values refused (a lone surrogate cannot be encoded).
    """

    def to_python(self, value):
        if not isinstance(value, str):
            return super().to_python(value)
        if not value.strip():
            return None
        depth = settings.RUNS_MAX_ARGS_DEPTH
        # The steps' list and objects are two levels above their args.
        if json_depth(value) > depth + 2:
            raise forms.ValidationError(f"a step's args are nested more than {depth} levels deep")
        try:
            return load_json(value)
        except InputError as error:
            raise forms.ValidationError(f"{self.error_messages['invalid']} ({error.message})") from None

    def bound_data(self, data, initial):
        return InvalidJSONInput(data) if isinstance(data, str) else super().bound_data(data, initial)


class RunAddForm(forms.ModelForm):
    plan = PlanField(help_text=Run._meta.get_field("plan").help_text)

    class Meta:
        model = Run
        fields = ["owner", "prompt", "plan"]

    def clean_prompt(self):
        problem = prompt_problem(self.cleaned_data["prompt"])
        if problem:
            raise forms.ValidationError(problem)
        return self.cleaned_data["prompt"]

    def clean_owner(self):
        owner = self.cleaned_data["owner"]
        try:
            services.check_run_quota(owner=owner)
        except services.QuotaExceeded as error:
            raise forms.ValidationError(f"{owner} is over a quota: {error.message}") from None
        return owner

    def clean_plan(self):
        try:
            return validate_plan(self.cleaned_data["plan"], max_steps=settings.RUNS_MAX_STEPS)
        except PlanError as error:
            raise forms.ValidationError(error.message) from None


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ["short_id", "live_status", "owner", "progress", "created", "duration"]
    list_filter = ["status", "owner"]
    search_fields = ["prompt"]
    list_select_related = ["owner"]
    date_hierarchy = "created_at"
    actions = ["cancel_runs", "rerun_runs"]
    # Status, times, error and outputs are on the live panel above these (the
    # template's); here only what never changes after creation, and the cancel request.
    readonly_change_fields = ["id", "owner", "prompt", "plan", "created", "cancel_requested"]

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = RunAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_change_fields if obj is not None else []

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["owner", "prompt", "plan"]
        return self.readonly_change_fields

    def get_urls(self):
        name = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path(
                "<path:object_id>/cancel/",
                self.admin_site.admin_view(self.cancel_view),
                name=f"{name}_cancel",
            ),
            path(
                "<path:object_id>/rerun/", self.admin_site.admin_view(self.rerun_view), name=f"{name}_rerun"
            ),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        run = self._run_or_none(request, object_id)
        extra = dict(extra_context or {})
        if run is not None:
            extra.update(
                run_snapshot=RunSerializer(run).data,
                cancellable=run.status not in RUN_TERMINAL and run.cancel_requested_at is None,
                show_save=False,
                show_save_and_continue=False,
                show_save_and_add_another=False,
            )
        return super().change_view(request, object_id, form_url, extra)

    def _run_or_none(self, request, object_id) -> Run | None:
        try:
            run_id = uuid.UUID(str(object_id))
        except ValueError:
            return None
        return selectors.run_get_for_user(user=request.user, run_id=run_id)

    def _transition_target(self, request, object_id) -> Run:
        if request.method != "POST":
            raise _NotPost
        run = self._run_or_none(request, object_id)
        if run is None:
            raise Http404("no such run")
        if not self.has_change_permission(request, run):
            raise PermissionDenied
        return run

    def _change_url(self, run_id) -> str:
        return reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_change", args=[run_id])

    def cancel_view(self, request, object_id):
        """POST: cancel the run (a processing one stops before its next step)."""
        try:
            run = self._transition_target(request, object_id)
        except _NotPost:
            return HttpResponseNotAllowed(["POST"])
        try:
            services.run_cancel(run_id=run.id)
        except services.TransitionError as error:
            self.message_user(request, error.message, messages.WARNING)
        else:
            self.message_user(
                request, "Cancel requested: the run stops before its next step.", messages.SUCCESS
            )
        return HttpResponseRedirect(self._change_url(run.id))

    def rerun_view(self, request, object_id):
        """POST: a new run with the same prompt and plan; the message links to it."""
        try:
            run = self._transition_target(request, object_id)
        except _NotPost:
            return HttpResponseNotAllowed(["POST"])
        try:
            new = services.run_rerun(run=run, owner=run.owner)
        except (PlanError, services.QuotaExceeded) as error:
            self.message_user(request, f"Not re-run: {error.message}", messages.WARNING)
        else:
            link = format_html('Re-run as <a href="{}">run {}</a>.', self._change_url(new.id), new.id)
            self.message_user(request, link, messages.SUCCESS)
        return HttpResponseRedirect(self._change_url(run.id))

    def get_queryset(self, request):
        # Progress is succeeded of total, as on the live pages: failed and skipped are not done work.
        succeeded = Q(steps__status=StepStatus.SUCCEEDED)
        return super().get_queryset(request).annotate(steps_succeeded=Count("steps", filter=succeeded))

    def changelist_view(self, request, extra_context=None):
        # PostgreSQL refuses a NUL in any text parameter; Django's admin would
        # pass one from a filter straight to the query (a 500). Treat it as the
        # admin treats any invalid filter.
        if any("\x00" in value for _, values in request.GET.lists() for value in values):
            return HttpResponseRedirect(f"{request.path}?{ERROR_FLAG}=1")
        # Before the rows are read: the live list takes runs created after it as new.
        extra = {**(extra_context or {}), "drawn_at": timezone.now().isoformat()}
        return super().changelist_view(request, extra)

    def get_search_results(self, request, queryset, search_term):
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        try:
            run_id = uuid.UUID(search_term.strip())
        except ValueError:
            return results, may_have_duplicates
        return results | queryset.filter(pk=run_id), may_have_duplicates

    @admin.display(description="run", ordering="id")
    def short_id(self, run: Run) -> str:
        # Its first 8 characters, as on the pages: a full id wraps onto four lines at 1280 px.
        return format_html('<code title="{}">{}</code>', run.id, str(run.id)[:8])

    @admin.display(description="status", ordering="status")
    def live_status(self, run: Run) -> str:
        return format_html(
            '<span class="status status-{}" data-run-status="{}">{}</span>', run.status, run.id, run.status
        )

    @admin.display(description="progress")
    def progress(self, run: Run) -> str:
        done = f"{run.steps_succeeded}/{len(run.plan or [])}"  # annotated by get_queryset
        return format_html('<span data-run-progress="{}">{}</span>', run.id, done)

    @admin.display(description="created", ordering="created_at")
    def created(self, run: Run) -> str:
        return to_second(run.created_at)

    @admin.display(description="cancel requested")
    def cancel_requested(self, run: Run) -> str:
        return to_second(run.cancel_requested_at)

    @admin.display(description="duration")
    def duration(self, run: Run) -> str:
        if run.started_at is None:
            return "—"
        seconds = ((run.finished_at or timezone.now()) - run.started_at).total_seconds()
        return f"{seconds:.1f}s"

    def save_model(self, request, obj, form, change):
        if not change:
            run = services.run_create(
                owner=form.cleaned_data["owner"], steps=form.cleaned_data["plan"], prompt=obj.prompt
            )
            # The admin goes on with ``obj`` (redirect, log entry): make it the new run.
            obj.pk, obj.status, obj.created_at = run.pk, run.status, run.created_at

    def delete_model(self, request, obj):
        """The delete button: through the service, so the run's watchers are told and its worker stops."""
        services.run_delete(run_id=obj.pk)

    def delete_queryset(self, request, queryset):
        """The "delete selected" action: each run through the service, as one delete does."""
        for run_id in queryset.values_list("pk", flat=True):
            try:
                services.run_delete(run_id=run_id)
            except Run.DoesNotExist:
                pass  # deleted meanwhile (another operator): what was asked is done

    def save_related(self, request, form, formsets, change):
        """A run has nothing related to save here: its steps are the executor's."""

    @admin.action(description="Cancel selected runs")
    def cancel_runs(self, request, queryset):
        cancelled, refused = 0, []
        for run_id in queryset.values_list("pk", flat=True):
            try:
                services.run_cancel(run_id=run_id)
                cancelled += 1
            except services.TransitionError as error:
                refused.append(f"{run_id}: {error.message}")
        if cancelled:
            done = f"Cancelled (or asked to cancel) {cancelled} run(s)."
            self.message_user(request, done, messages.SUCCESS)
        for line in refused:
            self.message_user(request, line, messages.WARNING)

    @admin.action(description="Re-run selected runs (new runs, same plan)")
    def rerun_runs(self, request, queryset):
        created, refused = 0, []
        for run in queryset.select_related("owner"):
            try:
                services.run_rerun(run=run, owner=run.owner)
                created += 1
            except (PlanError, services.QuotaExceeded) as error:
                # The plan was valid once (a tool may have been removed since); its owner may be over a quota.
                refused.append(f"{run.id}: {error.message}")
        if created:
            self.message_user(request, f"Created {created} new run(s).", messages.SUCCESS)
        for line in refused:
            self.message_user(request, f"Not re-run: {line}", messages.WARNING)


class _NotPost(Exception):
    """A transition view was asked with GET: it changes state, so POST only."""
