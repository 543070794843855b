# Sandbox supervisor for the `code` verifier (embedded in the Rust binary; run as
# `python3 -I -S -c <this>` with the job as JSON on stdin). Trusted code: it never runs the
# model's program itself. It isolates (network and mount namespaces, private /tmp), then runs
# each test in a child that drops to the slot's uid under resource limits, kills the child's
# whole process group and every process of the slot's uid after each test, and prints one JSON
# verdict on stdout.
import ctypes
import json
import os
import resource
import signal
import sys
import time

job = json.loads(sys.stdin.read())
sys.stdin.close()
work = job["dir"]
limits = job["limits"]
uid = job.get("uid")
py = job["python"]
root = os.geteuid() == 0
isolation = []

libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, CLONE_NEWNET, CLONE_NEWUSER = 0x00020000, 0x40000000, 0x10000000
MS_REC, MS_PRIVATE, MS_BIND = 16384, 1 << 18, 4096
os.chdir(work)
# Before the mounts below hide the directory's path behind /tmp.
if root and uid is not None:
    os.chown(work, uid, uid)
    os.chmod(work, 0o700)
if libc.unshare(CLONE_NEWNS | CLONE_NEWNET | (0 if root else CLONE_NEWUSER)) == 0:
    isolation.append("network namespace (no network)")
    if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) == 0:
        private = [d for d in (b"/tmp", b"/var/tmp", b"/dev/shm") if os.path.isdir(d) and libc.mount(work.encode(), d, None, MS_BIND, None) == 0]
        if private:
            isolation.append("private " + ", ".join(d.decode() for d in private))
        if b"/tmp" in private:
            # The working directory's old path is hidden now; it is /tmp from here on.
            os.chdir("/tmp")
else:
    isolation.append("no namespaces (errno %d): network not isolated" % ctypes.get_errno())
if root and uid is not None:
    isolation.append("uid %d" % uid)
else:
    uid = None
    isolation.append("same uid as the caller")


def sweep():
    """Kill every process of the slot's uid (daemons and setsid children included)."""
    if uid is None:
        return
    for _ in range(3):
        found = False
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open("/proc/%s/status" % pid) as f:
                    for line in f:
                        if line.startswith("Uid:"):
                            if int(line.split()[1]) == uid:
                                os.kill(int(pid), signal.SIGKILL)
                                found = True
                            break
            except (OSError, ValueError):
                pass
        if not found:
            return
        time.sleep(0.01)


def limit_child():
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    cpu = int(limits["cpu_s"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_bytes"], limits["memory_bytes"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_bytes"], limits["file_bytes"]))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits["open_files"], limits["open_files"]))
    if uid is not None:
        resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"], limits["processes"]))
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)


RUNNER = r"""
import os, sys
nonce = sys.stdin.readline().strip()
sys.stdin.close()
report = os.dup(1)
out = os.open("stdout.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
os.dup2(out, 1); os.dup2(out, 2); os.close(out)
sys.stdin = open(os.devnull)
g = {"__name__": "__main__", "__builtins__": __builtins__}
try:
    exec(compile(open("solution.py").read(), "solution.py", "exec"), g)
    exec(compile(open("tests.py").read(), "tests.py", "exec"), g)
except BaseException as e:
    sys.stderr.write("%s: %s\n" % (type(e).__name__, str(e)[:500]))
    sys.stderr.flush()
    os._exit(1)
os.write(report, (nonce + "\n").encode())
os._exit(0)
"""


def run_child(argv, stdin_data):
    """Runs argv in a limited child; returns (status, stdout_bytes_of_pipe, elapsed)."""
    rin, win = os.pipe()
    rout, wout = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setpgid(0, 0)
            os.dup2(rin, 0)
            os.dup2(wout, 1)
            err = os.open("stderr.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(err, 2)
            os.closerange(3, 1 << 16)
            limit_child()
            os.execve(py, argv, {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp", "TMPDIR": "/tmp"})
        except BaseException:
            os._exit(127)
    os.close(rin)
    os.close(wout)
    try:
        os.write(win, stdin_data)
    except OSError:
        pass
    os.close(win)
    os.set_blocking(rout, False)
    deadline = time.monotonic() + limits["wall_s"]
    start = time.monotonic()
    chunks, size, status, timed_out = [], 0, None, False
    while True:
        try:
            data = os.read(rout, 65536)
            if data and size < limits["output_bytes"]:
                chunks.append(data[: limits["output_bytes"] - size])
                size += len(data)
        except BlockingIOError:
            pass
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = st
            break
        if time.monotonic() > deadline:
            timed_out = True
            break
        time.sleep(0.005)
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    if status is None:
        _, status = os.waitpid(pid, 0)
    sweep()
    while True:
        try:
            data = os.read(rout, 65536)
        except (BlockingIOError, OSError):
            break
        if not data:
            break
        if size < limits["output_bytes"]:
            chunks.append(data[: limits["output_bytes"] - size])
            size += len(data)
    os.close(rout)
    return ("timeout" if timed_out else status), b"".join(chunks), time.monotonic() - start


def tail(name, n=300):
    try:
        with open(name, "rb") as f:
            f.seek(0, 2)
            end = f.tell()
            f.seek(max(0, end - n))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def describe(status):
    if status == "timeout":
        return "timeout", "wall-time limit of %ss" % limits["wall_s"]
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGXCPU:
            return "timeout", "CPU-time limit"
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        return "fail", "killed by %s %s" % (name, tail("stderr.txt"))
    return "fail", "exit status %d: %s" % (os.WEXITSTATUS(status), tail("stderr.txt") or tail("stdout.txt"))


def same_output(got, want):
    norm = lambda s: [line.rstrip() for line in s.strip().splitlines()]
    return norm(got) == norm(want)


results = []
if job["mode"] == "assert":
    nonce = os.urandom(16).hex()
    status, out, elapsed = run_child([py, "-I", "-c", RUNNER], (nonce + "\n").encode())
    if status != "timeout" and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 and nonce in out.decode("ascii", "replace"):
        results.append({"status": "pass", "detail": "%.2fs" % elapsed})
    elif status != "timeout" and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        results.append({"status": "fail", "detail": "exited before the tests completed"})
    else:
        st, detail = describe(status)
        results.append({"status": st, "detail": detail})
else:
    for i, case in enumerate(job["io"]):
        status, out, elapsed = run_child([py, "-I", "solution.py"], case["stdin"].encode())
        if status == "timeout":
            results.append({"status": "timeout", "detail": "case %d: wall-time limit" % i})
        elif os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            got = out.decode("utf-8", "replace")
            if same_output(got, case["stdout"]):
                results.append({"status": "pass", "detail": "case %d" % i})
            else:
                results.append({"status": "fail", "detail": "case %d: output %r, expected %r" % (i, got[:200], case["stdout"][:200])})
        else:
            st, detail = describe(status)
            results.append({"status": st, "detail": "case %d: %s" % (i, detail)})
sweep()
print(json.dumps({"results": results, "isolation": isolation}))
