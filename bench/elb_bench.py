"""bench/elb: Berth's application load balancer and Debian's haproxy in front
of the same small HTTP backend, in the same run.

1. `elb-bench certs`: a CA and a server certificate for haproxy's HTTPS
   frontend; `elb-bench backend` on 0.0.0.0 (a fixed 13-byte answer,
   keep-alive).
2. haproxy configured as the ALB is: HTTP frontend and HTTPS frontend
   (`bind … ssl crt`, ALPN http/1.1), the request headers an ALB adds
   (X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Port and an
   X-Amzn-Trace-Id `Root=1-…`), the target group's health check (GET /
   every 5 s, 2 s timeout, thresholds 2), keep-alive and connection reuse to
   the backend.
3. Berth (unless `--only haproxy`): `berth up` on a temporary data
   directory; through boto3 an internal ALB in the default VPC's subnets, an
   `ip` target group with the backend at a private address of this host
   (AvailabilityZone `all`), an HTTP listener and an HTTPS listener with a
   certificate RequestCertificate issued (trusted through `berth
   ca-certificate`); the load balancer's address from Berth's DNS.
4. `elb-bench load` at 1, 16, 64 and 256 keep-alive connections, HTTP then
   HTTPS, against each proxy: requests/s, p50 and p99.
5. Head to head at 64 connections over HTTP: `--rounds` rounds, each
   running haproxy then Berth back to back, so both see the same moment of a
   shared machine; the medians of requests/s, p99 and each proxy's CPU time
   per request (from /proc) give the goal's figures.
6. Each proxy's resident memory idle, and with 10,000 idle client
   connections (`elb-bench idle`).

Prints a table; never fails because the machine is slow. When the Berth side
cannot be set up (the load balancer does not answer), it says why and
prints haproxy's figures alone.
"""
import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import free_port, start_berth  # noqa: E402

KEY, SECRET = "AKIABERTHBENCHELB000", "bench-elb-secret-key"
NAME = "bench.example.test"
CONNECTIONS = [1, 16, 64, 256]


def rss_mib(pid):
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return float("nan")
    m = re.search(r"VmRSS:\s+(\d+)", text)
    return int(m.group(1)) / 1024 if m else float("nan")


def wait_tcp(host, port, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def private_ipv4():
    """A private IPv4 address of this host (the backend's address for an
    `ip` target group, which AWS accepts only in private ranges)."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        m = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", line)
        # Not loopback's: load balancers' own addresses live there.
        if not m or line.split()[1] == "lo":
            continue
        ip = m.group(1)
        a, b = (int(x) for x in ip.split(".")[:2])
        if a == 10 or (a == 172 and 16 <= b <= 31) or (a == 192 and b == 168):
            return ip
    return None


def run_load(load, url, connections, seconds, cacert=None):
    args = [load, "load", "--url", url, "--connections", str(connections),
            "--seconds", str(seconds), "--server-name", NAME, "--host", NAME]
    if cacert:
        args += ["--cacert", str(cacert)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds * 3 + 60)
    if out.returncode != 0:
        return {"error": out.stderr.strip()[-200:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def cpu_seconds(pid):
    """User + system CPU time of a process so far (seconds)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def head_to_head(load, proxies, rounds, seconds):
    """Alternating runs at 64 HTTP connections: {proxy: [(req/s, p99 ms, CPU µs per request)
    or None where the run failed]}, one entry per round so that rounds stay paired."""
    runs = {name: [] for name in proxies}
    for i in range(rounds):
        for name, (pid, host, http_port, _, _) in proxies.items():
            before = cpu_seconds(pid)
            r = run_load(load, f"http://{host}:{http_port}/", 64, seconds)
            used = cpu_seconds(pid) - before
            if "rps" not in r or not r.get("requests"):
                print(f"round {i + 1} {name}: failed: {r.get('error')}", flush=True)
                runs[name].append(None)
                continue
            cpu_us = used / r["requests"] * 1e6
            runs[name].append((r["rps"], r["p99_ms"], cpu_us))
            print(f"round {i + 1} {name:<8} {r['rps']:>10,.0f} req/s  p99 {r['p99_ms']:.3f} ms  "
                  f"{cpu_us:.1f} µs CPU/request", flush=True)
    return runs


def idle_memory(load, pid, host, port, connections, tls=False, cacert=None):
    """(RSS before, RSS with `connections` idle connections, how many opened)."""
    before = rss_mib(pid)
    args = [load, "idle", "--addr", f"{host}:{port}", "--connections", str(connections),
            "--hold", "6", "--server-name", NAME]
    if tls:
        args += ["--tls", "--cacert", str(cacert)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    opened = int(line.split()[1]) if line.startswith("ready") else 0
    time.sleep(2)
    during = rss_mib(pid)
    proc.wait(timeout=60)
    return before, during, opened


def start_haproxy(work, backend_port, certs):
    http_port, https_port = free_port(), free_port()
    conf = work / "haproxy.cfg"
    conf.write_text(f"""global
    # 10,000 idle clients plus the load: one descriptor each (idle clients
    # open no backend connection); `no strict-limits` lets haproxy start
    # where the hard descriptor limit is 20,000.
    maxconn 10500
    no strict-limits
    nbthread 2
    tune.ssl.default-dh-param 2048

defaults
    mode http
    option http-keep-alive
    option forwardfor
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    # ALB's X-Amzn-Trace-Id: Root=1-<epoch seconds, hex>-<24 random hex digits>.
    unique-id-format Root=1-%[date,hex,bytes(8,8),lower]-%[rand,hex,bytes(8,8),lower]%[rand,hex,bytes(8,8),lower]%[rand,hex,bytes(8,8),lower]
    unique-id-header X-Amzn-Trace-Id

frontend http_in
    bind 127.0.0.1:{http_port}
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Port %[dst_port]
    default_backend app

frontend https_in
    bind 127.0.0.1:{https_port} ssl crt {certs / 'haproxy.pem'} alpn http/1.1
    http-request set-header X-Forwarded-Proto https
    http-request set-header X-Forwarded-Port %[dst_port]
    default_backend app

backend app
    http-reuse always
    # The ALB's target group: GET / every 5 s, 2 s timeout, 2 to turn healthy or unhealthy.
    option httpchk GET /
    timeout check 2s
    server b1 127.0.0.1:{backend_port} maxconn 1000 check inter 5s rise 2 fall 2
""")
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=open(work / "haproxy.log", "wb"))
    if not (wait_tcp("127.0.0.1", http_port) and wait_tcp("127.0.0.1", https_port)):
        sys.exit("haproxy did not start: " + (work / "haproxy.log").read_text()[-500:])
    return proc, http_port, https_port


def berth_side(args, work, backend_port):
    """Sets up Berth's ALB: (berth process, host, http port, https port, CA
    path), or raises RuntimeError with the reason."""
    import boto3
    from botocore.config import Config

    server, endpoint = start_berth(args.berth, work, KEY, SECRET)
    cfg = Config(retries={"max_attempts": 1})
    c = lambda s: boto3.client(s, endpoint_url=endpoint, region_name="us-east-1",
                               aws_access_key_id=KEY, aws_secret_access_key=SECRET, config=cfg)
    try:
        ec2, elb, acm = c("ec2"), c("elbv2"), c("acm")
        vpc = next(v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"] if v.get("IsDefault"))
        subnets = [s["SubnetId"] for s in ec2.describe_subnets(
            Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]][:2]
        lb = elb.create_load_balancer(Name="bench", Subnets=subnets, Scheme="internal",
                                      Type="application")["LoadBalancers"][0]
        target_ip = private_ipv4()
        if target_ip is None:
            raise RuntimeError("this host has no private IPv4 address for an ip target")
        tg = elb.create_target_group(Name="bench", Protocol="HTTP", Port=backend_port,
                                     VpcId=vpc, TargetType="ip",
                                     HealthCheckIntervalSeconds=5, HealthCheckTimeoutSeconds=2,
                                     HealthyThresholdCount=2)["TargetGroups"][0]
        elb.register_targets(TargetGroupArn=tg["TargetGroupArn"],
                             Targets=[{"Id": target_ip, "Port": backend_port,
                                       "AvailabilityZone": "all"}])
        forward = [{"Type": "forward", "TargetGroupArn": tg["TargetGroupArn"]}]
        elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=80,
                            DefaultActions=forward)
        cert = acm.request_certificate(DomainName=NAME, KeyAlgorithm="EC_prime256v1")
        elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTPS", Port=443,
                            Certificates=[{"CertificateArn": cert["CertificateArn"]}],
                            DefaultActions=forward)
        ca = work / "berth-ca.pem"
        ca.write_text(subprocess.run([args.berth, "ca-certificate", "--endpoint", endpoint],
                                     capture_output=True, text=True, check=True).stdout)
        # The load balancer's address: its DNS name through Berth's DNS,
        # else the first address DescribeLoadBalancers shows.
        host = None
        for zone in lb.get("AvailabilityZones", []):
            for a in zone.get("LoadBalancerAddresses", []):
                host = host or a.get("PrivateIPv4Address") or a.get("IpAddress")
        dns_port = None
        cmd = open(f"/proc/{server.pid}/cmdline", "rb").read().split(b"\0")
        if b"--dns-listen" in cmd:
            dns_port = cmd[cmd.index(b"--dns-listen") + 1].decode().rsplit(":", 1)[1]
        if dns_port:
            out = subprocess.run(["dig", "@127.0.0.1", "-p", dns_port, "+short", lb["DNSName"]],
                                 capture_output=True, text=True).stdout.split()
            host = next((o for o in out if re.match(r"^\d+\.\d+\.\d+\.\d+$", o)), host)
        if host is None:
            raise RuntimeError(f"no address for {lb['DNSName']} (Berth's DNS answered nothing)")
        deadline = time.time() + 60
        last = None
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://{host}/", timeout=2) as r:
                    body = r.read()
                    if r.status == 200 and body == b"hello, world\n":
                        break
                    # Another installation's load balancer on the same
                    # address (every Berth's default VPC is 172.31.0.0/16).
                    last = f"{r.status} {body[:60]!r}, not this bench's backend"
            except OSError as e:
                last = e
            time.sleep(0.5)
        else:
            raise RuntimeError(f"the load balancer at {host}:80 did not answer 200 in 60 s "
                               f"({last})")
        return server, host, 80, 443, ca
    except Exception as e:  # noqa: BLE001 - any failure: report it, keep haproxy's figures
        server.terminate()
        server.wait(timeout=30)
        raise RuntimeError(f"{type(e).__name__}: {e}") from e


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--berth", required=True)
    parser.add_argument("--load", required=True, help="the elb-bench binary")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--idle", type=int, default=10_000)
    parser.add_argument("--only", choices=["haproxy", "berth"], default=None)
    parser.add_argument("--rounds", type=int, default=5,
                        help="alternating head-to-head runs at 64 HTTP connections")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-elb-"))
    procs = []
    try:
        certs = work / "certs"
        subprocess.run([args.load, "certs", "--out", str(certs), "--name", NAME], check=True)
        backend_port = free_port()
        backend = subprocess.Popen([args.load, "backend", "--listen", f"0.0.0.0:{backend_port}"],
                                   stdout=subprocess.DEVNULL)
        procs.append(backend)
        if not wait_tcp("127.0.0.1", backend_port):
            sys.exit("the backend did not start")

        proxies = {}
        if args.only != "berth":
            hap, http_port, https_port = start_haproxy(work, backend_port, certs)
            procs.append(hap)
            proxies["haproxy"] = (hap.pid, "127.0.0.1", http_port, https_port, certs / "ca.pem")
        if args.only != "haproxy":
            try:
                server, host, http_port, https_port, ca = berth_side(args, work, backend_port)
                procs.append(server)
                proxies["berth"] = (server.pid, host, http_port, https_port, ca)
            except RuntimeError as e:
                print(f"berth: its load balancer could not be measured: {e}", flush=True)
        if not proxies:
            sys.exit("nothing to measure")

        results = {}
        direct = run_load(args.load, f"http://127.0.0.1:{backend_port}/", 64, args.seconds)
        for name, (pid, host, http_port, https_port, ca) in proxies.items():
            for scheme, port in (("http", http_port), ("https", https_port)):
                for n in CONNECTIONS:
                    r = run_load(args.load, f"{scheme}://{host}:{port}/", n, args.seconds,
                                 cacert=ca if scheme == "https" else None)
                    results[(name, scheme, n)] = r
                    print(f"{name:<8} {scheme:<5} {n:>4} conns: {json.dumps(r)}", flush=True)
        rounds = head_to_head(args.load, proxies, args.rounds, args.seconds)
        memory = {}
        for name, (pid, host, http_port, https_port, ca) in proxies.items():
            memory[(name, "http")] = idle_memory(args.load, pid, host, http_port, args.idle)
            memory[(name, "https")] = idle_memory(args.load, pid, host, https_port, args.idle,
                                                  tls=True, cacert=ca)

        print()
        print(f"elb-bench: keep-alive GET, {args.seconds} s per run, 13-byte answers; "
              f"the backend alone at 64 connections: {direct.get('rps', 0):,.0f} req/s")
        print(f"{'proxy':<8} {'scheme':<6} {'conns':>5} {'req/s':>10} {'p50 ms':>8} "
              f"{'p99 ms':>8} {'errors':>7}")
        for (name, scheme, n), r in results.items():
            if "error" in r:
                print(f"{name:<8} {scheme:<6} {n:>5}  failed: {r['error']}")
                continue
            print(f"{name:<8} {scheme:<6} {n:>5} {r['rps']:>10,.0f} {r['p50_ms']:>8.3f} "
                  f"{r['p99_ms']:>8.3f} {r['errors']:>7}")
        print()
        print(f"{'proxy':<8} {'scheme':<6} {'RSS idle MiB':>13} {'RSS with idle conns MiB':>24} "
              f"{'conns open':>11}")
        for (name, scheme), (before, during, opened) in memory.items():
            print(f"{name:<8} {scheme:<6} {before:>13.1f} {during:>24.1f} {opened:>11}")
        print()
        print(f"head to head at 64 HTTP connections, {args.rounds} alternating rounds, medians:")
        print(f"{'proxy':<8} {'req/s':>10} {'p99 ms':>8} {'CPU µs/request':>15}")
        medians = {}
        for name, runs in rounds.items():
            runs = [r for r in runs if r]
            if runs:
                medians[name] = tuple(statistics.median(r[k] for r in runs) for k in range(3))
                rps, p99, cpu = medians[name]
                print(f"{name:<8} {rps:>10,.0f} {p99:>8.3f} {cpu:>15.1f}")
        if "berth" in medians and "haproxy" in medians:
            (b_rps, b_p99, b_cpu), (h_rps, h_p99, h_cpu) = medians["berth"], medians["haproxy"]
            ratios = sorted(b[0] / h[0] for b, h in zip(rounds["berth"], rounds["haproxy"])
                            if b and h)
            print(f"\nat 64 connections (HTTP): berth {b_rps / h_rps:.2f}x haproxy's requests/s "
                  f"(per round {', '.join(f'{r:.2f}' for r in ratios)}), "
                  f"p99 {b_p99 / h_p99:.2f}x haproxy's, CPU per request {b_cpu / h_cpu:.2f}x")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        if os.environ.get("BENCH_KEEP"):
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
