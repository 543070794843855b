"""Stores HF math-verify's verdict beside each labelled case of the math corpus.

Usage: .venv/bin/python scripts/math_verify_corpus.py crates/next-verifiers/tests/data/math_corpus.jsonl
Rewrites the file in place, setting "math_verify": true/false on every row (the gold answer is
parsed as `$gold$`, the response as it is, both with math-verify's default extraction). The
"math_verify_wrong" notes, written by hand, say why it disagrees with the label where it does.
"""
import json
import sys

from math_verify import parse, verify


def judge(gold, response):
    try:
        return bool(verify(parse("$" + gold + "$"), parse(response)))
    except Exception:
        return False


def main():
    path = sys.argv[1]
    rows = [json.loads(line) for line in open(path)]
    for r in rows:
        r["math_verify"] = judge(r["gold"], r["response"])
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    right = sum(r["math_verify"] == r["label"] for r in rows)
    print(f"math-verify: {right}/{len(rows)} right")


if __name__ == "__main__":
    main()
