#!/usr/bin/env python3
"""The clients of the topology test: FastCGI (the panel's PHP-FPM), SMTP
and IMAP. test_topology.py runs this with nsenter in the network namespace
of a probe container on mailnet (the network is internal: the host has no
address on it), one call per run:

    topology_client.py '{"op": "smtp", ...}'   -> one JSON line on stdout
"""
import imaplib
import json
import smtplib
import socket
import struct
import sys
import urllib.parse


def fcgi(host, port, script, query, timeout=15):
    """One FastCGI request (responder role); returns (stdout, stderr)."""
    def record(rtype, content, rid=1):
        pad = (8 - len(content) % 8) % 8
        return struct.pack("!BBHHBB", 1, rtype, rid, len(content), pad, 0) + content + b"\0" * pad

    def pair(name, value):
        out = b""
        for n in (len(name), len(value)):
            out += struct.pack("!B", n) if n < 128 else struct.pack("!I", n | 0x80000000)
        return out + name + value

    params = {
        "GATEWAY_INTERFACE": "CGI/1.1", "SERVER_PROTOCOL": "HTTP/1.1",
        "REQUEST_METHOD": "GET", "SCRIPT_FILENAME": script, "SCRIPT_NAME": "/panel.php",
        "REQUEST_URI": "/panel.php?" + query, "QUERY_STRING": query,
        "SERVER_NAME": "admin", "SERVER_PORT": "80", "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_LENGTH": "0",
    }
    body = b"".join(pair(k.encode(), v.encode()) for k, v in params.items())
    msg = (record(1, struct.pack("!HB5x", 1, 0)) + record(4, body) + record(4, b"")
           + record(5, b""))
    out, err = b"", b""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(msg)
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        while len(buf) >= 8:
            _, rtype, _, clen, plen, _ = struct.unpack("!BBHHBB", buf[:8])
            content, buf = buf[8:8 + clen], buf[8 + clen + plen:]
            if rtype == 6:
                out += content
            elif rtype == 7:
                err += content
            elif rtype == 3:
                break
    return out.decode(errors="replace"), err.decode(errors="replace")


def op_panel(a):
    out, err = fcgi(a["host"], a.get("port", 9000), a["script"], urllib.parse.urlencode(a["query"]))
    head, _, body = out.partition("\r\n\r\n")
    try:
        answer = json.loads(body)
    except ValueError:
        answer = {"ok": False, "error": f"not JSON: {out!r} {err!r}"}
    return answer


def op_rcpt(a):
    """MAIL FROM and RCPT TO only: the code Postfix gives the recipient."""
    with smtplib.SMTP(a["host"], 25, timeout=15) as s:
        s.ehlo("probe.mailnet.example")
        s.mail(a["sender"])
        code, msg = s.rcpt(a["rcpt"])
        s.rset()
    return {"code": code, "message": msg.decode(errors="replace")}


def op_send(a):
    msg = (f"From: {a['sender']}\r\nTo: {a['rcpt']}\r\nSubject: {a['subject']}\r\n"
           f"Message-ID: <{a['subject']}@probe.mailnet.example>\r\n\r\n{a['body']}\r\n")
    with smtplib.SMTP(a["host"], 25, timeout=15) as s:
        s.ehlo("probe.mailnet.example")
        refused = s.sendmail(a["sender"], [a["rcpt"]], msg)
    return {"refused": {k: [v[0], v[1].decode(errors="replace")] for k, v in refused.items()}}


def op_imap(a):
    """Logs in; with subject, searches INBOX for it."""
    m = imaplib.IMAP4(a["host"], 143, timeout=15)
    try:
        try:
            m.login(a["user"], a["password"])
        except imaplib.IMAP4.error as e:
            return {"login": False, "error": str(e)}
        found = None
        if a.get("subject"):
            m.select("INBOX", readonly=True)
            typ, data = m.search(None, "SUBJECT", f'"{a["subject"]}"')
            found = len(data[0].split()) if typ == "OK" else 0
        m.logout()
        return {"login": True, "found": found}
    finally:
        try:
            m.shutdown()
        except OSError:
            pass


def op_banner(a):
    with socket.create_connection((a["host"], a["port"]), timeout=5) as s:
        s.settimeout(5)
        return {"banner": s.recv(512).decode(errors="replace").strip()}


OPS = {"panel": op_panel, "rcpt": op_rcpt, "send": op_send, "imap": op_imap, "banner": op_banner}

if __name__ == "__main__":
    args = json.loads(sys.argv[1])
    try:
        result = OPS[args["op"]](args)
    except (OSError, smtplib.SMTPException, imaplib.IMAP4.error) as e:
        result = {"exception": f"{type(e).__name__}: {e}"}
    print(json.dumps(result))
