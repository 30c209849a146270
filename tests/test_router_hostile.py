"""The router against hostile clients: slow clients (slowloris) beside real traffic.

All on loopback: the slow clients connect from 127.0.0.2 (loopback too, but another client
address than the load generator's 127.0.0.1), a few hundred sockets at most, and each
Trickler stops by itself after TRICKLE_LIMIT_S.
"""

from __future__ import annotations

import select
import socket
import threading
import time

import httpx

from mlstack.ops.local.loadtest import run_load
from tests import test_router
from tests.test_router import router_info, wait_until

routed = test_router.routed  # the fixture: a router on loopback in front of test backends

SLOW_ADDRESS = "127.0.0.2"
TRICKLE_LIMIT_S = 90.0
HEAD = b"POST /predict HTTP/1.1\r\nHost: x\r\nX-Slow: "
BODY_HEAD = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{"


class Trickler:
    """Connections from `address` that each send `first`, then one byte `byte` every
    `every` seconds (none when `byte` is empty), from a thread, until the router closes them
    or `stop`. `closed` is how many the router closed (an end of file, or a reset)."""

    def __init__(self, port: int, count: int, first: bytes, byte: bytes = b"a",
                 every: float = 0.5, address: str = SLOW_ADDRESS) -> None:
        self.byte, self.every = byte, every
        self.socks: list[socket.socket] = []
        for _ in range(count):
            sock = socket.socket()
            sock.bind((address, 0))
            sock.settimeout(30)
            sock.connect(("127.0.0.1", port))
            sock.sendall(first)
            sock.setblocking(False)
            self.socks.append(sock)
        self.open = set(self.socks)
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def closed(self) -> int:
        with self.lock:
            return len(self.socks) - len(self.open)

    def _close(self, sock: socket.socket) -> None:
        with self.lock:
            self.open.discard(sock)

    def _run(self) -> None:
        ends = time.monotonic() + TRICKLE_LIMIT_S
        while not self.stopped.is_set() and time.monotonic() < ends:
            with self.lock:
                socks = list(self.open)
            if not socks:
                return
            readable, _, _ = select.select(socks, [], [], 0)
            for sock in readable:
                try:
                    if not sock.recv(65536):  # an answer (503, 408) is read and dropped
                        self._close(sock)
                except OSError:
                    self._close(sock)
            for sock in socks:
                if self.byte and sock in self.open:
                    try:
                        sock.send(self.byte)
                    except BlockingIOError:
                        pass
                    except OSError:
                        self._close(sock)
            self.stopped.wait(self.every)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(30)
        for sock in self.socks:
            sock.close()


def assert_served(port: int) -> None:
    """Real traffic from 127.0.0.1, 20 requests a second for 2 s: every request sent is
    answered 200 (on a busy machine the load generator may leave some unsent, which says
    nothing of the router; the first 8 are always sent)."""
    result = run_load(f"http://127.0.0.1:{port}/predict", [{"x": 1}], duration=2.0, rate=20)
    sent = result.total["requests"] - result.unsent
    assert sent >= 8 and result.unanswered == 0, (result.statuses, result.contention)
    assert result.statuses == {200: sent}, (result.statuses, result.contention)


def test_slow_clients_of_one_address_cannot_take_every_connection(routed):
    """300 trickling connections from one address, against a router serving at most 200
    connections, 50 from one address: 50 are held and 250 refused at once, and the others'
    requests are all answered 200 meanwhile (without the cap per address, the trickling
    connections take all 200 slots and every new connection of the load gets 503). The
    deadlines are long here: the cap is what is judged."""
    port, set_weights, _ = routed
    set_weights({"v1": 100}, {"max_connections": 200, "max_connections_per_address": 50,
                              "header_timeout_s": 120.0})
    slow = Trickler(port, 300, HEAD, every=1.0)
    try:
        wait_until(lambda: slow.closed >= 250, 30, "the connections over the cap refused")
        info = router_info(port)
        assert info["connections_by_address"][SLOW_ADDRESS] == 50, info
        # refused at once, or let in and then ended for a newer one (when stalled)
        assert info["refused_connections"] + info["evicted_connections"] >= 250, info
        assert_served(port)
        info = router_info(port)
        assert info["connections_by_address"][SLOW_ADDRESS] == 50, info  # still held
    finally:
        slow.stop()
    wait_until(lambda: SLOW_ADDRESS not in router_info(port)["connections_by_address"], 30,
               "the slow connections gone")


IDLE_S = 25.0


def test_slow_and_idle_clients_are_closed_by_their_deadlines(routed):
    """Connections sending a request's headers or body a byte every half second (each read
    gets a byte long before any per-read timeout) are closed by their deadlines (3 s from
    the first byte) while the trickling goes on, before the connections that send nothing
    and a keep-alive connection idle after its answer are (after 25 s idle); none is
    forwarded, and real traffic is served all along."""
    port, set_weights, servers = routed
    set_weights({"v1": 100}, {"header_timeout_s": 3.0, "body_timeout_s": 3.0,
                              "idle_timeout_s": IDLE_S})
    slow_heads = Trickler(port, 150, HEAD)
    slow_bodies = Trickler(port, 30, BODY_HEAD)
    silent = Trickler(port, 20, b"", byte=b"")
    kept_alive = Trickler(port, 1, b"GET /-/router HTTP/1.1\r\nHost: x\r\n\r\n", byte=b"")
    every = (slow_heads, slow_bodies, silent, kept_alive)
    try:
        assert_served(port)
        wait_until(lambda: all(t.closed == len(t.socks) for t in (slow_heads, slow_bodies)),
                   IDLE_S / 2, "the trickling connections closed")
        assert silent.closed == kept_alive.closed == 0  # their idle deadline is far
        wait_until(lambda: all(t.closed == len(t.socks) for t in every), IDLE_S + 30,
                   "the idle connections closed")
        assert SLOW_ADDRESS not in router_info(port)["connections_by_address"]
    finally:
        for trickler in every:
            trickler.stop()
    assert servers["v1"].requests == router_info(port)["admitted"]  # the load's alone


def test_slow_clients_on_the_same_address_give_way_to_real_ones(routed):
    """All local clients share 127.0.0.1, so the cap per address cannot tell a slow client
    from a real one there: when the cap is reached, a new connection ends the longest
    stalled one (a request head unfinished, or none sent, for a second or more) instead of
    being refused. 200 trickling connections from 127.0.0.1 against a cap of 50: the real
    traffic from 127.0.0.1 is all answered 200 (without the eviction, all its new
    connections get 503), and its kept-alive connections are never ended."""
    port, set_weights, _ = routed
    set_weights({"v1": 100}, {"max_connections_per_address": 50, "header_timeout_s": 120.0})
    slow = Trickler(port, 200, HEAD, every=1.0, address="127.0.0.1")
    try:
        wait_until(lambda: slow.closed >= 150, 30, "the connections over the cap ended")
        # the last let in are stalled only a second after they came: until then a new
        # connection is refused (while connecting, the slow ones ended each other too)
        wait_until(lambda: httpx.post(f"http://127.0.0.1:{port}/predict", json={},
                                      timeout=30).status_code == 200, 30, "a request served")
        assert_served(port)
        info = router_info(port)
        assert info["evicted_connections"] >= 1 and slow.closed < 200, info
    finally:
        slow.stop()
