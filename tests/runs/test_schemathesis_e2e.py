"""schemathesis over /api/schema/ against a real Daphne, with a real token: every operation.

Checks: no 5xx, and every response conforms to the schema (status codes,
content type, body). Generated inputs: the schema's examples, its boundaries
(coverage phase) and hypothesis fuzzing.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import ROOT

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.e2e,
]

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def test_every_operation_answers_within_its_schema(daphne_process, token, tmp_path):
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{daphne_process.url}/api/schema/",
            "--header",
            f"Authorization: Token {token}",
            "--checks",
            CHECKS,
            "--max-examples",
            "30",
            "--seed",
            "11",
            "--workers",
            "1",
            "--request-timeout",
            "30",
            "--report-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    assert "Traceback" not in daphne_process.log()
