"""JSON shapes of runs and steps: the API's, and the realtime snapshot's."""

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from runs.models import Run, RunStatus, Step
from runs.validation import PROMPT_MAX_LENGTH


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
            "worker",
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


# A valid plan: what the API docs' "Try it out" starts from, so that sending it as it is works.
EXAMPLE_PLAN = [
    {"tool": "echo", "args": {"text": "hello"}},
    {"tool": "wait", "args": {"seconds": 1}},
    {"tool": "echo", "args": {"text": "done"}},
]


@extend_schema_field(
    {
        "type": "array",
        "description": "The steps, in order: each a tool and its arguments; GET /api/tools/ lists them.",
        "items": {
            "type": "object",
            "properties": {
                "tool": {"type": "string", "description": "A tool's name, e.g. echo, wait or fail."},
                "args": {
                    "type": "object",
                    "additionalProperties": True,
                    "description": "The tool's arguments.",
                },
            },
            "required": ["tool"],
        },
        "example": EXAMPLE_PLAN,
    }
)
class PlanField(serializers.JSONField):
    """Any JSON here (runs.tools.validate_plan judges it); documented as the plan it must be."""


class RunCreateSerializer(serializers.Serializer):
    """POST /api/runs/ body. The plan itself is checked by the tool registry."""

    prompt = serializers.CharField(required=False, allow_blank=True, default="", max_length=PROMPT_MAX_LENGTH)
    steps = PlanField(help_text="[{tool, args}, …]; see GET /api/tools/.")

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
