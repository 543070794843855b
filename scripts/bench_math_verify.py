"""math-verify side of `cargo xtask bench verifiers`: verdicts/s on the same corpus."""
import json
import sys
import time

from math_verify import parse, verify


def main():
    corpus, out = sys.argv[1], sys.argv[2]
    rows = [json.loads(line) for line in open(corpus)]
    rates = {}
    for name, subset in [("all", rows), ("non_adversarial", [r for r in rows if r["category"] != "adversarial"])]:
        t0 = time.perf_counter()
        for r in subset:
            try:
                verify(parse("$" + r["gold"] + "$"), parse(r["response"]))
            except Exception:
                pass
        rates[name] = len(subset) / (time.perf_counter() - t0)
        print("math-verify (%s): %.0f verdicts/s" % (name, rates[name]), file=sys.stderr)
    json.dump({"math_verdicts_per_s": rates}, open(out, "w"))


if __name__ == "__main__":
    main()
