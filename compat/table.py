"""Prints compat/run.sh's table from the check scripts' `@@CHECK {json}` lines.

    python3 table.py WORK_DIR ONLY RUNTIME...

reads WORK_DIR/RUNTIME/{js,py}.out and .rc (the script's exit status; only one of the two
SDKs when ONLY is `js` or `py`) and exits 1 when a check failed, a script reported nothing or
stopped before its last line (`@@DONE`: it crashed, or its timeout killed it) or exited
non-zero without a failed check, else 0.
"""

import json
import os
import sys


def main():
    work, only, runtimes = sys.argv[1], sys.argv[2], sys.argv[3:]
    rows, problems = [], []
    for rt in runtimes:
        for sdk in ("js", "py"):
            if only and sdk != only:
                continue
            base = os.path.join(work, rt, sdk)
            got, done = [], False
            if os.path.exists(base + ".out"):
                with open(base + ".out", errors="replace") as f:
                    for line in f:
                        if line.startswith("@@CHECK "):
                            got.append(dict(json.loads(line[len("@@CHECK "):]), runtime=rt))
                        done = done or line.startswith("@@DONE")
            rc = open(base + ".rc").read().strip() if os.path.exists(base + ".rc") else "?"
            if got and not done:
                problems.append(f"{rt}/{sdk}: the check script stopped (exit status {rc}; 124: "
                                f"timed out) after {len(got)} checks, the last {got[-1]['check']}")
            elif got and rc != "0" and not any(r["ok"] is False for r in got):
                problems.append(f"{rt}/{sdk}: the check script exited {rc} with no failed check")
            if not got:
                err = ""
                if os.path.exists(base + ".err"):
                    with open(base + ".err", errors="replace") as f:
                        err = f.read()[-3000:]
                problems.append(f"{rt}/{sdk}: the check script reported nothing; stderr ends:\n{err}")
            rows += got

    width = max([len(r["check"]) for r in rows] + [5])
    print(f"{'runtime':<8} {'sdk':<4} {'check':<{width}} {'result':<6} {'ms':>8}  detail")
    for r in rows:
        result = {True: "pass", False: "FAIL", None: "skip"}[r["ok"]]
        detail = r["detail"] if len(r["detail"]) <= 300 else r["detail"][:300] + "..."
        print(f"{r['runtime']:<8} {r['sdk']:<4} {r['check']:<{width}} {result:<6} "
              f"{r['ms']:>8.1f}  {detail}")
    failed = [r for r in rows if r["ok"] is False]
    print(f"\n{sum(r['ok'] is True for r in rows)} passed, {len(failed)} failed, "
          f"{sum(r['ok'] is None for r in rows)} skipped")
    for r in failed:
        print(f"FAILED: {r['runtime']} {r['sdk']} {r['check']}: {r['detail']}")
    for p in problems:
        print(p)
    sys.exit(1 if failed or problems else 0)


main()
