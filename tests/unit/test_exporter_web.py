"""The exporter's web side: /probe?target= and its allow-list, --web.config.file (TLS, basic
auth), and the HTTP server's bounds (read deadline, connection cap, out of descriptors)."""

from __future__ import annotations

import base64
import errno
import os
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt
import pytest

from quilt_ops import exporter as ex
from quilt_ops import http_server
from quilt_ops import web_config as web
from quilt_ops.errors import ConfigError
from tests import promtool
from tests.unit.test_exporter import FakeHost, pool

# ----------------------------------------------------------------------------- /probe: decisions


ALLOWED = ("reg-a", "ec2-user@10.0.0.7", "10.0.0.8:2222")


@pytest.mark.parametrize(
    "query, target",
    [
        ("target=reg-a", "reg-a"),
        ("target=ec2-user%4010.0.0.7", "ec2-user@10.0.0.7"),
        ("target=10.0.0.8:2222&module=x", "10.0.0.8:2222"),
    ],
)
def test_probe_target_allowed(query, target):
    assert ex.probe_target(query, ALLOWED) == target


@pytest.mark.parametrize(
    "query, error",
    [
        ("", ConfigError),
        ("target=", ConfigError),
        ("target=reg-a&target=reg-b", ConfigError),
        ("target=reg-b", ex.NotAllowed),
        ("target=REG-A", ex.NotAllowed),  # exact strings only
        ("target=reg-a%20", ex.NotAllowed),
        ("target=10.0.0.7", ex.NotAllowed),  # not the same string as ec2-user@10.0.0.7
        ("target=-oProxyCommand%3Dtouch%20x", ex.NotAllowed),
        ("target=10.0.0.8", ex.NotAllowed),
    ],
)
def test_probe_target_refused(query, error):
    with pytest.raises(error):
        ex.probe_target(query, ALLOWED)


# ----------------------------------------------------------------------------- web config: decisions


HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()


def test_web_config_parsed_with_paths_relative_to_its_folder():
    config = web.parse(
        {"tls_server_config": {"cert_file": "a.crt", "key_file": "/etc/k.key"}, "basic_auth_users": {"p": HASH}},
        "/srv/web",
    )
    assert (config.cert_file, config.key_file, config.tls) == ("/srv/web/a.crt", "/etc/k.key", True)
    assert config.users == {"p": HASH.encode()}
    assert web.parse(None, "/x") == web.WebConfig() and not web.WebConfig().tls


@pytest.mark.parametrize(
    "doc, words",
    [
        ([], "must hold a mapping"),
        ({"http_server_config": {"http2": False}}, "http_server_config is not supported"),
        ({"tls_server_config": {"cert_file": "a"}}, "needs both cert_file and key_file"),
        ({"tls_server_config": {"cert_file": "a", "key_file": "b", "client_ca_file": "c"}}, "client_ca_file"),
        ({"tls_server_config": {"cert_file": "a", "key_file": "b", "min_version": "TLS10"}}, "TLS12 or TLS13"),
        ({"basic_auth_users": ["p"]}, "must map user names"),
        ({"basic_auth_users": {"p": "plain-password"}}, "basic_auth_users.p must be a bcrypt hash"),
        ({"basic_auth_users": {"a:b": HASH}}, "is not a user name"),
    ],
)
def test_bad_web_configs_are_refused_by_name(doc, words):
    with pytest.raises(ConfigError) as e:
        web.parse(doc, "/x")
    assert words in str(e.value) and "plain-password" not in str(e.value)


def test_web_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        web.load(str(tmp_path / "none.yml"))
    (tmp_path / "bad.yml").write_text("a: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        web.load(str(tmp_path / "bad.yml"))
    (tmp_path / "tls.yml").write_text("tls_server_config: {cert_file: x.crt, key_file: x.key}\n")
    with pytest.raises(ConfigError, match="cannot load the certificate"):
        web.load(str(tmp_path / "tls.yml"))


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    "header, ok",
    [
        (basic("p", "s3cret"), True),
        (basic("p", "wrong"), False),
        (basic("q", "s3cret"), False),
        (basic("p", "s3cret" * 20), False),  # longer than bcrypt takes
        ("Bearer x", False),
        ("Basic !!!", False),
        ("Basic " + base64.b64encode(b"no-colon").decode(), False),
        (None, False),
    ],
)
def test_basic_auth(header, ok):
    assert web.BasicAuth({"p": HASH.encode()}).allows(header) is ok


def test_basic_auth_remembers_a_good_password_only():
    auth = web.BasicAuth({"p": HASH.encode()})
    assert auth.allows(basic("p", "s3cret"))
    calls = []
    real = auth._bcrypt.checkpw
    auth._bcrypt = type("B", (), {"checkpw": staticmethod(lambda *a: calls.append(1) or real(*a))})
    assert auth.allows(basic("p", "s3cret")) and not calls  # remembered
    assert not auth.allows(basic("p", "other")) and calls == [1]
    assert b"s3cret" not in repr(vars(auth)).encode()


# ----------------------------------------------------------------------------- served: /probe, auth, TLS


def tls_pair(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    from datetime import datetime, timedelta, timezone
    from ipaddress import ip_address

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "quilt-ops test")])
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    crt, pem = folder / "server.crt", folder / "server.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return crt, pem


class Serving:
    def __init__(self, server, exporter, probes=None, auth=None):
        self.server = server
        self.stop = threading.Event()
        self.thread = threading.Thread(target=ex.serve, args=(server, exporter, 1, "test", self.stop, probes, auth))
        self.port = server.server_address[1]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive()


def get(url, headers=None, context=None):
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


def test_probe_serves_one_allowed_target_and_refuses_others_without_connecting(capsys):
    made = []

    def make(name):
        made.append(name)
        return ex.Exporter(pool(FakeHost(name)), min_interval=5)

    probes = ex.Probes(["reg-b"], make)
    server = ex.bind(ex.parse_listen("127.0.0.1:0"))
    with Serving(server, ex.Exporter(pool(FakeHost("a")), min_interval=5), probes) as s:
        base = f"http://127.0.0.1:{s.port}"
        status, body, _ = get(f"{base}/probe?target=reg-b")
        assert status == 200 and 'quilt_up{host="reg-b"} 1.0' in body and 'host="a"' not in body
        assert "process_" not in body
        promtool.check_metrics(body)
        assert get(f"{base}/probe?target=reg-b")[0] == 200
        status, body, _ = get(f"{base}/probe?target=evil.example")
        assert status == 403 and "not allowed" in body
        assert get(f"{base}/probe")[0] == 400
        status, body, _ = get(f"{base}/metrics")
        assert status == 200 and 'quilt_up{host="a"} 1.0' in body and "reg-b" not in body
    assert made == ["reg-b"]  # one exporter for the allowed target, none for the others
    assert "and /probe for 1 allowed target(s)" in capsys.readouterr().out


def test_tls_and_basic_auth(tmp_path, capsys):
    crt, key = tls_pair(tmp_path)
    (tmp_path / "web.yml").write_text(
        f"tls_server_config:\n  cert_file: {crt.name}\n  key_file: {key.name}\nbasic_auth_users:\n  prom: '{HASH}'\n"
    )
    config = web.load(str(tmp_path / "web.yml"))
    server = ex.bind(ex.parse_listen("127.0.0.1:0"), config.ssl_context())
    context = ssl.create_default_context(cafile=str(crt))
    with Serving(server, ex.Exporter(pool(FakeHost("a")), min_interval=5), auth=web.BasicAuth(config.users)) as s:
        url = f"https://127.0.0.1:{s.port}/metrics"
        status, _, headers = get(url, context=context)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic realm=")
        assert get(url, {"Authorization": basic("prom", "nope")}, context)[0] == 401
        status, body, _ = get(url, {"Authorization": basic("prom", "s3cret")}, context)
        assert status == 200 and 'quilt_up{host="a"} 1.0' in body
        with pytest.raises(OSError):  # plain HTTP to the TLS port: no answer (reset or closed)
            urllib.request.urlopen(f"http://127.0.0.1:{s.port}/metrics", timeout=5).read()
        assert get(url, {"Authorization": basic("prom", "s3cret")}, context)[0] == 200
    assert f"serving https://127.0.0.1:{s.port}/metrics" in capsys.readouterr().out


# ----------------------------------------------------------------------------- the server's bounds


def answer_ok(sock, head, address):
    sock.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")


@pytest.fixture
def server():
    servers = []

    def start(**kw):
        s = http_server.Server(("127.0.0.1", 0), socket.AF_INET, answer_ok, **kw)
        t = threading.Thread(target=s.serve_forever, daemon=True)
        t.start()
        servers.append((s, t))
        return s

    yield start
    for s, t in servers:
        s.shutdown()
        s.server_close()
        t.join(5)


def request(port: int, payload: bytes = b"GET / HTTP/1.0\r\n\r\n", timeout: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
        return b"".join(chunks)


def closed_by_server(sock: socket.socket, timeout: float = 5) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_a_silent_connection_is_closed_at_its_read_deadline(server):
    s = server(read_timeout=0.5)
    port = s.server_address[1]
    with socket.create_connection(("127.0.0.1", port)) as idle, socket.create_connection(("127.0.0.1", port)) as slow:
        started = time.monotonic()
        for _ in range(3):  # a trickle does not move the deadline
            slow.sendall(b"G")
            time.sleep(0.1)
        assert closed_by_server(idle) and closed_by_server(slow)
        assert time.monotonic() - started < 3
    assert request(port).endswith(b"ok")


def test_at_the_cap_the_oldest_silent_connection_makes_room(server):
    s = server(max_connections=4, read_timeout=30)
    port = s.server_address[1]
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    try:
        time.sleep(0.2)
        assert request(port).endswith(b"ok")  # answered at once, though 4 idle ones were there
        assert closed_by_server(idle[0], 2)  # the oldest went
        assert not closed_by_server(idle[-1], 0.3)
    finally:
        for sock in idle:
            sock.close()


def test_a_request_head_too_large_is_refused(server):
    s = server()
    try:
        answer = request(s.server_address[1], b"GET / HTTP/1.0\r\nX: " + b"a" * (http_server.MAX_HEAD + 10))
    except ConnectionResetError:  # closed with our bytes unread
        answer = b""
    assert answer == b""


class OutOfDescriptors:
    """The listening socket, whose next accept fails with EMFILE once armed."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.armed = threading.Event()

    def fileno(self) -> int:
        return self.sock.fileno()

    def accept(self):
        if self.armed.is_set():
            self.armed.clear()
            raise OSError(errno.EMFILE, "Too many open files")
        return self.sock.accept()

    def close(self) -> None:
        self.sock.close()


def test_out_of_descriptors_closes_the_oldest_silent_connection():
    s = http_server.Server(("127.0.0.1", 0), socket.AF_INET, answer_ok, read_timeout=30)
    listening = s.socket = OutOfDescriptors(s.socket)  # type: ignore[assignment]
    thread = threading.Thread(target=s.serve_forever, daemon=True)
    thread.start()
    port = s.server_address[1]
    try:
        with socket.create_connection(("127.0.0.1", port)) as first:
            time.sleep(0.2)
            listening.armed.set()
            assert request(port).endswith(b"ok")
            assert closed_by_server(first, 2)
    finally:
        s.shutdown()
        s.server_close()
        thread.join(5)


def test_head_complete():
    assert http_server.head_complete(b"GET / HTTP/1.0\r\n\r\n")
    assert http_server.head_complete(b"GET / HTTP/1.0\n\n")
    assert not http_server.head_complete(b"GET / HTTP/1.0\r\nHost: x\r\n")


# ----------------------------------------------------------------------------- the command line


@pytest.mark.parametrize(
    "args, words",
    [
        (["--max-connections", "2"], "--max-connections must be between 4 and 10000"),
        (["--max-connections", "many"], "--max-connections must be a whole number"),
        (["--web.config.file", "/nonexistent/web.yml"], "--web.config.file: cannot read /nonexistent/web.yml"),
        (["--web-config-file", "/nonexistent/web.yml"], "--web.config.file: cannot read"),
    ],
)
def test_bad_web_options_are_one_error_line(tmp_path, capsys, monkeypatch, args, words):
    from quilt_ops import cli

    for name in list(os.environ):
        if name.startswith(("FABRIC_QUILT_", "AWS_")):
            monkeypatch.delenv(name, raising=False)
    config = tmp_path / "fabric.yaml"
    config.write_text(f'{{"quilt": {{"known_hosts": "{tmp_path / "kh"}"}}}}')
    code = cli.run(["-f", str(config), "-H", "127.0.0.1:1", "exporter", "--listen", "127.0.0.1:0", *args])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 64 and len(lines) == 1 and lines[0].startswith("Error: ") and words in lines[0], captured.err
    assert "Traceback" not in captured.out + captured.err
