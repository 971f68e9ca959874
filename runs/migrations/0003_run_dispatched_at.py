from django.db import migrations, models


def mark_open_runs_dispatched(apps, schema_editor):
    # Runs open before fair execution were all handed to the broker at creation.
    Run = apps.get_model("runs", "Run")
    Run.objects.filter(status__in=("queued", "processing")).update(dispatched_at=models.F("created_at"))


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0002_step_attempts"),
    ]

    operations = [
        migrations.AddField(
            model_name="run",
            name="dispatched_at",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.RunPython(mark_open_runs_dispatched, migrations.RunPython.noop),
    ]
