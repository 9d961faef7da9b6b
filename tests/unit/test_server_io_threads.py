"""The server's ZeroMQ I/O threads: client connections on one, the backends' on the other, so a
storm of client handshakes (thousands of clients reconnecting after a failover) does not delay
the backends' answers until the leader thinks them down (bench/connect_storm.py)."""

from __future__ import annotations

import dataclasses

import zmq

from tmr.server.service import BACKEND_IO, CLIENT_IO, IO_THREADS, ServerService


def test_client_and_backend_sockets_have_an_io_thread_each(svc: ServerService) -> None:
    svc.cfg = dataclasses.replace(svc.cfg, client_listen="tcp://127.0.0.1:*")
    svc._open()
    try:
        assert svc.ctx.get(zmq.IO_THREADS) == IO_THREADS >= 2
        assert CLIENT_IO and BACKEND_IO and CLIENT_IO & BACKEND_IO == 0
        assert max(CLIENT_IO, BACKEND_IO) < 1 << IO_THREADS  # both name a thread that exists
        assert svc.client.getsockopt(zmq.AFFINITY) == CLIENT_IO
        assert len(svc.dealers) == 3
        for dealer in svc.dealers.values():
            assert dealer.getsockopt(zmq.AFFINITY) == BACKEND_IO
    finally:
        for s in [svc.client, svc.ctl, *svc.dealers.values()]:
            s.close(linger=0)
        svc.web.close()
        svc.zap.close()
        svc.cfg.ctl_socket.unlink(missing_ok=True)
