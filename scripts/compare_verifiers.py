"""Scores a run's real outputs with HF math-verify beside the verdicts our math verifier gave in
training, and lists every disagreement.

Usage: .venv/bin/python scripts/compare_verifiers.py OUT.md DUMP_DIR_OR_FILE...
The inputs are generation dumps (`trainer.validation_data_dir` / `trainer.rollout_data_dir`:
one JSON line per response with `output`, `gts`, `correct`, `detail`). math-verify parses the
gold answer as `$gold$` and the response as it is (its default extraction), as in
scripts/math_verify_corpus.py. Writes a markdown table of agreement and one row per distinct
(response, gold) pair on which the two disagree.
"""
import glob
import json
import os
import sys

from math_verify import parse, verify


def judge(gold, response):
    try:
        return bool(verify(parse("$" + gold + "$"), parse(response)))
    except Exception:
        return False


def rows(paths):
    for p in paths:
        files = sorted(glob.glob(os.path.join(p, "*.jsonl"))) if os.path.isdir(p) else [p]
        for f in files:
            for line in open(f):
                if line.strip():
                    r = json.loads(line)
                    r["_file"] = f
                    yield r


def cell(s, n=90):
    s = s.replace("\n", "\\n").replace("|", "\\|")
    return s if len(s) <= n else s[: n - 1] + "…"


def main():
    out, paths = sys.argv[1], sys.argv[2:]
    counts = {(True, True): 0, (True, False): 0, (False, True): 0, (False, False): 0}
    seen, disagreements = set(), []
    total = 0
    for r in rows(paths):
        gold = r["gts"] if isinstance(r["gts"], str) else json.dumps(r["gts"])
        ours = bool(r["correct"])
        theirs = judge(gold, r["output"])
        counts[(ours, theirs)] += 1
        total += 1
        key = (r["output"], gold)
        if ours != theirs and key not in seen:
            seen.add(key)
            disagreements.append((ours, theirs, gold, r["output"], r.get("detail", ""), r.get("mode", "")))
    lines = [
        "| | math-verify right | math-verify wrong |",
        "|---|---|---|",
        f"| ours right | {counts[(True, True)]} | {counts[(True, False)]} |",
        f"| ours wrong | {counts[(False, True)]} | {counts[(False, False)]} |",
        "",
        f"{total} responses; {len(disagreements)} distinct (response, gold) pairs judged differently.",
        "",
    ]
    if disagreements:
        lines += ["| ours | math-verify | gold | response | our detail | mode |", "|---|---|---|---|---|---|"]
        for ours, theirs, gold, resp, detail, mode in disagreements:
            lines.append(
                f"| {'right' if ours else 'wrong'} | {'right' if theirs else 'wrong'} | {cell(gold, 20)} "
                f"| {cell(resp)} | {cell(detail, 50)} | {mode} |"
            )
    text = "\n".join(lines) + "\n"
    with open(out, "w") as f:
        f.write(text)
    print(text[:2000])


if __name__ == "__main__":
    main()
