"""The Django admin for runs: watch and steer. Every change goes through services."""

import uuid

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.main import ERROR_FLAG
from django.db.models import Count, Q
from django.http import HttpResponseRedirect
from django.utils import timezone

from runs import services
from runs.models import Run, Step, StepStatus
from runs.tools import PlanError, validate_plan


class StepInline(admin.TabularInline):
    model = Step
    extra = 0
    can_delete = False
    fields = ["index", "tool", "args", "status", "output", "error", "started_at", "finished_at"]
    readonly_fields = fields
    ordering = ["index"]

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        # Steps are the run's history: deleting one would break its event log.
        return False


class RunAddForm(forms.ModelForm):
    class Meta:
        model = Run
        fields = ["owner", "prompt", "plan"]

    def clean_plan(self):
        from django.conf import settings

        try:
            return validate_plan(self.cleaned_data["plan"], max_steps=settings.RUNS_MAX_STEPS)
        except PlanError as error:
            raise forms.ValidationError(error.message) from None


class RunChangeForm(forms.ModelForm):
    class Meta:
        model = Run
        fields = ["status"]

    def clean_status(self):
        status = self.cleaned_data["status"]
        if status != self.instance.status:
            try:
                services.check_operator_transition(self.instance.status, status)
            except services.TransitionError as error:
                raise forms.ValidationError(error.message) from None
        return status


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ["id", "status", "owner", "progress", "created_at", "duration"]
    list_filter = ["status", "owner"]
    search_fields = ["prompt"]
    list_select_related = ["owner"]
    date_hierarchy = "created_at"
    inlines = [StepInline]
    actions = ["cancel_runs", "rerun_runs"]
    readonly_change_fields = [
        "id",
        "owner",
        "prompt",
        "plan",
        "output",
        "error",
        "created_at",
        "started_at",
        "finished_at",
        "cancel_requested_at",
        "seq",
    ]

    def get_form(self, request, obj=None, change=False, **kwargs):
        kwargs["form"] = RunChangeForm if obj is not None else RunAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_change_fields if obj is not None else []

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["owner", "prompt", "plan"]
        return ["status", *self.readonly_change_fields]

    def get_queryset(self, request):
        done = Q(steps__status__in=[StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED])
        return super().get_queryset(request).annotate(steps_done=Count("steps", filter=done))

    def changelist_view(self, request, extra_context=None):
        # PostgreSQL refuses a NUL in any text parameter; Django's admin would
        # pass one from a filter straight to the query (a 500). Treat it as the
        # admin treats any invalid filter.
        if any("\x00" in value for _, values in request.GET.lists() for value in values):
            return HttpResponseRedirect(f"{request.path}?{ERROR_FLAG}=1")
        return super().changelist_view(request, extra_context)

    def get_search_results(self, request, queryset, search_term):
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        try:
            run_id = uuid.UUID(search_term.strip())
        except ValueError:
            return results, may_have_duplicates
        return results | queryset.filter(pk=run_id), may_have_duplicates

    @admin.display(description="progress")
    def progress(self, run: Run) -> str:
        return f"{getattr(run, 'steps_done', 0)}/{len(run.plan or [])}"

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
            obj._state.adding = False
            return
        if "status" in form.changed_data:
            requested = form.cleaned_data["status"]
            current = Run.objects.get(pk=obj.pk).status
            try:
                services.run_set_status(run_id=obj.pk, status=requested)
            except services.TransitionError as error:
                obj.status = current
                self.message_user(request, error.message, messages.ERROR)

    def save_related(self, request, form, formsets, change):
        """Steps are read-only here; nothing related to save."""

    def construct_change_message(self, request, form, formsets, add=False):
        # The step formsets are never saved (see save_related), so they have no
        # new/changed/deleted objects to report; reading them would raise.
        return super().construct_change_message(request, form, [], add)

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
            except PlanError as error:
                # The plan was valid once; a tool may have been removed or changed since.
                refused.append(f"{run.id}: {error.message}")
        if created:
            self.message_user(request, f"Created {created} new run(s).", messages.SUCCESS)
        for line in refused:
            self.message_user(request, f"Not re-run: {line}", messages.WARNING)
