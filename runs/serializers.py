"""JSON shapes of runs and steps: the API's, and the realtime snapshot's."""

from django.conf import settings
from rest_framework import serializers

from runs.models import Run, RunStatus, Step


class StepSerializer(serializers.ModelSerializer):
    class Meta:
        model = Step
        fields = [
            "index",
            "tool",
            "args",
            "status",
            "output",
            "error",
            "started_at",
            "finished_at",
            "attempts",
        ]
        read_only_fields = fields


class RunSerializer(serializers.ModelSerializer):
    """A run with its steps: GET /api/runs/<id>/ and the `connected` snapshot."""

    steps = StepSerializer(many=True, read_only=True)
    owner = serializers.CharField(source="owner.get_username", read_only=True)
    ws_url = serializers.SerializerMethodField()

    class Meta:
        model = Run
        fields = [
            "id",
            "owner",
            "status",
            "prompt",
            "plan",
            "output",
            "error",
            "created_at",
            "started_at",
            "finished_at",
            "seq",
            "steps",
            "ws_url",
        ]
        read_only_fields = fields

    def get_ws_url(self, run: Run) -> str:
        return f"/ws/runs/{run.id}/"


class RunSummarySerializer(RunSerializer):
    """A run in a list: no steps, their counts instead."""

    steps_total = serializers.SerializerMethodField()

    class Meta(RunSerializer.Meta):
        fields = [f for f in RunSerializer.Meta.fields if f != "steps"] + ["steps_total"]
        read_only_fields = fields

    def get_steps_total(self, run: Run) -> int:
        return len(run.plan or [])


class RunCreateSerializer(serializers.Serializer):
    """POST /api/runs/ body. The plan itself is checked by the tool registry."""

    prompt = serializers.CharField(required=False, allow_blank=True, default="", max_length=20_000)
    steps = serializers.JSONField(help_text="[{tool, args}, …]; see GET /api/tools/.")

    def validate_steps(self, value):
        # Shape and tool checks happen in runs.tools.validate_plan (via the
        # service); only the count is cheap to reject here.
        if isinstance(value, list) and len(value) > settings.RUNS_MAX_STEPS:
            raise serializers.ValidationError(
                f"a run has at most {settings.RUNS_MAX_STEPS} steps, got {len(value)}"
            )
        return value


class RunStatusFilterSerializer(serializers.Serializer):
    # An empty ?status= (a form's "any" option) means no filter.
    status = serializers.ChoiceField(choices=RunStatus.choices, required=False, allow_blank=True)


class ToolSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField()
    args = serializers.DictField()
    accepts_any_args = serializers.BooleanField()
