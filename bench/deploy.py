#!/usr/bin/env python3
"""Progressive-delivery benchmark (issue 4), run by bench/deploy.sh.

(e) detection: time from a bad canary's first request (the router starts sending it traffic) to 100 % of
    traffic back on stable, at 50 requests/s with +5 % errors (target <= 30 s). Repeated RUNS times.
(f) rollback switch: blue-green with the old version warm; `slipway rollback` until every request lands on the
    old version (target <= 1 s). Also an abort during a canary.
(g) A/A: the same build released as a new version, canary with the same analysis, RUNS_AA times: false
    rollbacks (target <= 1 %; the statistical A/A test over 400 simulated canaries is in the unit tests).

Times come from the deploy job's own log (each line carries its unix-ms timestamp) and from a probe that
requests the router every 10 ms. Everything runs on this machine: the real binary, its agent, real instances
of the sample service behind the real router.
"""
import json, os, shutil, socket, statistics, subprocess, sys, tempfile, threading, time

SLIPWAY = os.environ.get("SLIPWAY_BIN") or sys.argv[1]
RUNS = int(os.environ.get("RUNS", "5"))
RUNS_AA = int(os.environ.get("RUNS_AA", "10"))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def get(port, timeout=2.0):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split()[1]), body.decode().strip()
    except Exception:
        return None, None


PIPELINE = """
name: bench-deploy
jobs:
  build:
    steps: [ {{ run: "echo $VERSION" }} ]
    release: {{ name: web, version: "${{{{ env.VERSION }}}}", path: app }}
  production:
    needs: [build]
    deploy: {{ environment: production }}
  load:
    needs: [build]
    if: env.LOAD == 'yes'
    steps:
      - uses: slipway/load
        with: {{ url: "http://127.0.0.1:{port}/", rps: 50, duration: {load}s }}
environments:
  production:
    target:
      local:
        instances: 3
        command: "{slipway} sample-service --config config"
        listen: {port}
        health: {{ path: /healthz, interval: 200ms, deadline: 20s }}
        stop-grace: 2s
    strategy:
{strategy}
"""

CANARY = """      canary:
        steps: [ { weight: 20 }, { pause: 40s }, { weight: 100 } ]
        analysis:
          interval: 2s
          failure-limit: 0
          inconclusive-limit: 100
          metrics:
            - { name: errors, source: router, metric: error-rate, compare: baseline }
            - { name: latency, source: router, metric: latency-p99, compare: baseline }"""


class Project:
    def __init__(self, strategy, load=45):
        self.dir = tempfile.mkdtemp(prefix="slipway-bench-deploy-")
        self.port = free_port()
        os.makedirs(self.dir + "/app")
        with open(self.dir + "/slipway.yml", "w") as f:
            f.write(PIPELINE.format(port=self.port, slipway=SLIPWAY, strategy=strategy, load=load))
        self.git("init", "-q", "-b", "main")
        self.n = 0

    def git(self, *args):
        subprocess.run(["git", "-c", "user.name=b", "-c", "user.email=b@b", *args], cwd=self.dir, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def slipway(self, *args, check=False, timeout=300):
        return subprocess.run([SLIPWAY, *args], cwd=self.dir, capture_output=True, text=True, timeout=timeout, check=check)

    def ship(self, version, config, load=False, job=None):
        self.n += 1
        with open(self.dir + "/app/config", "w") as f:
            f.write(config + f"\n# {self.n}\n")
        self.git("add", "-A")
        self.git("commit", "-q", "-m", version)
        args = ["run", "--plain", "--env", f"VERSION={version}"]
        if load:
            args += ["--env", "LOAD=yes"]
        if job:
            args += ["--job", job]
        return self.slipway(*args)

    def deploy_log(self, run):
        """(unix-ms, text) lines of the production job's deploy step in run `run`."""
        logs = self.dir + f"/.slipway/runs/{run}/logs"
        lines = []
        for name in sorted(os.listdir(logs)):
            if name.startswith("production."):
                for line in open(os.path.join(logs, name)):
                    ms, _, rest = line.partition(" ")
                    lines.append((int(ms), rest[2:].rstrip("\n")))
        return lines

    def close(self):
        self.slipway("down")
        shutil.rmtree(self.dir, ignore_errors=True)


def detection():
    p = Project(CANARY)
    results = []
    try:
        r = p.ship("1.0.0", "version=1.0.0")
        assert r.returncode == 0, r.stdout + r.stderr
        run = 1
        for i in range(RUNS):
            version = f"2.0.{i}"
            r = p.ship(version, f"version={version}\nerror-percent=5", load=True)
            run += 1
            lines = p.deploy_log(run)
            start = next((t for t, s in lines if s.startswith("traffic:") and f"{version}=20%" in s), None)
            back = next((t for t, s in lines if s.startswith("traffic:") and "1.0.0=100%" in s), None)
            verdict = next((s for t, s in lines if ": fail" in s), "")
            if start and back:
                results.append((back - start) / 1000)
                print(f"  bad canary {version}: rolled back {(back - start) / 1000:.1f} s after its first traffic — {verdict[:160]}", flush=True)
            else:
                print(f"  bad canary {version}: NOT rolled back (exit {r.returncode})", flush=True)
                results.append(None)
    finally:
        p.close()
    return results


def aa():
    p = Project(CANARY)
    rollbacks = 0
    try:
        r = p.ship("1.0.0", "version=same")
        assert r.returncode == 0, r.stdout + r.stderr
        for i in range(RUNS_AA):
            # Same behaviour, new version number: an A/A canary. Promotion takes the 40 s pause.
            r = p.ship(f"1.0.{i + 1}", "version=same", load=True)
            out = r.stdout
            if "rolledBack" in out or "rolled back" in out:
                rollbacks += 1
                print(f"  A/A {i + 1}: FALSE ROLLBACK", flush=True)
            else:
                print(f"  A/A {i + 1}: {'promoted' if r.returncode == 0 else 'exit %d' % r.returncode}", flush=True)
    finally:
        p.close()
    return rollbacks


def switch():
    p = Project("""      blue-green: { auto-promote: true, scale-down-delay: 120s }""")
    try:
        assert p.ship("1.0.0", "version=1.0.0").returncode == 0
        # v2 switches at once; v1 stays warm for 120 s: run it in the background.
        p.n += 1
        with open(p.dir + "/app/config", "w") as f:
            f.write("version=2.0.0\n")
        p.git("add", "-A")
        p.git("commit", "-q", "-m", "v2")
        proc = subprocess.Popen([SLIPWAY, "run", "--plain", "--env", "VERSION=2.0.0"], cwd=p.dir,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline and get(p.port)[1] != "hello from 2.0.0":
            time.sleep(0.05)
        t0 = time.time()
        threading.Thread(target=lambda: p.slipway("rollback", "production"), daemon=True).start()
        first = None
        while time.time() - t0 < 10:
            status, body = get(p.port, timeout=1)
            if body == "hello from 1.0.0":
                first = time.time() - t0
                break
            time.sleep(0.01)
        # Every request after the switch lands on 1.0.0.
        after = [get(p.port)[1] for _ in range(50)]
        proc.wait(timeout=60)
        return first, sum(1 for b in after if b == "hello from 1.0.0"), len(after)
    finally:
        p.close()


def main():
    print(f"slipway: {SLIPWAY}")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}", flush=True)
    print("(f) rollback switch, blue-green with the old version warm", flush=True)
    first, good, total = switch()
    print(f"  `slipway rollback` → first response from 1.0.0 after {first * 1000:.0f} ms (command start to probe); then {good}/{total} requests on 1.0.0", flush=True)
    print(f"(e) bad canary (+5 % errors) at 50 rps, canary at 20 %: {RUNS} runs", flush=True)
    times = detection()
    caught = [t for t in times if t is not None]
    if caught:
        print(f"  time to 100 % stable: median {statistics.median(caught):.1f} s, min {min(caught):.1f} s, max {max(caught):.1f} s; caught {len(caught)}/{len(times)}")
    print(f"(g) A/A canaries (same behaviour as stable): {RUNS_AA} runs", flush=True)
    false = aa()
    print(f"  false rollbacks: {false}/{RUNS_AA}")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
