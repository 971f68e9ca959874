"""The idle-sockets workload spread over several load-client processes.

One process's hard RLIMIT_NOFILE bounds the sockets it holds, so the bench
spreads them over as many load clients as that takes. `--client-sockets`
lowers the cap, so a smoke run shows the split with twenty sockets.
"""

import json

import pytest

from bench.scenarios import SMOKE, socket_shares
from tests.bench.test_bench_quick import run_quick_bench


@pytest.mark.parametrize(
    ("per_run", "runs", "most"),
    [(200, 100, 19_900), (200, 100, 100_000), (10, 10, 40), (7, 3, 5), (1, 50, 10)],
)
def test_socket_shares_hold_every_socket_and_no_client_more_than_it_may(per_run, runs, most):
    shares = socket_shares(per_run, runs, most)
    assert sum(shares) == per_run
    assert all(share >= 1 for share in shares)
    assert max(shares) * runs <= max(most, runs)  # a client holds at least one socket per run
    assert len(shares) == 1 or (len(shares) - 1) * (most // runs) < per_run  # no client more than it takes


@pytest.mark.e2e
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.timeout(300)
def test_only_connections_spreads_the_sockets_over_load_clients(tmp_path):
    cap = 8  # SMOKE holds 20 sockets on 2 runs: 3 load clients of 4, 3 and 3 per run
    run_quick_bench(tmp_path, "--only", "connections", "--modes", "push-pubsub", "--client-sockets", str(cap))
    (written,) = tmp_path.glob("*-quick-connections.json")
    results = json.loads(written.read_text())
    assert results["only"] == ["connections"]
    (figures,) = results["modes"]["push-pubsub"]["repeats"]
    assert figures["load_clients"] == 3
    assert figures["hold_tried"] == figures["held"] == SMOKE.hold
    assert figures["kb_per_conn"] is not None and figures["connects_per_s"] > 0
    # Smoke-sized pauses read the statistics before PostgreSQL reports them: a number, not a figure.
    assert figures["db_tx_per_connect"] >= 0
    assert "l1_p50" not in figures  # only the connections workload ran
    assert results["publish"] == {} and results["throughput"] == {} and "write_cost" not in results
    assert len(list((tmp_path / "logs").glob("*-client*.log"))) == 3  # the run's own client and two more
