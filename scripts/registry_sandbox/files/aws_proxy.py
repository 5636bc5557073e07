"""The sandbox's AWS endpoint: a small HTTP proxy in front of moto's server.

moto accepts a new access key at once; real IAM takes seconds before every
service accepts it. This proxy puts that delay back, and can make AWS fail for a
while, so that the tool's waits, retries and rollbacks meet what they meet on AWS.

    python aws_proxy.py LISTEN_PORT MOTO_PORT FAULTS_JSON

FAULTS_JSON is read on every request (a missing file means no faults):
  new_key_delay   seconds during which a new key is refused by STS and S3
  flaky           during that window, let every third call through (never two in a
                  row), since one accepted call does not prove the key has propagated
  error_500_until epoch seconds until which every request answers 500
  throttle_until  epoch seconds until which every request is throttled
  error_500_next  {"count": N, "id": ID}: the next N requests answer 500 (counted per ID, so a
                  setting is spent once); AWS failing briefly as an SDK's retries meet it,
                  whatever the machine's load (a window in seconds is not: botocore's standard
                  mode backs off 50 ms, 100 ms, ... after a 500)
  throttle_next   the same, throttled
  down_until      epoch seconds until which connections are closed unanswered
                  (AWS unreachable, without losing moto's state)
  fail_actions    query API actions (e.g. ["DeleteAccessKey"]) that answer 500
  drop_create_next  {"count": N, "id": ID}: the next N CreateAccessKey calls reach moto (IAM makes
                  the key) but their answer is lost (the connection is closed unanswered), as a
                  timeout leaves them on AWS
  hide_new_keys_next  {"count": N, "id": ID, "since": EPOCH}: the next N ListAccessKeys answers that
                  hold a key made through the proxy since EPOCH leave it out, as IAM's list lags
                  behind (eventually consistent); counted only when a key is left out
"""

import http.client
import http.server
import json
import re
import sys
import threading
import time

CREDENTIAL = re.compile(r"Credential=([A-Z0-9]+)/[^/]+/[^/]+/([a-z0-9-]+)/")
QUERY_CREDENTIAL = re.compile(r"X-Amz-Credential=([A-Z0-9]+)%2F[^%]+%2F[^%]+%2F([a-z0-9-]+)%2F")
ACTION = re.compile(rb"(?:^|[?&])Action=([A-Za-z]+)")
NEW_KEY = re.compile(rb"<AccessKeyId>([A-Z0-9]+)</AccessKeyId>")

STS_REFUSED = (
    403,
    "text/xml",
    b"<ErrorResponse><Error><Type>Sender</Type><Code>InvalidClientTokenId</Code>"
    b"<Message>The security token included in the request is invalid.</Message>"
    b"</Error><RequestId>sandbox</RequestId></ErrorResponse>",
)
S3_REFUSED = (
    403,
    "application/xml",
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InvalidAccessKeyId</Code>'
    b"<Message>The AWS Access Key Id you provided does not exist in our records.</Message>"
    b"<RequestId>sandbox</RequestId></Error>",
)
SERVER_ERROR = (
    500,
    "text/xml",
    b"<ErrorResponse><Error><Code>InternalFailure</Code><Message>sandbox fault</Message></Error></ErrorResponse>",
)
THROTTLED = (
    400,
    "text/xml",
    b"<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>"
    b"<Message>Rate exceeded</Message></Error></ErrorResponse>",
)


class State:
    """Key creation times seen through the proxy, and the fault settings file."""

    def __init__(self, faults_path: str) -> None:
        self.faults_path = faults_path
        self.created: dict[str, float] = {}
        self.calls = 0
        self.lock = threading.Lock()
        self.spent: dict[str, int] = {}

    def take(self, setting: object) -> bool:
        """Whether a ``{"count": N, "id": ID}`` setting still refuses this request (and counts it)."""
        if not isinstance(setting, dict):
            return False
        key, count = str(setting.get("id")), int(setting.get("count", 0))
        with self.lock:
            used = self.spent.get(key, 0)
            if used >= count:
                return False
            self.spent[key] = used + 1
            return True

    def faults(self) -> dict:
        try:
            with open(self.faults_path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle's algorithm on, the body waits for
    # the client's delayed ACK (40 ms a call on a kept-alive connection), which AWS does not add.
    disable_nagle_algorithm = True
    state: State
    moto_port: int

    def log_message(self, format: str, *args: object) -> None:  # keep the proxy quiet; moto logs requests
        pass

    def _answer(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _refusal(self, body: bytes = b"") -> tuple | None:
        faults = self.state.faults()
        now = time.time()
        if faults.get("error_500_until", 0) > now or self.state.take(faults.get("error_500_next")):
            return SERVER_ERROR
        action = ACTION.search(body + b"&" + self.path.encode())
        if action and action.group(1).decode() in faults.get("fail_actions", []):
            return SERVER_ERROR
        if faults.get("throttle_until", 0) > now or self.state.take(faults.get("throttle_next")):
            return THROTTLED
        delay = float(faults.get("new_key_delay", 0))
        if delay <= 0:
            return None
        auth = self.headers.get("Authorization", "")
        match = CREDENTIAL.search(auth) or QUERY_CREDENTIAL.search(self.path)
        if not match:
            return None
        key_id, service = match.groups()
        with self.state.lock:
            created = self.state.created.get(key_id)
        if created is None or now - created >= delay:
            return None
        if faults.get("flaky"):
            with self.state.lock:
                self.state.calls += 1
                if self.state.calls % 3 == 0:
                    return None
        if service == "sts":
            return STS_REFUSED
        if service == "s3":
            return S3_REFUSED
        return None

    def _forward(self) -> None:
        if self.state.faults().get("down_until", 0) > time.time():
            self.close_connection = True
            self.connection.close()
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        refusal = self._refusal(body)
        if refusal:
            self._answer(*refusal)
            return
        upstream = http.client.HTTPConnection("127.0.0.1", self.moto_port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
        upstream.request(self.command, self.path, body=body, headers=headers)
        response = upstream.getresponse()
        data = response.read()
        data = self._lagging(body, data)
        if b"CreateAccessKey" in body:
            for key_id in NEW_KEY.findall(data):
                with self.state.lock:
                    self.state.created[key_id.decode()] = time.time()
            if self.state.take(self.state.faults().get("drop_create_next")):
                upstream.close()
                self.close_connection = True
                self.connection.close()
                return
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in ("connection", "transfer-encoding", "content-length"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        upstream.close()

    def _lagging(self, body: bytes, data: bytes) -> bytes:
        """A ListAccessKeys answer without the keys made since ``hide_new_keys_next`` was set."""
        setting = self.state.faults().get("hide_new_keys_next")
        action = ACTION.search(body + b"&" + self.path.encode())
        if not isinstance(setting, dict) or not action or action.group(1) != b"ListAccessKeys":
            return data
        since = float(setting.get("since", 0))
        with self.state.lock:
            new = [k for k, made in self.state.created.items() if made >= since]
        hidden = [k for k in new if f"<AccessKeyId>{k}</AccessKeyId>".encode() in data]
        if not hidden or not self.state.take(setting):
            return data
        for key_id in hidden:
            member = rb"<member>(?:(?!</member>).)*?<AccessKeyId>" + key_id.encode() + rb"</AccessKeyId>.*?</member>\s*"
            data = re.sub(member, b"", data, flags=re.DOTALL)
        return data

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward


def main() -> None:
    listen_port, moto_port, faults_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    Handler.state = State(faults_path)
    Handler.moto_port = moto_port
    server = http.server.ThreadingHTTPServer(("127.0.0.1", listen_port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
