"""Emulated WAN links between network namespaces: the topology of the WAN tests and benchmark.

    links = [Link("za", "zb", delay_ms=5), Link("src", "zb", delay_ms=40, loss_pct=1)]
    with Wan(["src", "za", "zb"], links) as wan:
        moto = wan.spawn("src", [sys.executable, "-m", "moto.server", "-H", wan.addr("src"), ...])
        ...

Every name gets a network namespace (unique per run: ``awan<pid>-<tag>-<name>``) with one
interface ``eth0`` and one address of a /24 chosen at run time among free ``10.x.y.0/24``.
All of them, and the namespace this process runs in (address ``wan.root_addr``), hang off one
bridge that lives in a namespace of its own (``...-hub``), so nothing of the machine's own
firewall or routing is involved. Traffic between the test process and any namespace is never
impaired; traffic between two namespaces follows its ``Link`` (one-way delay, loss and rate,
each applied in both directions). A pair without a ``Link`` is unimpaired.

Impairments are applied on the **receiving side**, per sender address (delaying on the
sender's egress lets TCP small queues throttle the flow to a trickle):

* where the kernel has netem: the receiver's ingress redirects the sender's packets to an
  ``ifb`` device whose root qdisc is ``netem delay D loss L% rate R`` (segmentation offload is
  then off on the namespaces' interfaces: netem would drop whole 64 KiB GSO bursts);
* otherwise: ``tbf`` on such an ``ifb`` for the rate; an NFQUEUE rule (mangle table, INPUT)
  hands the sender's packets to a delayer process (``tests/wan/delayer.py``) that holds each
  for ``D`` ms (the kernel splits GSO bursts into wire-sized packets before queueing them); and
  an iptables ``statistic`` rule (filter table, INPUT: after the delayer lets a packet go)
  drops the fraction ``L`` of those packets.

Closing the ``Wan`` (also after a failure) kills every process it started by PID (and anything
else still running inside its namespaces), then deletes the namespaces: their interfaces,
qdiscs and iptables rules go with them. Namespaces left behind by a run whose process died are
removed by the next run.

Needs root, iproute2, and either netem or iptables + NetfilterQueue (``.ci/wan.sh``).
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.harness import REPO, LocalCluster, Node

PREFIX = "awan"
LOCK = Path(tempfile.gettempdir()) / "aisync-wan.lock"


@dataclass(frozen=True)
class Link:
    """An emulated link between two namespaces; every figure applies to each direction."""
    a: str
    b: str
    delay_ms: float = 0.0            # one way
    loss_pct: float = 0.0
    rate_mbit: float | None = None


def sh(cmd: Sequence[str], ns: str | None = None, check: bool = True) -> str:
    """Run a command (inside namespace ``ns`` if given); its stdout, or a clear error."""
    argv = ["ip", "netns", "exec", ns, *cmd] if ns else list(cmd)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if check and done.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed ({done.returncode}): "
                           f"{done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def environment_problem() -> str | None:
    """Why network namespaces cannot be used here (not root, no ``ip netns``), else None."""
    if os.geteuid() != 0:
        return "needs root: creates network namespaces, veth pairs, qdiscs and iptables rules"
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "needs iproute2 (`ip`, `tc`)"
    name = f"{PREFIX}{os.getpid()}-probe{uuid.uuid4().hex[:4]}"
    done = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if done.returncode != 0:
        return f"`ip netns add` does not work here: {done.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def netem_available() -> bool:
    """Whether ``tc qdisc add ... netem`` works on this kernel (tried in a scratch namespace)."""
    name = f"{PREFIX}{os.getpid()}-probe{uuid.uuid4().hex[:4]}"
    sh(["ip", "netns", "add", name])
    try:
        done = subprocess.run(["tc", "-n", name, "qdisc", "add", "dev", "lo", "root", "netem",
                               "delay", "1ms"], capture_output=True)
        return done.returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def fallback_problem() -> str | None:
    """What the netem-less emulation misses here (iptables, NetfilterQueue), else None."""
    if shutil.which("iptables") is None:
        return "no netem and no iptables: run .ci/wan.sh (apt-get install iptables)"
    try:
        import netfilterqueue  # noqa: F401
    except ImportError as exc:
        return f"no netem and no NetfilterQueue ({exc}): run .ci/wan.sh"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _namespaces() -> list[str]:
    return [line.split()[0] for line in sh(["ip", "netns", "list"]).splitlines() if line.strip()]


def _kill_inside(ns: str) -> None:
    """Kill what still runs in one of our namespaces (by PID), so that deleting it frees it."""
    pids = [int(p) for p in sh(["ip", "netns", "pids", ns], check=False).split()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def reap_stale() -> None:
    """Delete namespaces (and log directories) of earlier runs whose process is gone."""
    for ns in _namespaces():
        m = re.match(rf"{PREFIX}(\d+)-", ns)
        if m and not _alive(int(m.group(1))):
            _kill_inside(ns)
            sh(["ip", "netns", "del", ns], check=False)
            if ns.endswith("-hub"):  # the root end of its veth normally goes with it
                sh(["ip", "link", "del", f"aw{ns.split('-')[1]}"], check=False)
    for workdir in Path(tempfile.gettempdir()).glob(f"aisync-wan-{PREFIX}*"):
        m = re.match(rf"aisync-wan-{PREFIX}(\d+)-", workdir.name)
        if m and not _alive(int(m.group(1))):
            shutil.rmtree(workdir, ignore_errors=True)


def _used_networks() -> list[ipaddress.IPv4Network]:
    nets = []
    for line in sh(["ip", "-4", "route", "show", "table", "all"]).splitlines():
        word = line.split()[0] if line.split() else ""
        if word in ("local", "broadcast", "unicast") and len(line.split()) > 1:
            word = line.split()[1]
        with contextlib.suppress(ValueError):
            nets.append(ipaddress.ip_network(word, strict=False))
    return nets


def _free_subnet() -> ipaddress.IPv4Network:
    used = _used_networks()
    for _ in range(200):
        net = ipaddress.ip_network(f"10.{random.randint(200, 254)}.{random.randint(0, 255)}.0/24")
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return net
    raise RuntimeError("no free 10.x.y.0/24 for the emulated network")


class Wan:
    """Namespaces on one bridge with emulated links between them (a context manager)."""

    def __init__(self, names: Sequence[str], links: Sequence[Link] = (), *,
                 netem: bool | None = None) -> None:
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate names in {names}")
        for link in links:
            if link.a not in names or link.b not in names:
                raise ValueError(f"link {link} names an unknown namespace")
        self.names, self.links, self.want_netem = list(names), list(links), netem
        self.tag = uuid.uuid4().hex[:6]
        self.base = f"{PREFIX}{os.getpid()}-{self.tag}"
        self.hub = f"{self.base}-hub"
        self.root_if = f"aw{self.tag}"
        self.workdir = Path(tempfile.mkdtemp(prefix=f"aisync-wan-{self.base}-"))  # logs
        self.mode = ""
        self.root_addr = ""
        self._addrs: dict[str, str] = {}
        self._created: list[str] = []
        self._procs: list[subprocess.Popen] = []

    # -- naming --
    def ns(self, name: str) -> str:
        return f"{self.base}-{name}"

    def addr(self, name: str) -> str:
        return self._addrs[name]

    def prefix(self, name: str) -> list[str]:
        """The command prefix that runs a program inside namespace ``name``."""
        return ["ip", "netns", "exec", self.ns(name)]

    # -- set up and tear down --
    def __enter__(self) -> Wan:
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _setup(self) -> None:
        reap_stale()
        use_netem = netem_available() if self.want_netem is None else self.want_netem
        self.mode = "netem" if use_netem else "tbf+iptables+nfqueue"
        if not use_netem and (problem := fallback_problem()):
            raise RuntimeError(problem)
        with open(LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two runs never pick the same subnet
            net = _free_subnet()
            hosts = list(net.hosts())
            self.root_addr = str(hosts[0])
            self._addrs = {n: str(hosts[9 + i]) for i, n in enumerate(self.names)}
            self._netns_add(self.hub)
            sh(["ip", "-n", self.hub, "link", "set", "lo", "up"])
            sh(["ip", "-n", self.hub, "link", "add", "br0", "type", "bridge"])
            sh(["ip", "-n", self.hub, "link", "set", "br0", "up"])
            sh(["ip", "link", "add", self.root_if, "type", "veth", "peer", "name", "proot",
                "netns", self.hub])
            self._to_bridge("proot")
            sh(["ip", "addr", "add", f"{self.root_addr}/24", "dev", self.root_if])
            sh(["ip", "link", "set", self.root_if, "up"])
        for i, name in enumerate(self.names):
            ns = self.ns(name)
            self._netns_add(ns)
            sh(["ip", "-n", self.hub, "link", "add", f"p{i}", "type", "veth", "peer", "name",
                "eth0", "netns", ns])
            self._to_bridge(f"p{i}")
            sh(["ip", "-n", ns, "link", "set", "lo", "up"])
            sh(["ip", "-n", ns, "addr", "add", f"{self.addr(name)}/24", "dev", "eth0"])
            if self.mode == "netem":  # netem drops whole 64 KiB GSO bursts: send wire packets
                sh(["ip", "-n", ns, "link", "set", "eth0", "gso_max_size", "1500",
                    "gso_max_segs", "1"])
            sh(["ip", "-n", ns, "link", "set", "eth0", "up"])
        for link in self.links:
            self._impair(link.b, link.a, link)
            self._impair(link.a, link.b, link)

    def _netns_add(self, ns: str) -> None:
        sh(["ip", "netns", "add", ns])
        self._created.append(ns)

    def _to_bridge(self, port: str) -> None:
        sh(["ip", "-n", self.hub, "link", "set", port, "master", "br0", "up"])

    def _impair(self, receiver: str, sender: str, link: Link) -> None:
        """Apply ``link`` to the packets ``receiver`` gets from ``sender``, on arrival."""
        ns, src = self.ns(receiver), f"{self.addr(sender)}/32"
        index = self.names.index(sender) + 1        # unique per receiver: ifb, queue number
        rate = link.rate_mbit
        if self.mode == "netem":
            spec = ["limit", "1000000"]
            if link.delay_ms:
                spec += ["delay", f"{link.delay_ms}ms"]
            if link.loss_pct:
                spec += ["loss", f"{link.loss_pct}%"]
            if rate:
                spec += ["rate", f"{rate}mbit"]
            self._redirect_to_ifb(ns, src, index, ["netem", *spec])
            return
        if rate:
            burst = max(16 * 1024, int(rate * 1e6 / 8 / 100))      # 10 ms worth of bytes
            self._redirect_to_ifb(ns, src, index, ["tbf", "rate", f"{rate}mbit", "burst",
                                                   str(burst), "latency", "400ms"])
        if link.loss_pct or link.delay_ms:
            # The queue (mangle table) hands the delayer wire-sized packets: the kernel splits
            # a GSO burst before queueing it. The loss rule (filter table, a later hook) then
            # sees each packet as the delayer lets it go.
            self._start_delayer(receiver, index, link.delay_ms)
            sh(["iptables", "-w", "-t", "mangle", "-A", "INPUT", "-s", src, "-j", "NFQUEUE",
                "--queue-num", str(index)], ns=ns)
        if link.loss_pct:
            sh(["iptables", "-w", "-A", "INPUT", "-s", src, "-m", "statistic", "--mode",
                "random", "--probability", str(link.loss_pct / 100), "-j", "DROP"], ns=ns)

    def _redirect_to_ifb(self, ns: str, src: str, index: int, qdisc: list[str]) -> None:
        ifb = f"ifb{index}"
        sh(["ip", "-n", ns, "link", "add", ifb, "type", "ifb"])
        sh(["ip", "-n", ns, "link", "set", ifb, "up"])
        sh(["tc", "-n", ns, "qdisc", "replace", "dev", "eth0", "handle", "ffff:", "ingress"])
        sh(["tc", "-n", ns, "filter", "add", "dev", "eth0", "parent", "ffff:", "protocol", "ip",
            "prio", str(index), "u32", "match", "ip", "src", src, "action", "mirred", "egress",
            "redirect", "dev", ifb])
        sh(["tc", "-n", ns, "qdisc", "add", "dev", ifb, "root", *qdisc])

    def _start_delayer(self, receiver: str, queue: int, delay_ms: float) -> None:
        log = self.workdir / f"delayer-{receiver}-{queue}.log"
        proc = self.spawn(receiver, [sys.executable, "-m", "tests.wan.delayer", "--queue",
                                     str(queue), "--delay-ms", str(delay_ms)],
                          log=log, stdout=subprocess.PIPE)
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline().decode() if ready else ""
        if not line.startswith("ready"):
            proc.kill()
            raise RuntimeError(f"delayer for queue {queue} in {receiver} did not start: "
                               f"{log.read_text(errors='replace')[-2000:]}")

    def spawn(self, name: str, argv: Sequence[str], *, log: Path | None = None,
              env: dict[str, str] | None = None, stdout=None) -> subprocess.Popen:
        """Start ``argv`` inside namespace ``name``; it is killed (by PID) when the Wan closes.
        ``ip netns exec`` execs the program itself, so the PID is the program's."""
        env = dict(os.environ if env is None else env)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        log = log or self.workdir / f"{name}-{len(self._procs)}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen([*self.prefix(name), *argv], stdin=subprocess.DEVNULL,
                                    stdout=stdout or out, stderr=out, env=env, cwd=REPO,
                                    start_new_session=True)
        self._procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in reversed(self._procs):
            stop_process(proc)
        self._procs.clear()
        for ns in reversed(self._created):
            _kill_inside(ns)
            sh(["ip", "netns", "del", ns], check=False)
        self._created.clear()
        if self.root_if and Path(f"/sys/class/net/{self.root_if}").exists():
            sh(["ip", "link", "del", self.root_if], check=False)
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- measuring --
    def connect_times(self, frm: str, to: str, port: int, samples: int = 5) -> list[float]:
        """Seconds that ``samples`` TCP connects from namespace ``frm`` to ``to``:port take (a
        connect is one round trip; ``ping`` under-reports an NFQUEUE delay)."""
        code = ("import json, socket, sys, time\n"
                "out = []\n"
                "for _ in range(int(sys.argv[3])):\n"
                "    t = time.perf_counter()\n"
                "    socket.create_connection((sys.argv[1], int(sys.argv[2])), 30).close()\n"
                "    out.append(time.perf_counter() - t)\n"
                "print(json.dumps(out))\n")
        return json.loads(sh([sys.executable, "-c", code, self.addr(to), str(port),
                              str(samples)], ns=self.ns(frm)))

    def drops(self, receiver: str, sender: str) -> int:
        """Packets from ``sender`` that the loss emulation dropped on arrival at ``receiver``."""
        ns = self.ns(receiver)
        if self.mode == "netem":
            ifb = f"ifb{self.names.index(sender) + 1}"
            stats = sh(["tc", "-s", "-n", ns, "qdisc", "show", "dev", ifb])
            return sum(int(n) for n in re.findall(r"dropped (\d+)", stats))
        rules = sh(["iptables", "-w", "-L", "INPUT", "-v", "-x", "-n"], ns=ns)
        return sum(int(cols[0]) for cols in (line.split() for line in rules.splitlines())
                   if len(cols) > 7 and cols[2] == "DROP" and cols[7] == self.addr(sender))


def stop_process(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process by its PID, SIGKILL it if it outlives ``grace`` seconds."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=grace)
    if proc.stdout:
        proc.stdout.close()


def wait_tcp(host: str, port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None,
             ) -> None:
    """Until something accepts TCP connections on host:port (or ``proc`` exited)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {host}:{port} "
                               "accepted connections")
        try:
            socket.create_connection((host, port), 1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{host}:{port} did not accept connections in {timeout}s") from None
            time.sleep(0.05)


# -- aisync clusters inside a namespace --

@dataclass
class NamespaceNode(Node):
    host: str = field(default="127.0.0.1")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


class NamespaceCluster(LocalCluster):
    """A ``LocalCluster`` whose node processes run inside one namespace of a ``Wan``, listening
    on (and advertising) that namespace's address, reachable from this process and from the
    other namespaces."""

    def __init__(self, wan: Wan, name: str, **kwargs) -> None:
        self.wan, self.zone, self.host = wan, name, wan.addr(name)
        super().__init__(**kwargs)

    def _add(self, node_id: str, role: str, port: int, mountpaths: int) -> None:
        super()._add(node_id, role, port, mountpaths)
        node = self.nodes[-1]
        cfg = yaml.safe_load(node.config.read_text())
        cfg["host"] = self.host   # the primary's URL in the others is already ours (url below)
        node.config.write_text(yaml.safe_dump(cfg))
        self.nodes[-1] = NamespaceNode(node.id, node.role, node.port, node.dir, node.config,
                                       host=self.host)

    def start_node(self, node: Node) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AISYNC_")}
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        with open(node.log, "ab") as log:
            node.process = subprocess.Popen(
                [*self.wan.prefix(self.zone), sys.executable, "-m", "aisync", "node",
                 "--config", str(node.config)],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.base,
                start_new_session=True)
