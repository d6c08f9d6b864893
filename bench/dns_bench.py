"""bench/dns: Berth's DNS server and dnsmasq serve the same Cloud Map-like
records; dnsperf measures both in the same run.

1. `berth up` (no agent) with its DNS server on a free loopback port; a
   private DNS namespace `corp.local`, N services with a MULTIVALUE A record
   and M instances each, written through the Cloud Map API (boto3).
2. dnsmasq on another loopback port with the same names and addresses
   (`--host-record`, one per instance), local data only (`--no-resolv
   --no-hosts`, `--local=/corp.local/` so unknown names are NXDOMAIN).
3. dnsperf, same query file (A queries for every service name, and one in
   ten for a name that does not exist): queries/s at saturation for each,
   then per-query latency (dnsperf -v, one sending thread) at the same
   offered load for both (a quarter of the slower server's saturated rate,
   so that printing every query does not make dnsperf the bottleneck): p50
   and p99.
4. DiscoverInstances (Cloud Map's API answer for the same names) on Berth
   and on moto_server populated the same way, with the api-load generator
   at 1 and 16 clients: requests/s and p50/p99.
"""
import json
import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import free_port  # noqa: E402

KEY, SECRET = "AKIABERTHBENCHDNS000", "bench-dns-secret-key"


def free_dns_port():
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    sys.exit("no free port for DNS")


def wait_health(endpoint, path="/_berth/health"):
    import urllib.request
    for _ in range(300):
        try:
            urllib.request.urlopen(endpoint + path, timeout=1)
            return
        except OSError:
            time.sleep(0.05)
    sys.exit("berth did not come up")


def address(service, instance):
    return f"10.{100 + service // 250}.{service % 250}.{instance + 1}"


def client(endpoint, service):
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                        config=Config(retries={"max_attempts": 1}))


def register_to_answer_ms(endpoint, dns_port, samples=5):
    """RegisterInstance returned → the DNS server answers the new address
    (dig every ~5 ms): the median over `samples` registrations."""
    sd = client(endpoint, "servicediscovery")
    svc = sd.list_services()["Services"][0]
    name = f"{svc['Name']}.corp.local"
    took = []
    for n in range(samples):
        ip = f"10.250.0.{n + 1}"
        sd.register_instance(ServiceId=svc["Id"], InstanceId=f"probe{n}",
                             Attributes={"AWS_INSTANCE_IPV4": ip})
        started = time.perf_counter()
        while True:
            out = subprocess.run(["dig", "@127.0.0.1", "-p", str(dns_port), "+short", "+time=1",
                                  "+tries=1", name, "A"], capture_output=True, text=True).stdout
            if ip in out.split():
                break
            if time.perf_counter() - started > 5:
                return float("nan")
            time.sleep(0.002)
        took.append((time.perf_counter() - started) * 1000)
        sd.deregister_instance(ServiceId=svc["Id"], InstanceId=f"probe{n}")
    return sorted(took)[len(took) // 2]


def populate(endpoint, services, instances, vpc=None):
    sd = boto3.client("servicediscovery", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                      config=Config(retries={"max_attempts": 1}))
    if vpc is None:
        ec2 = boto3.client("ec2", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id=KEY, aws_secret_access_key=SECRET)
        vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    op = sd.create_private_dns_namespace(Name="corp.local", Vpc=vpc)["OperationId"]
    for _ in range(600):
        status = sd.get_operation(OperationId=op)["Operation"]
        if status["Status"] == "SUCCESS":
            break
        if status["Status"] == "FAIL":
            sys.exit(f"namespace: {status}")
        time.sleep(0.05)
    namespace = status["Targets"]["NAMESPACE"]
    for s in range(services):
        svc = sd.create_service(Name=f"svc{s}", NamespaceId=namespace, DnsConfig={
            "RoutingPolicy": "MULTIVALUE", "DnsRecords": [{"Type": "A", "TTL": 10}]})["Service"]
        for i in range(instances):
            sd.register_instance(ServiceId=svc["Id"], InstanceId=f"i{i}",
                                 Attributes={"AWS_INSTANCE_IPV4": address(s, i)})


def dig_count(port, name):
    out = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), "+short", "+time=1", "+tries=1",
                          name, "A"], capture_output=True, text=True).stdout
    return len(out.split())


def dnsperf(port, queries, seconds, clients, max_qps=None, verbose=False):
    threads = 1 if verbose else min(clients, 2)
    args = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries),
            "-l", str(seconds), "-c", str(clients), "-T", str(threads), "-q", "500",
            "-t", "2"]
    if max_qps:
        args += ["-Q", str(int(max_qps))]
    if verbose:
        args.append("-v")
    proc = subprocess.run(args, capture_output=True, text=True)
    qps = re.search(r"Queries per second:\s+([\d.]+)", proc.stdout)
    lost = re.search(r"Queries lost:\s+(\d+)", proc.stdout)
    latencies = []
    if verbose:
        for line in proc.stdout.splitlines():
            if line.startswith("> ") and not line.startswith("> T "):
                try:
                    latencies.append(float(line.rsplit(None, 1)[1]))
                except ValueError:
                    pass
    return (float(qps.group(1)) if qps else 0.0, int(lost.group(1)) if lost else -1, latencies,
            proc.stdout)


def pct(samples, p):
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round((len(ordered) - 1) * p))]


def discover_instances(load, endpoint, label, clients, seconds):
    """api-load's figures for DiscoverInstances of one service."""
    out = subprocess.run(
        [load, "--endpoint", endpoint, "--service", "servicediscovery",
         "--target", "Route53AutoNaming_v20170314.DiscoverInstances",
         "--body", json.dumps({"NamespaceName": "corp.local", "ServiceName": "svc0"}),
         "--clients", str(clients), "--seconds", str(seconds), "--label", label,
         "--access-key-id", KEY, "--secret-access-key", SECRET],
        capture_output=True, text=True, timeout=seconds * 4 + 60)
    if out.returncode != 0:
        print(f"{label}: api-load failed: {out.stderr.strip()}", flush=True)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--berth", required=True)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--load", help="the api-load binary (DiscoverInstances against moto)")
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-dns-"))
    procs = []
    try:
        port, dns_port, masq_port = free_port(), free_dns_port(), free_dns_port()
        env = dict(os.environ, BERTH_ROOT_ACCESS_KEY_ID=KEY, BERTH_ROOT_SECRET_ACCESS_KEY=SECRET)
        endpoint = f"http://127.0.0.1:{port}"
        berth = subprocess.Popen(
            [args.berth, "up", "--no-agent", "--listen", f"127.0.0.1:{port}",
             "--data-dir", str(work / "data"), "--log", "warn",
             "--dns-listen", f"127.0.0.1:{dns_port}", "--dns-upstream", "none"],
            stdout=subprocess.DEVNULL, stderr=open(work / "berth.log", "wb"), env=env)
        procs.append(berth)
        wait_health(endpoint)
        started = time.perf_counter()
        populate(endpoint, args.services, args.instances)
        print(f"populated {args.services} services x {args.instances} instances through "
              f"Cloud Map in {time.perf_counter() - started:.1f} s", flush=True)

        hosts = []
        for s in range(args.services):
            for i in range(args.instances):
                hosts.append(f"--host-record=svc{s}.corp.local,{address(s, i)}")
        conf = work / "dnsmasq.conf"
        conf.write_text("\n".join(h[2:] for h in hosts) + "\n")
        masq = subprocess.Popen(
            ["dnsmasq", "--keep-in-foreground", "--no-daemon", "--no-resolv", "--no-hosts",
             "--listen-address=127.0.0.1", "--bind-interfaces", f"--port={masq_port}",
             "--user=root", f"--pid-file={work / 'dnsmasq.pid'}", "--cache-size=10000",
             f"--conf-file={conf}", "--log-facility=-", "--quiet-dhcp",
             # NXDOMAIN for the zone's unknown names, as Berth answers.
             "--local=/corp.local/"],
            stdout=subprocess.DEVNULL, stderr=open(work / "dnsmasq.log", "wb"))
        procs.append(masq)

        probe = f"svc{args.services - 1}.corp.local"
        for _ in range(200):
            if dig_count(dns_port, probe) == args.instances and dig_count(masq_port, probe) == args.instances:
                break
            time.sleep(0.05)
        else:
            sys.exit(f"the servers do not both answer {probe}: berth {dig_count(dns_port, probe)}, "
                     f"dnsmasq {dig_count(masq_port, probe)}")

        queries = work / "queries.txt"
        lines = []
        for s in range(args.services):
            lines.append(f"svc{s}.corp.local A")
            if s % 10 == 0:
                lines.append(f"missing{s}.corp.local A")
        queries.write_text("\n".join(lines) + "\n")

        visible_ms = register_to_answer_ms(endpoint, dns_port)
        results = {}
        for name, p in (("berth", dns_port), ("dnsmasq", masq_port)):
            dnsperf(p, queries, 1, args.clients)  # warm-up
            qps, lost, _, _ = dnsperf(p, queries, args.seconds, args.clients)
            results[name] = {"qps": qps, "lost": lost}
        load = min(r["qps"] for r in results.values()) / 4
        for name, p in (("berth", dns_port), ("dnsmasq", masq_port)):
            _, lost, latencies, _ = dnsperf(p, queries, args.seconds, args.clients,
                                            max_qps=load, verbose=True)
            results[name].update(p50=pct(latencies, 0.5) * 1000, p99=pct(latencies, 0.99) * 1000,
                                 samples=len(latencies), lost_at_load=lost)

        print()
        print(f"dnsperf: {args.clients} clients, {args.seconds} s per run; latency at "
              f"{load:,.0f} queries/s offered to each")
        print(f"{'server':<8} {'queries/s':>11} {'lost':>6} {'p50 ms':>8} {'p99 ms':>8}")
        for name, r in results.items():
            print(f"{name:<8} {r['qps']:>11,.0f} {r['lost']:>6} {r['p50']:>8.3f} {r['p99']:>8.3f}")
        b, m = results["berth"], results["dnsmasq"]
        print()
        print(f"berth_register_to_answer_ms={visible_ms:.1f}")
        print(f"berth_dns_qps={b['qps']:.0f}")
        print(f"dnsmasq_qps={m['qps']:.0f}")
        print(f"berth_vs_dnsmasq_qps={b['qps'] / m['qps'] if m['qps'] else float('nan'):.2f}")
        print(f"berth_dns_p99_ms={b['p99']:.3f}")
        print(f"dnsmasq_p99_ms={m['p99']:.3f}")

        if args.load:
            moto_port = free_port()
            moto = subprocess.Popen([args.python, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                                     str(moto_port)], stdout=subprocess.DEVNULL,
                                    stderr=open(work / "moto.log", "wb"))
            procs.append(moto)
            moto_endpoint = f"http://127.0.0.1:{moto_port}"
            wait_health(moto_endpoint, "/moto-api/")
            populate(moto_endpoint, min(args.services, 10), args.instances,
                     vpc="vpc-0123456789abcdef0")
            print()
            print(f"DiscoverInstances (svc0, {args.instances} instances), {args.seconds} s each")
            print(f"{'server':<8} {'clients':>7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
            for clients in (1, 16):
                for name, ep in (("berth", endpoint), ("moto", moto_endpoint)):
                    r = discover_instances(args.load, ep, name, clients, args.seconds)
                    if r:
                        print(f"{name:<8} {clients:>7} {r['rps']:>9,.0f} {r['p50_ms']:>8.3f} "
                              f"{r['p99_ms']:>8.3f} {r['errors']:>6}")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
