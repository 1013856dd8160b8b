"""HTTP over the API's AF_UNIX socket (http.client), and configs with an
[api] section, for test_api.py and test_webhook.py."""

import http.client
import json
import socket


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=60):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


class Answer:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<%d %s>" % (self.status, self.body[:2000])


def request(sock, method, url, body=None, headers=None, timeout=60):
    c = UnixHTTPConnection(sock, timeout)
    try:
        c.request(method, url, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read().decode("utf-8", "replace")
        return Answer(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        c.close()


def api_section(sock, **kw):
    text = "\n[api]\nlisten = %s\n" % sock
    for k, v in kw.items():
        text += "%s = %s\n" % (k, v)
    return text
