"""Time a sample of a finished module's mutants both ways: plain (the selection in its order,
every plugin) and focused (mutation/focus.py), and check they get the same verdict
(the tree is the working tree as it is now: tests written since the run may kill its survivors).

    python mutation/compare.py --out build/mutation realtime/reads/fast_snapshot.py [--sample 12]

Reads the module's session and focus map in --out (a `mutation/run.py` run of it),
applies each sampled mutant (`cosmic-ray apply`) to a tree copy of its own
(build/mutation-compare/tree), runs both test commands one after the other,
and restores the module. Prints one line per mutant and the totals. Use a
database of its own, as for mutation/run.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # mutation/run.py, beside this file


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("module")
    parser.add_argument("--out", type=Path, default=run.ROOT / "build" / "mutation")
    parser.add_argument("--sample", type=int, default=12, help="how many mutants (spread over the session)")
    args = parser.parse_args()
    out, slug = args.out.resolve(), run._slug(args.module)
    tests = run.TARGETS[args.module]
    dump = subprocess.run(
        [str(run.BIN / "cosmic-ray"), "dump", str(out / f"{slug}.sqlite")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    jobs = [json.loads(line) for line in filter(None, dump.split("\n"))]
    jobs = [(item, result) for item, result in jobs if result and result["worker_outcome"] == "normal"]
    step = max(1, len(jobs) // args.sample)
    sample = jobs[::step][: args.sample]

    compare = run.ROOT / "build" / "mutation-compare"
    run.copy_tree(compare / "tree")
    tree, module = compare / "tree", compare / "tree" / args.module
    pristine = module.read_text()
    env = {**os.environ, **run.ENV.get(args.module, {}), "MUTATION_FOCUS": str(out / f"{slug}.focus.json")}
    totals = {"plain": 0.0, "focused": 0.0}
    same = 0
    for item, result in sample:
        mutation = item["mutations"][0]
        subprocess.run(
            [
                str(run.BIN / "cosmic-ray"),
                "apply",
                args.module,
                mutation["operator_name"],
                str(mutation["occurrence"]),
            ],
            cwd=tree,
            check=True,
        )
        verdicts = {}
        for way, command in (
            ("plain", run.mutant_command(tests, plain=True)),
            ("focused", run.mutant_command(tests)),
        ):
            started = time.monotonic()
            code = subprocess.run(command, cwd=tree, env=env, capture_output=True).returncode
            totals[way] += time.monotonic() - started
            verdicts[way] = "survived" if code == 0 else "killed"
        module.write_text(pristine)
        same += verdicts["plain"] == verdicts["focused"]
        print(
            f"{mutation['start_pos'][0]:4} {mutation['operator_name'].removeprefix('core/'):40}"
            f" run: {result['test_outcome']:8} plain: {verdicts['plain']:8} focused: {verdicts['focused']}",
            flush=True,
        )
    shutil.copy2(out / f"{slug}.pristine.py", module)
    n = len(sample)
    each = {way: f"{seconds:.0f} s ({seconds / n:.1f} s each)" for way, seconds in totals.items()}
    print(f"{n} mutants, same verdict {same}/{n}; plain {each['plain']}, focused {each['focused']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
