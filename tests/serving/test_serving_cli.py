"""`sharelens-serve predict`: a readable answer, or one error line and exit status 2."""

from __future__ import annotations

from serving.cli import main


def test_predict_prints_a_readable_answer(serving_models_dir, capsys) -> None:
    rc = main(["predict", "转发抽奖！关注@小明 并转发，周五抽3位送蓝牙耳机 #抽奖#", "--explain",
               "--models-dir", str(serving_models_dir)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "利益驱动" in out and "寻求帮助" in out and "%" in out
    assert "Engagement tier:" in out and "Top words" in out
    assert out.count("%") >= 10


def test_predict_reports_truncation(serving_models_dir, capsys) -> None:
    rc = main(["predict", "转发抽奖关注微博" * 40, "--models-dir", str(serving_models_dir)])
    assert rc == 0
    assert "more than the model window of 64" in capsys.readouterr().out


def test_empty_text_is_one_line_and_exit_2(serving_models_dir, capsys) -> None:
    rc = main(["predict", "   ", "--models-dir", str(serving_models_dir)])
    captured = capsys.readouterr()
    assert rc == 2
    assert captured.out == ""
    assert captured.err == "Error E401: text must not be empty or whitespace\n"


def test_unknown_model_is_one_line_and_exit_2(serving_models_dir, capsys) -> None:
    rc = main(["predict", "转发抽奖", "--model", "nope", "--models-dir", str(serving_models_dir)])
    assert rc == 2
    assert capsys.readouterr().err == "Error E409: unknown model version or alias: nope\n"


# -- `serve`: the limits reach uvicorn ---------------------------------------------------------------
def _served_with(monkeypatch, **env: str) -> dict:
    """What `sharelens-serve serve` hands to uvicorn.run (nothing is started)."""
    import uvicorn

    from serving import cli

    seen: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: seen.update(app=app, **kwargs))
    monkeypatch.setattr(cli, "_exit_quietly_after_drain", lambda: None)
    for key, value in env.items():
        monkeypatch.setenv(f"SHARELENS_{key}", value)
    assert main(["serve"]) == 0
    return seen


def test_serve_bounds_connections_headers_idle_time_and_shutdown(monkeypatch) -> None:
    import uvicorn

    seen = _served_with(monkeypatch)
    config = uvicorn.Config(seen.pop("app"), **seen)  # built as uvicorn.run builds it, not started
    assert config.http == "serving.protocol:HeadTimeoutH11Protocol"  # h11: httptools would ignore the header cap
    assert config.h11_max_incomplete_event_size == 16 * 1024
    assert config.limit_concurrency == 512
    assert config.timeout_keep_alive == 5
    assert config.timeout_graceful_shutdown == 20
    seen = _served_with(monkeypatch, MAX_CONNECTIONS="64", MAX_HEADER_BYTES="8192", KEEP_ALIVE_TIMEOUT_S="2",
                        SHUTDOWN_TIMEOUT_S="7")
    config = uvicorn.Config(seen.pop("app"), **seen)
    assert (config.limit_concurrency, config.h11_max_incomplete_event_size, config.timeout_keep_alive,
            config.timeout_graceful_shutdown) == (64, 8192, 2, 7)


def test_an_oversize_header_is_refused_by_the_server(uvicorn_in_a_thread) -> None:
    """The options above on a real uvicorn (a trivial app, in a thread): a 1 KiB header passes,
    the 1 MiB one of the review is refused by uvicorn before any app code runs. (A head that
    lands in one read of the socket passes uvicorn's cap: the app's own 431 is tested in
    test_serving_security.)"""
    import socket

    app, calls = _trivial_app()
    with uvicorn_in_a_thread(app) as port:
        def status(header_bytes: int) -> int | None:
            """The answer's status, or None when the server cut the connection before answering."""
            request = f"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: {'a' * header_bytes}\r\nConnection: close\r\n\r\n".encode()
            reply = b""
            with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                try:
                    conn.sendall(request)
                    while chunk := conn.recv(65536):
                        reply += chunk
                except (ConnectionResetError, BrokenPipeError):
                    pass
            return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else None

        assert status(1024) == 200 and calls == [1]
        assert status(1024 * 1024) in (400, 431, None)
        assert calls == [1]  # the app never saw it


def _read_response(conn) -> bytes:  # noqa: ANN001 - a socket
    """One whole HTTP/1.1 response: the head and its Content-Length body, however the server's writes
    were split into segments (under load the body can arrive after the head, in a later recv)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = conn.recv(65536)
        assert chunk, "connection closed inside the body"
        body += chunk
    return head + b"\r\n\r\n" + body


def test_a_request_head_that_does_not_arrive_in_time_is_cut(uvicorn_in_a_thread) -> None:
    """Slowloris: a connection that sends part of a request head and stalls is closed after the
    head deadline, while a complete request, and a second one on the same keep-alive connection,
    are answered; the app never sees the stalled one."""
    import functools
    import socket
    import time

    from serving.protocol import HeadTimeoutH11Protocol

    app, calls = _trivial_app()
    with uvicorn_in_a_thread(app, timeout_keep_alive=30,
                             http=functools.partial(HeadTimeoutH11Protocol, header_timeout_s=0.5)) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_response(conn).startswith(b"HTTP/1.1 200")
            time.sleep(0.3)  # within the deadline, the next request on the same connection
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_response(conn).startswith(b"HTTP/1.1 200")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            started = time.monotonic()
            conn.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")  # and never the rest
            assert conn.recv(65536) == b""  # closed by the server
            assert 0.4 < time.monotonic() - started < 5
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_response(conn).startswith(b"HTTP/1.1 200")
            started = time.monotonic()
            conn.sendall(b"GET / HTTP/1.1\r\nHo")  # a keep-alive connection's next head stalls too
            assert conn.recv(65536) == b""
            assert time.monotonic() - started < 5
        assert len(calls) == 3



def _trivial_app():
    """An ASGI app answering 200 "ok", and the list that grows by one per request it saw."""
    calls: list[int] = []

    async def app(scope, receive, send) -> None:
        calls.append(1)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    return app, calls
