"""The email and SMS reminder adapters against real local servers (an SMTP conversation and
an HTTP gateway on loopback), and their refusals."""

from __future__ import annotations

import json
import socketserver
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from carebase.telehealth.notify import EmailNotifier, Reminder, SmsNotifier

REMINDER = Reminder(
    "Appointment/a1",
    "Patient/p1",
    "2026-12-01T09:00:00Z",
    "virtual",
    "pat@example.org",
    "+4915100000000",
)


class _Smtp(socketserver.StreamRequestHandler):
    """Just enough SMTP for smtplib: EHLO, MAIL, RCPT, DATA, QUIT."""

    received: list[dict[str, Any]] = []

    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        self.reply("220 test SMTP")
        message: dict[str, Any] = {"rcpt": []}
        while True:
            line = self.rfile.readline().decode().rstrip("\r\n")
            verb = line.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                self.reply("250 test")
            elif verb == "MAIL":
                message["from"] = line
                self.reply("250 ok")
            elif verb == "RCPT":
                message["rcpt"].append(line)
                self.reply("250 ok")
            elif verb == "DATA":
                self.reply("354 go on")
                lines = []
                while (data := self.rfile.readline().decode()) not in (".\r\n", ""):
                    lines.append(data)
                message["data"] = "".join(lines)
                _Smtp.received.append(message)
                self.reply("250 queued")
            elif verb == "QUIT" or not line:
                self.reply("221 bye")
                return
            else:
                self.reply("502 not here")


@pytest.fixture
def smtp_port() -> Iterator[int]:
    _Smtp.received = []
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Smtp)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_email_reminder_over_smtp(smtp_port: int) -> None:
    EmailNotifier("127.0.0.1", smtp_port, sender="clinic@example.org", starttls=False).send(
        REMINDER
    )
    (message,) = _Smtp.received
    assert "pat@example.org" in message["rcpt"][0]
    assert "Subject: Appointment reminder" in message["data"]
    assert "video visit at 2026-12-01T09:00:00Z" in message["data"]


def test_email_needs_an_address() -> None:
    no_email = Reminder("Appointment/a1", "Patient/p1", "t", "virtual", None, None)
    with pytest.raises(ValueError, match="no email"):
        EmailNotifier("127.0.0.1", 1, sender="x@example.org").send(no_email)


class _Gateway(BaseHTTPRequestHandler):
    calls: list[tuple[str, dict[str, Any]]] = []
    status = 202

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Gateway.calls.append((self.headers["Authorization"], body))
        self.send_response(_Gateway.status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def gateway() -> Iterator[str]:
    _Gateway.calls, _Gateway.status = [], 202
    server = HTTPServer(("127.0.0.1", 0), _Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/sms"
    server.shutdown()
    server.server_close()


def test_sms_reminder_through_the_gateway(gateway: str) -> None:
    SmsNotifier(gateway, "key-1").send(REMINDER)
    ((auth, body),) = _Gateway.calls
    assert auth == "Bearer key-1"
    assert body["to"] == "+4915100000000" and "Appointment/a1" in body["text"]


def test_sms_gateway_refusal_raises(gateway: str) -> None:
    _Gateway.status = 500
    with pytest.raises(OSError):
        SmsNotifier(gateway, "key-1").send(REMINDER)
