import http.client
import json
import os
import socket
import threading

import pytest

from ray_style.errors import InputError, JobError
from ray_style.serve import CSP, make_server, serve


@pytest.fixture()
def job(tmp_path):
    root = tmp_path / "job"
    (root / "report").mkdir(parents=True)
    (root / "manifest.json").write_text(json.dumps({"version": "t"}))
    (root / ".ray-style-job").write_text("{}")
    (tmp_path / "secret.txt").write_text("secret")
    (root / "frames.jsonl").write_text("{}\n")
    return root


@pytest.fixture()
def server(job):
    server = make_server(job, port=0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def request(server, path, method="GET", host=None, headers=None):
    port = server.server_address[1]
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    connection.putheader("Host", host or f"127.0.0.1:{port}")
    for name, value in (headers or {}).items():
        connection.putheader(name, value)
    connection.endheaders()
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response, body


def test_placeholder_until_the_page_exists_then_the_page(job, server):
    response, body = request(server, "/")
    assert response.status == 200 and b'http-equiv="refresh"' in body and b"No page yet" in body
    (job / "report" / "index.html").write_text("<p>the page</p>")
    response, body = request(server, "/")
    assert response.status == 200 and body == b"<p>the page</p>"
    assert response.getheader("Content-Type") == "text/html; charset=utf-8"
    assert response.getheader("Content-Security-Policy") == CSP
    assert "script" not in CSP and "default-src 'none'" in CSP
    assert response.getheader("X-Content-Type-Options") == "nosniff"
    assert response.getheader("Referrer-Policy") == "no-referrer"
    assert response.getheader("Cache-Control") == "no-store"
    head, body = request(server, "/index.html", "HEAD")
    assert head.status == 200 and body == b"" and head.getheader("Content-Length") == str(len("<p>the page</p>"))


@pytest.mark.parametrize("path", ["/../manifest.json", "/%2e%2e/manifest.json", "/..%2fframes.jsonl",
                                  "/../../secret.txt", "/.index.html.abc.html", "/sub/", "/nothing.png",
                                  "/%00index.html", "/..\\manifest.json", "//etc/passwd", "/out", "/inside"])
def test_nothing_but_the_report_folder(job, server, path):
    (job / "report" / "index.html").write_text("page")
    (job / "report" / ".index.html.abc.html").write_text("a temp file")
    (job / "report" / "sub").mkdir()
    os.symlink(job.parent / "secret.txt", job / "report" / "out")
    os.symlink(job / "manifest.json", job / "report" / "inside")
    response, body = request(server, path)
    assert response.status == 404, (path, body)
    assert b"secret" not in body and b"version" not in body
    assert response.getheader("Content-Security-Policy") == CSP


def test_symlink_within_the_folder_is_served(job, server):
    (job / "report" / "chart.png").write_bytes(b"\x89PNG...")
    os.symlink("chart.png", job / "report" / "alias.png")
    response, body = request(server, "/alias.png")
    assert response.status == 200 and body == b"\x89PNG..." and response.getheader("Content-Type") == "image/png"


def test_a_report_folder_that_is_a_symlink_is_refused(tmp_path):
    root = tmp_path / "job"
    root.mkdir()
    (root / "manifest.json").write_text("{}")
    (root / ".ray-style-job").write_text("{}")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "index.html").write_text("not the job's")
    os.symlink(tmp_path / "elsewhere", root / "report")
    server = make_server(root, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        response, body = request(server, "/index.html")
        assert response.status == 404 and b"not the job's" not in body
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "BREW"])
def test_only_get_and_head(job, server, method):
    response, _ = request(server, "/", method)
    assert response.status == 405 and response.getheader("Allow") == "GET, HEAD"


def test_other_host_names_are_refused(job, server):
    (job / "report" / "index.html").write_text("page")
    response, body = request(server, "/", host=f"attacker.example:{server.server_address[1]}")
    assert response.status == 403 and body != b"page"
    response, body = request(server, "/", host=f"localhost:{server.server_address[1]}")
    assert response.status == 200 and body == b"page"


def test_range_requests_for_video_seeking(job, server):
    (job / "report" / "side_by_side.mp4").write_bytes(bytes(range(100)))
    response, body = request(server, "/side_by_side.mp4", headers={"Range": "bytes=10-19"})
    assert response.status == 206 and body == bytes(range(10, 20))
    assert response.getheader("Content-Range") == "bytes 10-19/100"
    response, body = request(server, "/side_by_side.mp4", headers={"Range": "bytes=-5"})
    assert response.status == 206 and body == bytes(range(95, 100))


def test_a_taken_port_is_an_input_error(job):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(InputError, match=f"port {taken.getsockname()[1]} on 127.0.0.1 is in use"):
            make_server(job, port=taken.getsockname()[1])


def test_only_loopback_and_only_job_directories(job, tmp_path):
    with pytest.raises(InputError, match="this machine only"):
        make_server(job, port=0, host="0.0.0.0")
    with pytest.raises(JobError, match="not a ray-style job directory"):
        make_server(tmp_path, port=0)


def test_serve_reports_its_port_and_stops(job):
    (job / "report" / "index.html").write_text("page")
    ready, stop, lines = threading.Event(), threading.Event(), []
    thread = threading.Thread(target=serve, args=(job,), kwargs={"port": 0, "ready": ready, "stop": stop,
                                                                   "log": lines.append})
    thread.start()
    try:
        assert ready.wait(10)
        connection = http.client.HTTPConnection("127.0.0.1", ready.port, timeout=5)
        connection.request("GET", "/")
        assert connection.getresponse().read() == b"page"
        connection.close()
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert any('"GET / HTTP/1.1" 200' in line for line in lines)


def test_a_hard_link_and_a_second_host_header_are_refused(job, server, tmp_path):
    os.link(tmp_path / "secret.txt", job / "report" / "planted.txt")  # a file from elsewhere, by a second name
    response, body = request(server, "/planted.txt")
    assert response.status == 404 and b"secret" not in body
    (job / "report" / "index.html").write_text("page")
    port = server.server_address[1]
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.putrequest("GET", "/", skip_host=True, skip_accept_encoding=True)
    connection.putheader("Host", f"127.0.0.1:{port}")
    connection.putheader("Host", "attacker.example")
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 403 and response.read() != b"page"
    connection.close()


def test_idle_and_vanishing_clients_cost_nothing(job, monkeypatch, capfd):
    from ray_style import serve as serving

    monkeypatch.setattr(serving.ReportHandler, "timeout", 0.5)
    (job / "report" / "side_by_side.mp4").write_bytes(os.urandom(4 << 20))
    server = make_server(job, port=0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        idle = socket.create_connection(("127.0.0.1", port), timeout=5)  # connects, says nothing
        assert idle.recv(1) == b""  # the server closed it
        idle.close()
        for _ in range(3):  # asks for 4 MB and leaves without reading them
            gone = socket.create_connection(("127.0.0.1", port), timeout=5)
            gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            gone.sendall(f"GET /side_by_side.mp4 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            gone.recv(10)
            gone.close()  # a reset
        response, body = request(server, "/", headers={})
        assert response.status == 200
    finally:
        server.shutdown()
        server.server_close()
    assert "Traceback" not in capfd.readouterr().err
