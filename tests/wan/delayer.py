"""A packet delayer for kernels without netem: holds every packet of one NFQUEUE for a fixed time.

    ip netns exec NS python -m tests.wan.delayer --queue N --delay-ms D

An iptables rule in the same namespace sends the packets to the queue (on the receiving side,
e.g. ``iptables -A INPUT -s SENDER -j NFQUEUE --queue-num N``); this process binds the queue
(NetfilterQueue from PyPI, metadata only: the payload is never copied), notes when each packet
arrived, and accepts it ``D`` ms later. The delay is the same for every packet, so a FIFO is a
timer queue already: packets leave in the order they came (no reordering), and a packet that is
still held never blocks the reading of the ones behind it (the queue's socket is read
non-blocking, between releases).

It prints ``ready queue=N`` on stdout once bound (the caller adds the iptables rule after that:
without a listener the kernel drops queued packets) and stops on SIGTERM or SIGINT, releasing
what it still holds. Counters go to stderr on exit.
"""

from __future__ import annotations

import argparse
import collections
import os
import select
import signal
import sys
import time
import warnings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queue", type=int, required=True, help="NFQUEUE number")
    ap.add_argument("--delay-ms", type=float, required=True, help="how long to hold a packet")
    ap.add_argument("--max-len", type=int, default=200_000,
                    help="packets the kernel may hold for us before it drops")
    args = ap.parse_args(argv)

    from netfilterqueue import COPY_META, NetfilterQueue

    delay = args.delay_ms / 1000.0
    held: collections.deque = collections.deque()   # (due, packet), due non-decreasing
    counts = {"held": 0, "released": 0}

    def on_packet(pkt) -> None:
        held.append((time.monotonic() + delay, pkt))
        counts["held"] += 1

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    nfq = NetfilterQueue()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a smaller rcvbuf than asked is fine
        nfq.bind(args.queue, on_packet, max_len=args.max_len, mode=COPY_META,
                 sock_len=16 << 20)
    fd = nfq.get_fd()
    wake_r, wake_w = os.pipe()        # a signal wakes the poll below (which PEP 475 resumes)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    print(f"ready queue={args.queue}", flush=True)
    try:
        while not stopping:
            if held:
                wait_ms = max(0.0, (held[0][0] - time.monotonic()) * 1000.0)
                timeout = int(wait_ms) + (1 if wait_ms % 1 else 0)  # never wake up early
            else:
                timeout = None
            events = poller.poll(timeout)
            if any(ready == fd for ready, _ in events):
                nfq.run(block=False)  # reads every packet waiting, then returns
            now = time.monotonic()
            while held and held[0][0] <= now:
                held.popleft()[1].accept()
                counts["released"] += 1
    finally:
        while held:  # let what we still hold go rather than drop it
            held.popleft()[1].accept()
            counts["released"] += 1
        nfq.unbind()
        print(f"delayer queue={args.queue}: {counts['held']} packets held, "
              f"{counts['released']} released", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
