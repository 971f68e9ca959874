"""`make mutate`: cosmic-ray over the modules that hold the guarantees, each against its own tests.

For each module in TARGETS: a copy of the working tree (so a mutant on disk is
never seen by anything else running from the checkout), a cosmic-ray session
whose test command is that module's curated test selection (``pytest -x``: a
mutant dies at its first red test), the operators in EXCLUDED_OPERATORS
skipped, a baseline run (the unmutated module must pass its selection), then
every mutant. Writes build/mutation/<module>.txt (cr-report) and
build/mutation/summary.md (score per module, every survivor with its diff).
docs/testing.md says how to read them.

    python mutation/run.py                      # every module in TARGETS (hours)
    python mutation/run.py realtime/delivery/hub.py ...  # some modules
    python mutation/run.py --list               # the modules and their tests
    python mutation/run.py --sample 0.3 --seed 1 runs/admin.py   # a seeded 30 % of its mutants

Use a database of its own (DATABASE_URL=.../quikday_mutate): the test runs
reuse their test database (--reuse-db) between mutants.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import coverage
from cosmic_ray.work_db import use_db
from cosmic_ray.work_item import WorkerOutcome, WorkResult

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

# module → the pytest arguments whose tests must catch a change to it: a curated,
# fast selection (seconds, not minutes; one layer/mode where the module does not
# depend on them), in the order worth running (the guarantees first).
# Selections that need one channel layer / one mode only (tests/realtime/conftest.py).
ONE_LAYER = {"QUIKDAY_TEST_LAYERS": "pubsub"}
ONE_LAYER_PUSH = {**ONE_LAYER, "QUIKDAY_TEST_MODES": "push"}
ENV: dict[str, dict[str, str]] = {
    "realtime/events/log.py": ONE_LAYER_PUSH,
    "realtime/signals.py": ONE_LAYER_PUSH,
    "realtime/protocol/frames.py": ONE_LAYER_PUSH,
    "realtime/sockets/run.py": ONE_LAYER,
    "realtime/sockets/stream.py": ONE_LAYER_PUSH,
    "realtime/access/auth.py": ONE_LAYER_PUSH,
    "realtime/reads/fast_snapshot.py": ONE_LAYER_PUSH,
    "realtime/protocol/client_frames.py": ONE_LAYER_PUSH,
    "realtime/sockets/socket.py": ONE_LAYER_PUSH,
    "realtime/protocol/close_codes.py": ONE_LAYER_PUSH,
    "realtime/reads/connect_state.py": ONE_LAYER_PUSH,
    "realtime/reads/selectors.py": ONE_LAYER_PUSH,
    "realtime/sockets/__init__.py": ONE_LAYER,
    "realtime/events/shards.py": ONE_LAYER,
    "realtime/http/events.py": ONE_LAYER_PUSH,
    "realtime/protocol/params.py": ONE_LAYER_PUSH,
    "realtime/runlist/list_poller.py": ONE_LAYER,
    "realtime/delivery/per_loop.py": ONE_LAYER_PUSH,
    "realtime/delivery/access_watch.py": ONE_LAYER_PUSH,
}
TARGETS: dict[str, list[str]] = {
    "runs/services.py": [
        "tests/runs/test_services.py",
        "tests/runs/test_services_atomic.py",
        "tests/runs/test_redelivery.py",
        "tests/runs/test_executor.py",
        "tests/runs/test_reaper.py",
        "tests/runs/test_takeover.py",  # step_retry's attempts
        "tests/runs/test_quotas.py",
        "tests/runs/test_fairness.py",
        "tests/runs/test_input_limits.py",  # the step cap on the service itself
        "tests/web/test_api_token_page.py",  # the token writers
    ],
    "runs/executor.py": [
        "tests/runs/test_executor.py",
        "tests/runs/test_redelivery.py",
        "tests/runs/test_takeover.py",  # a resumed run, its step's attempts
    ],
    "realtime/events/log.py": [
        "tests/realtime/sockets/test_guarantees.py",
        "tests/realtime/test_signals.py",
        "tests/realtime/events/test_retention.py",
        "tests/scenarios/test_race.py",
        "tests/realtime/events/test_log.py",
    ],
    "realtime/signals.py": [
        "tests/realtime/test_signals.py",
        "tests/realtime/events/test_log.py",
    ],
    "realtime/delivery/hub.py": [
        "tests/realtime/delivery/test_hub_races.py",
        "tests/realtime/delivery/test_hub.py",
        "tests/realtime/sockets/test_guarantees.py",
        "tests/scenarios/test_race.py",
    ],
    "realtime/delivery/poller.py": [
        "tests/realtime/sockets/test_guarantees.py",
        "tests/realtime/delivery/test_poller.py",
        "tests/realtime/delivery/test_poller_grid.py",
        "tests/scenarios/test_modes.py",
    ],
    "realtime/sockets/stream.py": [
        "tests/realtime/sockets/test_stream.py",
        "tests/realtime/delivery/test_failover.py",
        "tests/realtime/sockets/test_hybrid.py",
        "tests/realtime/delivery/test_poller.py",
    ],
    "realtime/delivery/front_door.py": [
        "tests/realtime/delivery/test_hub.py",
        "tests/realtime/delivery/test_failover.py",
        "tests/realtime/delivery/test_access_watch.py",
    ],
    "realtime/events/retention.py": [
        "tests/realtime/events/test_retention.py",
        "tests/realtime/sockets/test_guarantees.py",
    ],
    "realtime/sockets/run.py": [
        "tests/realtime/sockets/test_guarantees.py",
        "tests/scenarios/test_race.py",
        "tests/scenarios/test_resume.py",
        "tests/realtime/sockets/test_consumer.py",
        "tests/realtime/delivery/test_hub.py",
        "tests/realtime/delivery/test_failover.py",
        "tests/scenarios/test_modes.py",
    ],
    "realtime/events/publisher.py": [
        "tests/realtime/events/test_publisher.py",
        "tests/scenarios/test_publish.py",
        "tests/realtime/sockets/test_guarantees.py",
    ],
    "realtime/protocol/frames.py": [
        "tests/realtime/protocol/test_frames.py",
        "tests/realtime/events/test_log.py",
        "tests/realtime/delivery/test_poller.py",
    ],
    "realtime/delivery/failover.py": [
        "tests/realtime/delivery/test_failover.py",
        "tests/realtime/sockets/test_hybrid.py",
    ],
    "realtime/reads/selectors.py": [
        "tests/realtime/reads/test_selectors.py",
        "tests/scenarios/test_resume.py",
        "tests/realtime/delivery/test_poller.py",
        "tests/realtime/delivery/test_access_watch.py",  # revoked_credentials
    ],
    "realtime/reads/threads.py": ["tests/realtime/reads/test_threads.py"],
    "realtime/access/auth.py": [
        "tests/realtime/access/test_auth.py",
        "tests/realtime/sockets/test_consumer.py",
    ],
    "realtime/routing.py": ["tests/realtime/delivery/test_poller.py", "tests/scenarios/test_modes.py"],
    # GET /api/runs/<id>/events/ is tested with resume over the socket (the same frames).
    "realtime/http/events.py": [
        "tests/realtime/protocol/test_params.py",
        "tests/scenarios/test_resume.py",
        "tests/runs/test_api.py",
    ],
    # What a client may send: run ids and since, text PostgreSQL can store, the new-run form's bounds.
    "realtime/protocol/params.py": ["tests/realtime/protocol/test_params.py"],
    "runs/validation.py": [
        "tests/runs/test_input_limits.py",
        "tests/runs/test_tools.py",
        "tests/web/test_form_limits.py",
        "tests/runs/test_admin.py",
    ],
    # What users and staff touch: the API, the pages, the admin; every entry point's limits.
    "runs/api/views.py": [
        "tests/runs/test_api.py",
        "tests/runs/test_api_docs.py",  # the schema's words, statuses and example
        "tests/runs/test_input_limits.py",
    ],
    "runs/serializers.py": [
        "tests/runs/test_api.py",
        "tests/runs/test_api_docs.py",
        "tests/runs/test_input_limits.py",
        "tests/realtime/reads/test_selectors.py",  # the fast snapshot equals RunSerializer's
    ],
    "runs/api/errors.py": [
        "tests/test_middleware.py",  # a lost database: 503
        "tests/runs/test_api.py",
        "tests/runs/test_input_limits.py",
        "tests/runs/test_quotas.py",
    ],
    "runs/api/parsers.py": ["tests/runs/test_input_limits.py", "tests/runs/test_api.py"],
    "web/forms.py": ["tests/web/test_form_limits.py", "tests/web/test_pages.py"],
    "web/views.py": [
        "tests/web/test_pages.py",
        "tests/web/test_ui_pages.py",
        "tests/web/test_form_limits.py",
        "tests/web/test_api_token_page.py",
        "tests/runs/test_quotas.py",  # the form's quota message
    ],
    "web/login_throttle.py": ["tests/web/test_login_throttle.py"],
    "runs/admin.py": [
        "tests/runs/test_admin.py",
        "tests/runs/test_input_limits.py",
        "tests/runs/test_quotas.py",
    ],
    "runs/takeover.py": ["tests/runs/test_takeover.py"],
    "runs/dispatch.py": [
        "tests/runs/test_dispatch_retry.py",
        "tests/runs/test_services.py",
        "tests/runs/test_takeover.py",
    ],
    # The HTTP edge (chunked bodies, 308 for a slashless write, 503 for a lost database) and
    # the settings' start-up checks (settings.py: only its checks, SCOPE below).
    "quikday/middleware.py": ["tests/test_middleware.py", "tests/test_cors.py", "tests/runs/test_api_e2e.py"],
    "quikday/env.py": ["tests/test_env.py", "tests/test_cors.py", "tests/test_dotenv.py"],
    "quikday/settings.py": [
        "tests/test_cors.py",
        "tests/test_dotenv.py",
        "tests/test_db_connections.py::test_a_pool_no_larger_than_the_read_threads_stops_start_up",
        "tests/test_paas_files.py::test_heroku_redis_tls_urls_accept_its_self_signed_certificate",
    ],
    "server/daphne_tuning.py": ["tests/server/test_daphne_tuning.py"],
    # Newer modules: the fast connect-time snapshot, the list stream and its tickets.
    "realtime/reads/fast_snapshot.py": ["tests/realtime/reads/test_selectors.py"],
    "realtime/access/tickets.py": ["tests/realtime/access/test_tickets.py"],
    "realtime/reads/summaries.py": [
        "tests/realtime/reads/test_summaries.py",
        "tests/realtime/runlist/test_user_stream.py",
        "tests/web/test_pages.py",
    ],
    "realtime/runlist/list_feed.py": ["tests/realtime/runlist/test_user_stream.py"],
    "realtime/http/tickets.py": [
        "tests/realtime/access/test_tickets.py",
        "tests/web/test_pages.py",
        "tests/runs/test_api.py",
    ],
    "realtime/runlist/user_stream.py": [
        "tests/realtime/runlist/test_user_stream.py",
        "tests/realtime/runlist/test_list_poller.py",
    ],
    # The run-list re-read (one statement per process per tick), the access watch (revoked
    # credentials close 4401; its Daphne test is the one a process outside coverage runs),
    # and the per-loop ticker both pollers and the watch run on.
    "realtime/runlist/list_poller.py": [
        "tests/realtime/runlist/test_list_poller.py",
        "tests/realtime/runlist/test_user_stream.py",
    ],
    "realtime/delivery/access_watch.py": [
        "tests/realtime/delivery/test_access_watch.py",
        "tests/realtime/sockets/test_consumer.py::test_a_session_sockets_credentials_still_hold_at_its_recheck",
        "tests/scenarios/test_protocol_daphne.py::test_revoked_credentials_close_an_open_socket_4401",
    ],
    "realtime/delivery/per_loop.py": [
        "tests/realtime/delivery/test_poller_grid.py",
        "tests/realtime/delivery/test_poller.py",
        "tests/realtime/delivery/test_access_watch.py",
        "tests/realtime/runlist/test_list_poller.py",
    ],
    # What every endpoint shares: the client frames' judge, the socket base, the close codes.
    "realtime/protocol/client_frames.py": [
        "tests/realtime/protocol/test_client_frames.py",
        "tests/realtime/sockets/test_consumer.py",
    ],
    "realtime/sockets/socket.py": [
        "tests/realtime/sockets/test_consumer.py",
        "tests/realtime/sockets/test_guarantees.py",
        "tests/realtime/protocol/test_client_frames.py",
        "tests/realtime/sockets/test_channels_pin.py",
        "tests/scenarios/test_protocol_daphne.py",
        "tests/realtime/delivery/test_access_watch.py",  # a closed socket leaves the access watch
    ],
    "realtime/protocol/close_codes.py": [
        "tests/realtime/sockets/test_consumer.py",
        "tests/realtime/protocol/test_client_frames.py",
    ],
    # The layer sharded over several Redis servers (two redis-servers of the test's own and a Daphne).
    "realtime/events/shards.py": [
        "tests/realtime/delivery/test_hub.py",
        "tests/realtime/delivery/test_hub_races.py",
        "tests/realtime/events/test_shards.py",
    ],
    # The rest of realtime/ (no guarantee of their own: wiring, data shapes, log filtering).
    "realtime/reads/connect_state.py": [
        "tests/realtime/sockets/test_consumer.py",
        "tests/realtime/reads/test_selectors.py",
    ],
    "server/outage_logging.py": ["tests/server/test_outage_logging.py"],
    "realtime/tasks.py": ["tests/realtime/events/test_retention.py"],
    "realtime/management/commands/prune_run_events.py": ["tests/realtime/events/test_retention.py"],
    "realtime/models.py": [
        "tests/test_migrations.py",
        "tests/realtime/events/test_log.py",
        "tests/realtime/access/test_tickets.py",
    ],
    "realtime/apps.py": ["tests/realtime/test_signals.py"],
    "realtime/sockets/__init__.py": ["tests/scenarios/test_modes.py"],
}

# Skipped operators, and why (docs/testing.md repeats this):
# - every binary-operator swap but the four arithmetic ones: `X | None` in
#   annotations (never evaluated here: `from __future__ import annotations`)
#   would otherwise give ten equivalent mutants per annotation;
# - comparison swaps other than negation and the off-by-one boundary (==/!=,
#   </<=, >/>=, is/is not): the others mostly repeat what these find.
EXCLUDED_OPERATORS = [
    r"core/ReplaceBinaryOperator_(?!Add_Sub$|Sub_Add$|Mul_Div$|Div_Mul$).*",
    r"core/ReplaceComparisonOperator_(?!Eq_NotEq$|NotEq_Eq$|Lt_LtE$|LtE_Lt$|Gt_GtE$|GtE_Gt$|Is_IsNot$|IsNot_Is$).*",
    r"core/VariableReplacer",
    r"core/VariableInserter",
]


def _start_up_checks(source: str) -> set[int]:
    """settings.py's own code, not its values: each `if` that raises, and each function."""
    lines: set[int] = set()
    for node in ast.parse(source).body:
        raises = isinstance(node, ast.If) and any(isinstance(n, ast.Raise) for n in ast.walk(node))
        if raises or isinstance(node, ast.FunctionDef):
            lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return lines


# Modules mutated in part only: the lines worth a mutant (the rest of settings.py is values,
# which a mutant changes to another valid value no test should pin).
SCOPE = {"quikday/settings.py": _start_up_checks}

PER_MUTANT_TIMEOUT = 240.0  # a mutant that makes its tests hang counts as killed (timeout)


def copy_tree(dest: Path) -> None:
    """The working tree as it is (tracked and new files, not ignored ones)."""
    if dest.exists():
        shutil.rmtree(dest)
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file() and not name.startswith("build/"):
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


# Plugins no selection needs, not loaded by the mutants' runs: about 1.5 s of each
# pytest start-up (schemathesis and hypothesis' imports); hypothesis' plugin stays
# for a selection with a file that uses hypothesis. xdist stays: pytest.ini's addopts
# give `--dist`, an option only xdist knows (without it every baseline fails).
UNUSED_PLUGINS = ["schemathesis", "pytest_cov"]


def pytest_command(tests: list[str], *options: str) -> list[str]:
    return [
        str(BIN / "python"),
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--reuse-db",
        *options,
        *tests,
    ]


# A test hung by a mutant fails after this long (not the suite's 180 s). More where a
# selection's slowest tests (Daphne's slow-client resync) come near it on a loaded machine:
# consumers/socket.py's baseline failed once at 30 s under a load average of 10.
TEST_TIMEOUT: dict[str, int] = {"realtime/sockets/socket.py": 90}


def mutant_command(tests: list[str], plain: bool = False, timeout: int = 30) -> list[str]:
    if plain:  # as before the focus: every plugin, the selection in its own order
        return pytest_command(tests, "-x", "-o", f"timeout={timeout}")
    unused = list(UNUSED_PLUGINS)
    if not any("hypothesis" in (ROOT / test.split("::")[0]).read_text() for test in tests):
        unused.append("hypothesispytest")
    return pytest_command(
        tests,
        "-x",
        *(option for plugin in unused for option in ("-p", f"no:{plugin}")),
        "-p",
        "mutation.focus",  # the tests that reach the mutated lines first (mutation/focus.py)
        "-o",
        f"timeout={timeout}",
    )


def config_text(module: str, tests: list[str], plain: bool = False) -> str:
    excluded = ", ".join(json.dumps(pattern) for pattern in EXCLUDED_OPERATORS)
    command = mutant_command(tests, plain, TEST_TIMEOUT.get(module, 30))
    return (
        "[cosmic-ray]\n"
        f"module-path = {json.dumps(module)}\n"
        f"timeout = {PER_MUTANT_TIMEOUT}\n"
        "excluded-modules = []\n"
        f"test-command = {json.dumps(shlex.join(command))}\n\n"
        "[cosmic-ray.distributor]\n"
        'name = "local"\n\n'
        "[cosmic-ray.filters.operators-filter]\n"
        f"exclude-operators = [{excluded}]\n"
    )


def _scopes(source: str) -> list[tuple[int, int]]:
    """The line span of every function and class of a module (decorators included)."""
    spans = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            spans.append((first, node.end_lineno or node.lineno))
    return spans


def focus_map(module: str, tree: Path, coverage_file: Path) -> dict[str, list[str]]:
    """Line → the tests that execute it, from the coverage run's per-test contexts.

    A line no test executes (a signature, a decorator, a class attribute: run
    at import) stands for its innermost function or class: the tests that run
    any line of it. A module-level line stays without tests: its mutants run
    the selection in its own order.
    """
    data = coverage.CoverageData(basename=str(coverage_file))
    data.read()
    by_line: dict[int, set[str]] = {}
    for line, contexts in (data.contexts_by_lineno(str(tree / module)) or {}).items():
        tests = {context.rpartition("|")[0] for context in contexts if "|" in context}
        if tests:
            by_line[line] = tests
    spans = sorted(_scopes((tree / module).read_text()), key=lambda span: span[1] - span[0])
    lines = dict(by_line)
    for line in range(1, len((tree / module).read_text().splitlines()) + 1):
        if line in lines:
            continue
        for first, last in spans:  # innermost first
            if first <= line <= last:
                lines[line] = {test for n in range(first, last + 1) for test in by_line.get(n, ())}
                break
    return {str(line): sorted(tests) for line, tests in lines.items() if tests}


def cover(module: str, tests: list[str], out: Path, env: dict[str, str]) -> Path:
    """Run the selection once under coverage; write the module's focus map for mutation/focus.py."""
    slug, tree = _slug(module), out / "tree"
    rc, data = out / f"{slug}.coveragerc", out / f"{slug}.coverage"
    rc.write_text(f"[run]\ninclude = {tree / module}\n")
    data.unlink(missing_ok=True)
    subprocess.run(
        pytest_command(
            tests, "--cov", f"--cov-config={rc}", "--cov-context=test", "--cov-report=", "-o", "timeout=90"
        ),
        cwd=tree,
        env={**env, "COVERAGE_FILE": str(data)},
        capture_output=True,
    )
    pristine = out / f"{slug}.pristine.py"
    shutil.copy2(tree / module, pristine)
    path = out / f"{slug}.focus.json"
    lines = focus_map(module, tree, data) if data.exists() else {}
    path.write_text(json.dumps({"module": module, "pristine": str(pristine), "lines": lines}))
    return path


def _slug(module: str) -> str:
    return module.replace("/", ".").removesuffix(".py")


def _pending(session: Path) -> list:
    with use_db(str(session)) as db:
        return sorted(db.pending_work_items, key=lambda item: item.job_id)


def skip_jobs(session: Path, job_ids: list[str], why: str) -> None:
    with use_db(str(session)) as db:
        for job_id in job_ids:
            db.set_result(job_id, WorkResult(output=why, worker_outcome=WorkerOutcome.SKIPPED))


def out_of_scope(session: Path, lines: set[int]) -> list[str]:
    return [item.job_id for item in _pending(session) if item.mutations[0].start_pos[0] not in lines]


NOT_SAMPLED = "Not in the sample"


def unsampled(session: Path, fraction: float, seed: int) -> list[str]:
    """All but a seeded random FRACTION of the pending mutants (at least one)."""
    jobs = [item.job_id for item in _pending(session)]
    keep = set(random.Random(seed).sample(jobs, max(1, round(fraction * len(jobs))) if jobs else 0))
    return [job for job in jobs if job not in keep]


def run_module(
    module: str, tests: list[str], out: Path, plain: bool = False, sample: float = 0.0, seed: int = 0
) -> dict:
    slug = _slug(module)
    tree = out / "tree"
    config, session = out / f"{slug}.toml", out / f"{slug}.sqlite"
    config.write_text(config_text(module, tests, plain))
    session.unlink(missing_ok=True)
    started = time.monotonic()

    env = {**os.environ, **ENV.get(module, {})}
    if not plain:
        env["MUTATION_FOCUS"] = str(cover(module, tests, out, env))

    def cr(*args: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run([*args], cwd=tree, text=True, env=env, **kwargs)

    cr(str(BIN / "cosmic-ray"), "init", str(config), str(session), check=True)
    cr(str(BIN / "cr-filter-operators"), str(session), str(config), check=True)
    if module in SCOPE:
        skip_jobs(session, out_of_scope(session, SCOPE[module]((tree / module).read_text())), "Out of scope")
    if sample:
        skip_jobs(session, unsampled(session, sample, seed), NOT_SAMPLED)
    baseline = cr(str(BIN / "cosmic-ray"), "baseline", str(config), capture_output=True)
    if baseline.returncode != 0:
        (out / f"{slug}.txt").write_text(
            "BASELINE FAILED: the unmutated module fails its tests\n" + baseline.stdout
        )
        return {"module": module, "baseline": "failed"}
    cr(str(BIN / "cosmic-ray"), "exec", str(config), str(session), check=True)
    report = cr(str(BIN / "cr-report"), str(session), capture_output=True).stdout
    (out / f"{slug}.txt").write_text(report)
    return summarise(module, session, time.monotonic() - started)


def summarise(module: str, session: Path, seconds: float) -> dict:
    dump = subprocess.run(
        [str(BIN / "cosmic-ray"), "dump", str(session)], capture_output=True, text=True, check=True
    ).stdout
    counts = {
        "killed": 0,
        "survived": 0,
        "incompetent": 0,
        "skipped": 0,
        "not sampled": 0,
        "timeout": 0,
        "pending": 0,
    }
    survivors = []
    for line in filter(None, dump.split("\n")):
        item, result = json.loads(line)
        if result is None:
            counts["pending"] += 1  # not run yet (an interrupted run)
            continue
        if result["worker_outcome"] == "skipped":
            counts["not sampled" if result["output"] == NOT_SAMPLED else "skipped"] += 1
            continue
        if result["worker_outcome"] == "abnormal":
            counts["timeout"] += 1  # killed: the tests did not finish
            continue
        outcome = result["test_outcome"]
        counts[outcome] += 1
        if outcome == "survived":
            mutation = item["mutations"][0]
            survivors.append(
                {
                    "where": f"{mutation['module_path']}:{mutation['start_pos'][0]}",
                    "operator": mutation["operator_name"].removeprefix("core/"),
                    "diff": "\n".join(
                        ln
                        for ln in result["diff"].split("\n")
                        if ln.startswith(("+", "-")) and ln[:3] not in ("+++", "---")
                    ),
                }
            )
    return {"module": module, "seconds": round(seconds), **counts, "survivors": survivors}


def write_summary(results: list[dict], out: Path) -> None:
    lines = [
        "# Mutation run",
        "",
        "| module | mutants run | killed | timeout | survived | not run yet | not sampled | score |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.get("baseline") == "failed":
            lines.append(f"| {r['module']} | baseline failed | | | | | | |")
            continue
        run = r["killed"] + r["timeout"] + r["survived"]
        score = f"{100 * (r['killed'] + r['timeout']) / run:.0f} %" if run else "-"
        if r["not sampled"] and run:  # a sample's score estimates the module's
            score = f"~{score} (sample of {run + r['pending']} of {run + r['pending'] + r['not sampled']})"
        counts = f"{r['killed']} | {r['timeout']} | {r['survived']} | {r['pending']} | {r['not sampled']}"
        lines.append(f"| {r['module']} | {run} | {counts} | {score} |")
    lines += ["", "## Survivors", ""]
    for r in results:
        for s in r.get("survivors", []):
            lines += [f"- `{s['where']}` {s['operator']}", "", "```diff", s["diff"], "```", ""]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(json.dumps(results, indent=1))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("modules", nargs="*", help="modules to mutate (default: all of TARGETS)")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "mutation")
    parser.add_argument("--list", action="store_true", help="print the modules and their tests, and stop")
    parser.add_argument(
        "--plain",
        action="store_true",
        help="no coverage run, every plugin, each selection in its own order (to compare speeds)",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="only rewrite summary.md from the sessions in --out (also partial ones)",
    )
    parser.add_argument(
        "--sample",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="run a seeded random FRACTION (0-1) of each module's mutants; the score is then an estimate",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="the sample's seed (the same seed, the same mutants)"
    )
    args = parser.parse_args()
    if not 0.0 <= args.sample <= 1.0:
        parser.error("--sample is a fraction between 0 and 1")
    args.out = args.out.resolve()  # cosmic-ray runs in the tree copy: a relative --out would not be found
    if args.list:
        for module, tests in TARGETS.items():
            env = " ".join(f"{k}={v}" for k, v in ENV.get(module, {}).items())
            print(module, env, " ".join(tests))
        return 0
    if args.report:
        modules = [m for m in TARGETS if (args.out / f"{_slug(m)}.sqlite").exists()]
        write_summary([summarise(m, args.out / f"{_slug(m)}.sqlite", 0) for m in modules], args.out)
        print((args.out / "summary.md").read_text())
        return 0
    unknown = [m for m in args.modules if m not in TARGETS]
    if unknown:
        parser.error(f"not in TARGETS: {', '.join(unknown)}")
    args.out.mkdir(parents=True, exist_ok=True)
    copy_tree(args.out / "tree")
    results = []
    for module in args.modules or list(TARGETS):
        print(f"== {module}", flush=True)
        results.append(run_module(module, TARGETS[module], args.out, args.plain, args.sample, args.seed))
        write_summary(results, args.out)  # after each module: a long run can be read as it goes
    print((args.out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
