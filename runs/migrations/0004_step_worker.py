from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0003_run_dispatched_at"),
    ]

    operations = [
        migrations.AddField(
            model_name="step",
            name="worker",
            field=models.CharField(blank=True, default="", max_length=255),
        ),
    ]
