"""The reference extraction (NExt's public code): merge a LoRA checkpoint into the full weight,
then a full torch.linalg.svd of the d_out x d_in delta. Timed per matrix shape on a sample, for
`cargo xtask bench extract` to scale to a whole model. Prints JSON."""
import argparse
import json
import resource
import time

import torch


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shapes", required=True, help="out x in pairs: 1536x1536,256x1536,...")
    p.add_argument("--r", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    out = {}
    for spec in a.shapes.split(","):
        o, i = (int(x) for x in spec.split("x"))
        w0 = torch.randn(o, i) * 0.02
        b = torch.randn(o, a.r) * 0.01
        lora_a = torch.randn(a.r, i) * 0.01
        scaling = 2.0
        merge_s, svd_s = [], []
        for _ in range(a.repeats):
            t = time.perf_counter()
            # What merge_and_unload does per linear layer.
            w = w0 + scaling * (b @ lora_a)
            merge_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            u, s, vh = torch.linalg.svd(w - w0, full_matrices=False)
            top = (u[:, 0].clone(), s[0].item(), vh[0].clone())
            svd_s.append(time.perf_counter() - t)
            del u, s, vh, top
        out[spec] = {"merge_s": min(merge_s), "svd_s": min(svd_s)}
    out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out["torch"] = torch.__version__
    print(json.dumps(out))


if __name__ == "__main__":
    main()
