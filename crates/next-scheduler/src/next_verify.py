"""Scoring rows with a long-lived `next verify --serve` process, for the reward functions of the
engines' Python drivers (TRL's batch reward, verl's per-sample `compute_score`): one verifier
implementation for every engine, started once per process instead of once per step.

Written next to each driver by `next`; the drivers import it from their own directory.
"""
import json
import os
import subprocess
import threading


class NextVerify:
    """One `next verify --serve` child per process (a forked or Ray worker starts its own).

    `score(rows)` sends the rows as one JSON array line and reads one line back: the rows with
    `reward`, `correct`, `kind` and `detail`. A child that died is restarted and the batch
    sent once more; calls from several threads (verl runs sync reward functions in an
    executor) take turns.
    """

    def __init__(self, next_bin, args, log=None):
        self.cmd = [next_bin, "verify", "--serve"] + list(args)
        self.log = log
        self.lock = threading.Lock()
        self.child = None
        self.pid = None

    def _start(self):
        err = open(self.log, "a") if self.log else subprocess.DEVNULL
        self.child = subprocess.Popen(self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=err, text=True, bufsize=1)
        self.pid = os.getpid()

    def _ask(self, line):
        if self.child is None or self.pid != os.getpid() or self.child.poll() is not None:
            self._start()
        self.child.stdin.write(line + "\n")
        self.child.stdin.flush()
        answer = self.child.stdout.readline()
        if not answer:
            raise BrokenPipeError("next verify --serve ended (exit %s)" % self.child.poll())
        return answer

    def score(self, rows):
        line = json.dumps(rows)
        with self.lock:
            try:
                answer = self._ask(line)
            except (BrokenPipeError, OSError):
                self.child = None
                answer = self._ask(line)
        out = json.loads(answer)
        if isinstance(out, dict) and "error" in out:
            raise RuntimeError("next verify refused a batch: %s" % out["error"])
        if len(out) != len(rows):
            raise RuntimeError("next verify scored %d of %d rows" % (len(out), len(rows)))
        return out

    def close(self):
        if self.child is not None and self.child.poll() is None:
            self.child.stdin.close()
            self.child.wait(timeout=30)
