from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from clicktune.local_http import NotReadyError, free_port, wait_until_ready


class _Ready(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.send_response(200 if self.path == "/readyz" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), _Ready)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_returns_once_the_url_answers_200(server: str) -> None:
    wait_until_ready(f"{server}/readyz", exit_code=lambda: None, log_tail=str, timeout_s=5)


def test_a_url_that_never_answers_200_fails_with_the_log(server: str) -> None:
    with pytest.raises(
        NotReadyError, match=r"(?s)/healthz did not answer 200 within 1 s.*boot log"
    ):
        wait_until_ready(
            f"{server}/healthz",
            exit_code=lambda: None,
            log_tail=lambda: "boot log",
            timeout_s=1,
            poll_s=0.1,
        )


def test_an_exited_process_fails_at_once_with_its_status_and_log() -> None:
    url = f"http://127.0.0.1:{free_port()}/readyz"  # nothing listens there
    with pytest.raises(NotReadyError, match=r"(?s)exited with status 3.*Traceback"):
        wait_until_ready(url, exit_code=lambda: 3, log_tail=lambda: "Traceback ...", timeout_s=60)
