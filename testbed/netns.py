"""Network namespaces for the testbed: a server namespace and a client namespace joined by a veth pair,
with `tc` shaping rate (tbf; netem when loss is asked) of the uplink (client -> server, on the client's end)
and of the downlink (server -> client, on the server's end). Needs root and `ip`/`tc`.

With propagation delay or a bandwidth trace (`Shape.delay_ms`, `Shape.trace`), the namespaces are joined
instead by a TUN device in each and the user-space delay line (testbed/delayline.py: rate or Mahimahi
trace, then the one-way delay), since this kernel has no sch_netem.

Names carry a `evb<pid>x<rand>` stem, so parallel runs never collide and leftovers of dead
processes are recognised and removed (`cleanup_leftovers`). `Netns` is a context manager that
tears everything down even when the body raises.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

PREFIX = "evb"
_NAME = re.compile(rf"^{PREFIX}(\d+)x([0-9a-f]+)-[sc]$")


class NetnsUnavailable(RuntimeError):
    """Namespaces cannot be made here (not root, no `ip`/`tc`, or the kernel refuses)."""


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {p.stderr.strip() or p.stdout.strip()}")
    return p


def unavailable_reason() -> str | None:
    """None when namespaces and tc work here, else why not (for pytest skips and CLI errors)."""
    if os.name != "posix" or os.geteuid() != 0:
        return "the testbed needs root (network namespaces and tc)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"`{tool}` (iproute2) is not installed"
    name = f"{PREFIX}{os.getpid()}xprobe-s"
    p = _run("ip", "netns", "add", name, check=False)
    if p.returncode != 0:
        return f"`ip netns add` fails here: {p.stderr.strip()}"
    _run("ip", "netns", "del", name, check=False)
    return None


def netem_missing_reason() -> str | None:
    """None when the kernel has sch_netem (needed for delay and loss), else why not."""
    name = f"{PREFIX}{os.getpid()}xprobe-s"
    _run("ip", "netns", "add", name, check=False)
    try:
        p = _run("ip", "netns", "exec", name, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
                 check=False)
        return None if p.returncode == 0 else f"tc netem is unavailable ({p.stderr.strip()})"
    finally:
        _run("ip", "netns", "del", name, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_leftovers() -> list[str]:
    """Delete testbed namespaces whose creating process is gone; returns their names."""
    p = _run("ip", "netns", "list", check=False)
    removed = []
    for line in p.stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        m = _NAME.match(name)
        if m and not _alive(int(m.group(1))):
            _run("ip", "netns", "del", name, check=False)
            removed.append(name)
    return removed


@dataclass
class Shape:
    rate_mbit: float
    delay_ms: float = 0.0
    loss_pct: float = 0.0
    #: a Mahimahi trace file: packets leave on its delivery opportunities (the delay line)
    trace: str | None = None
    #: the delay line's drop-tail queue
    queue_bytes: int = 1 << 20
    #: per-flow access hops in front of the shared link (the delay line), Mbit/s
    access_mbps: float | None = None

    @property
    def needs_netem(self) -> bool:
        return self.loss_pct > 0

    @property
    def needs_delay_line(self) -> bool:
        return self.delay_ms > 0 or self.trace is not None or self.access_mbps is not None

    def delay_line_spec(self) -> dict:
        spec = {"delay_ms": self.delay_ms, "queue_bytes": self.queue_bytes}
        if self.access_mbps is not None:
            spec["access_mbps"] = self.access_mbps
        return {**spec, "trace": self.trace} if self.trace else {**spec, "rate_mbps": self.rate_mbit}

    def qdisc_args(self) -> list[str]:
        """tbf (rate only) when no delay/loss is asked, so kernels without sch_netem still shape."""
        if not self.needs_netem:
            burst = max(1600, int(self.rate_mbit * 1e6 / 8 / 250))
            return ["tbf", "rate", f"{self.rate_mbit}mbit", "burst", str(burst), "limit", "4mb"]
        args = ["netem", "rate", f"{self.rate_mbit}mbit", "limit", "100000"]
        if self.delay_ms > 0:
            args += ["delay", f"{self.delay_ms}ms"]
        if self.loss_pct > 0:
            args += ["loss", f"{self.loss_pct}%"]
        return args


class Netns:
    """`with Netns(uplink, downlink) as ns:` -> ns.server / ns.client namespace names, ns.server_ip."""

    def __init__(self, uplink: Shape, downlink: Shape):
        self.uplink, self.downlink = uplink, downlink
        #: TUN devices + the delay line instead of veth + tc (propagation delay or a trace asked)
        self.delay_line = uplink.needs_delay_line or downlink.needs_delay_line
        self._line = None  # the delay line process
        tag = f"{os.getpid()}x{random.getrandbits(24):06x}"
        self.server, self.client = f"{PREFIX}{tag}-s", f"{PREFIX}{tag}-c"
        short = f"{random.getrandbits(32):08x}"
        self.veth_s, self.veth_c = f"ev{short}s", f"ev{short}c"
        octet = random.randint(1, 250)
        self.server_ip, self.client_ip = f"10.213.{octet}.1", f"10.213.{octet}.2"
        self._made: list[str] = []

    def exec_prefix(self, ns: str) -> list[str]:
        return ["ip", "netns", "exec", ns]

    def __enter__(self) -> "Netns":
        reason = unavailable_reason()
        if reason:
            raise NetnsUnavailable(reason)
        if self.uplink.needs_netem or self.downlink.needs_netem:
            if self.delay_line:
                raise NetnsUnavailable("loss_pct is not emulated by the delay line (propagation or a trace); "
                                       "set it to 0")
            reason = netem_missing_reason()
            if reason:
                raise NetnsUnavailable(f"network loss_pct needs netem, but {reason}; set it to 0")
        cleanup_leftovers()
        try:
            for ns in (self.server, self.client):
                _run("ip", "netns", "add", ns)
                self._made.append(ns)
                _run("ip", "-n", ns, "link", "set", "lo", "up")
            if self.delay_line:
                self._tun_link()
                return self
            _run("ip", "link", "add", self.veth_s, "type", "veth", "peer", "name", self.veth_c)
            _run("ip", "link", "set", self.veth_s, "netns", self.server)
            _run("ip", "link", "set", self.veth_c, "netns", self.client)
            for ns, dev, ip in ((self.server, self.veth_s, self.server_ip), (self.client, self.veth_c, self.client_ip)):
                _run("ip", "-n", ns, "addr", "add", f"{ip}/30", "dev", dev)
                _run("ip", "-n", ns, "link", "set", dev, "up")
                # No segmentation offloads: netem then sees wire-sized packets.
                _run("ip", "netns", "exec", ns, "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off",
                     check=False)
            _run("ip", "netns", "exec", self.client, "tc", "qdisc", "add", "dev", self.veth_c, "root",
                 *self.uplink.qdisc_args())
            _run("ip", "netns", "exec", self.server, "tc", "qdisc", "add", "dev", self.veth_s, "root",
                 *self.downlink.qdisc_args())
        except BaseException:
            self.teardown()
            raise
        return self

    def _tun_link(self) -> None:
        """A TUN device in each namespace (point-to-point addresses) and the delay line between them."""
        for ns, dev, ip, peer in ((self.server, self.veth_s, self.server_ip, self.client_ip),
                                  (self.client, self.veth_c, self.client_ip, self.server_ip)):
            _run("ip", "-n", ns, "tuntap", "add", "dev", dev, "mode", "tun")
            _run("ip", "-n", ns, "addr", "add", ip, "peer", peer, "dev", dev)
            _run("ip", "-n", ns, "link", "set", dev, "mtu", "1500", "up")
        self._spec = Path(tempfile.mkdtemp(prefix="evb-line-")) / "line.json"
        self._spec.write_text(json.dumps({"a_ns": self.client, "a_dev": self.veth_c, "b_ns": self.server,
                                          "b_dev": self.veth_s, "up": self.uplink.delay_line_spec(),
                                          "down": self.downlink.delay_line_spec()}))
        self._line = subprocess.Popen([sys.executable, "-m", "edgevlm.testbed.delayline", str(self._spec)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = self._line.stdout.readline().split()
        if not first or first[0] != "ready":
            err = self._line.communicate(timeout=10)[1]
            raise RuntimeError(f"the delay line did not start: {err.strip()[-500:]}")
        self.line_t0 = float(first[1])  # time.time() at which a trace's time 0 is

    def restart_traces_at(self, wall_s: float) -> None:
        """Make the delay line's traces start over (trace time 0) at `wall_s` (time.time())."""
        if self._line is None:
            raise RuntimeError("no delay line: restart_traces_at needs propagation or a trace")
        Path(str(self._spec) + ".epoch").write_text(repr(wall_s))
        self._line.send_signal(signal.SIGUSR1)
        self.line_t0 = wall_s

    def delay_line_stats(self) -> dict | None:
        """The delay line's counters (packets, bytes, drops per direction), after teardown; None without one."""
        p = Path(str(getattr(self, "_spec", "")) + ".stats")
        return json.loads(p.read_text()) if getattr(self, "_spec", None) and p.exists() else None

    def __exit__(self, *exc) -> None:
        self.teardown()

    def teardown(self) -> None:
        """Stop the delay line (if any), delete both namespaces (the veth pair or the TUN devices go
        with them); safe to call twice."""
        if self._line is not None:
            self._line.terminate()
            try:
                self._line.wait(5)
            except subprocess.TimeoutExpired:
                self._line.kill()
                self._line.wait()
            self._line = None
        for ns in self._made:
            _run("ip", "netns", "del", ns, check=False)
        self._made = []

    def tcp_stats(self, ns: str) -> dict[str, int]:
        """TCP segment counters (OutSegs, RetransSegs) of a namespace, from /proc/net/snmp."""
        p = _run("ip", "netns", "exec", ns, "cat", "/proc/net/snmp")
        lines = [l.split() for l in p.stdout.splitlines() if l.startswith("Tcp:")]
        stats = dict(zip(lines[0][1:], (int(v) for v in lines[1][1:])))
        return {"out_segs": stats.get("OutSegs", 0), "retrans_segs": stats.get("RetransSegs", 0)}

    def qdisc_bytes(self, ns: str, dev: str) -> int:
        """Bytes the shaping qdisc has sent (frames incl. IP/TCP headers)."""
        p = _run("ip", "netns", "exec", ns, "tc", "-s", "qdisc", "show", "dev", dev)
        m = re.search(r"Sent (\d+) bytes", p.stdout)
        return int(m.group(1)) if m else 0
