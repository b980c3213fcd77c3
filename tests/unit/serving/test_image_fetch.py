"""Image URLs: only allowed hosts, only public addresses (after DNS and after every redirect),
bounded bodies, and one generic text for every failure a client could use as a port scanner.

Every connection these tests make goes to 127.0.0.1: the product's address check refuses
loopback, so the tests that fetch inject a check that also lets 127.0.0.1 through, and a fake
resolver answers for the `.test` names (nothing reaches a real resolver or another address)."""

from __future__ import annotations

import base64
import io
import logging
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

import httpx
import pytest
from PIL import Image

from serving.config import ImageSettings, IndexSettings
from serving.errors import ImageError, ImageProblem
from serving.index.doc_images import ImageReader, document_images, load_image
from serving.index.image_fetch import ImageFetcher, host_allowed, public_address

LOOPBACK = ip_address("127.0.0.1")
FORBIDDEN = {
    "internal.test": ["10.0.0.5"],
    "metadata.test": ["169.254.169.254"],
    "v6-loopback.test": ["::1"],
    "mapped-loopback.test": ["::ffff:127.0.0.1"],
    "half-private.test": ["127.0.0.1", "10.0.0.5"],  # ANY forbidden address refuses the host
}


def png_bytes(rgb: tuple[int, int, int] = (200, 0, 0), size: tuple[int, int] = (8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def claimed_size_png(width: int, height: int) -> bytes:
    """A tiny PNG (made by Pillow) whose IHDR header claims `width` x `height` pixels."""
    data = bytearray(png_bytes(size=(1, 1)))
    ihdr = data.index(b"IHDR")  # length(4) IHDR(4) width(4) height(4) ... crc(4)
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17]))
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


class Handler(BaseHTTPRequestHandler):
    routes: dict[str, Any] = {}

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.server.hits.append((self.path, self.headers.get("Host")))  # type: ignore[attr-defined]
        route = self.routes.get(self.path.split("?")[0])
        if route is None:
            self.send_response(404)
            self.end_headers()
            return
        route(self)

    def log_message(self, *args: Any) -> None:
        pass


def _send(handler: BaseHTTPRequestHandler, body: bytes, **headers: str) -> None:
    handler.send_response(200)
    for name, value in {"Content_Length": str(len(body)), **headers}.items():
        handler.send_header(name.replace("_", "-"), value)
    handler.end_headers()
    handler.wfile.write(body)


def _redirect(to: str) -> Any:
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", to.format(port=handler.server.server_address[1]))
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return route


def _unsized(body: bytes) -> Any:
    def route(handler: BaseHTTPRequestHandler) -> None:  # no Content-Length: read to the close
        handler.send_response(200)
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(body)
        handler.close_connection = True

    return route


def _slow(handler: BaseHTTPRequestHandler) -> None:
    time.sleep(2.0)
    _send(handler, png_bytes())


@pytest.fixture()
def server() -> Iterator[Any]:
    Handler.routes = {
        "/red.png": lambda h: _send(h, png_bytes()),
        "/gzip.png": lambda h: _send(h, png_bytes(), Content_Encoding="gzip"),
        "/big": lambda h: _send(h, b"x" * 4096),
        "/big-unsized": _unsized(b"x" * 4096),
        "/claims-big": lambda h: _send(h, b"x" * 10, Content_Length=str(10**9)),
        "/slow": _slow,
        "/bomb.png": lambda h: _send(h, claimed_size_png(100_000, 100_000)),
        "/to-red": _redirect("/red.png"),
        "/to-metadata": _redirect("http://metadata.test/latest/meta-data/"),
        "/to-internal": _redirect("http://internal.test/"),
        "/to-unlisted": _redirect("http://elsewhere.example:{port}/red.png"),
        "/to-file": _redirect("file:///etc/passwd"),
        "/loop": _redirect("/loop"),
    }
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.hits = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def fake_resolve(host: str, port: int) -> list[IPv4Address | IPv6Address]:
    if host in ("images.test", "a.cdn.test", "closed.test", "elsewhere.example"):
        return [LOOPBACK]
    if host in FORBIDDEN:
        return [ip_address(a) for a in FORBIDDEN[host]]
    raise OSError(f"fake resolver: no such host {host!r}")


def loopback_or_public(address: IPv4Address | IPv6Address) -> bool:
    """The product's check, plus 127.0.0.1 itself (the test server): never in the product."""
    return address == LOOPBACK or public_address(address)


class LoopbackOnly(httpx.HTTPTransport):
    """Connects to 127.0.0.1 only, whatever the code under test asks for (even when broken)."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host != "127.0.0.1":
            raise AssertionError(f"the test tried to connect to {request.url.host}")
        return super().handle_request(request)


ALLOWED = ["images.test", "*.cdn.test", "closed.test", *FORBIDDEN]


def reader(**settings: Any) -> ImageReader:
    image_settings = ImageSettings(
        allowed_hosts=settings.pop("allowed_hosts", ALLOWED),
        **{"fetch_timeout_s": 1.0, "max_bytes": 2048, **settings},
    )
    fetcher = ImageFetcher(
        image_settings,
        resolve=fake_resolve,
        address_ok=loopback_or_public,
        transport=LoopbackOnly,
    )
    return ImageReader(image_settings, fetcher=fetcher)


def url(server: Any, path: str, host: str = "images.test") -> str:
    return f"http://{host}:{server.server_address[1]}{path}"


def refusal(value: str, image_reader: ImageReader) -> ImageError:
    with pytest.raises(ImageError) as caught:
        document_images({"d": {"image": value}}, IndexSettings(), image_reader)
    return caught.value


def test_an_allowed_host_is_fetched_at_the_checked_address_with_its_name(server) -> None:  # type: ignore[no-untyped-def]
    image = load_image(url(server, "/red.png"), reader())
    assert image.getpixel((0, 0)) == (200, 0, 0)
    port = server.server_address[1]
    assert server.hits == [("/red.png", f"images.test:{port}")]
    # `*.suffix` entries take names under the suffix; redirects on allowed hosts are followed
    assert load_image(url(server, "/to-red", "a.cdn.test"), reader()).size == (8, 8)
    # The query travels; a path that looks like an authority stays a path on the checked host
    assert load_image(url(server, "/red.png?v=1&w=2"), reader()).size == (8, 8)
    with pytest.raises(ImageError, match="could not be fetched"):
        load_image(url(server, "//elsewhere.example/red.png"), reader())
    (query, _), (path, host) = server.hits[-2:]
    assert query == "/red.png?v=1&w=2" and path.lstrip("/") == "elsewhere.example/red.png"
    assert host == f"images.test:{port}"


@pytest.mark.parametrize(
    "value",
    [
        "http://elsewhere.example/x.png",  # host not on the list
        "http://127.0.0.1/red.png",  # an address literal is a host like any other
        "ftp://images.test/x.png",
        "file:///etc/passwd",
        "/etc/passwd",
        "red.png",
        "gopher://images.test/",
    ],
)
def test_sources_other_than_data_uris_and_allowed_hosts_are_refused_unread(value, server) -> None:  # type: ignore[no-untyped-def]
    error = refusal(value, reader())
    assert str(error) == "image of document 'd' could not be used: not an allowed source"
    assert server.hits == []


@pytest.mark.parametrize("host", sorted(FORBIDDEN))
def test_a_host_resolving_to_a_forbidden_address_is_refused_before_connecting(host) -> None:  # type: ignore[no-untyped-def]
    # The product's own address check: no exception for loopback here
    settings = ImageSettings(allowed_hosts=[host])
    fetcher = ImageFetcher(settings, resolve=fake_resolve, transport=LoopbackOnly)
    error = refusal(f"http://{host}/img.png", ImageReader(settings, fetcher=fetcher))
    assert error.problem is ImageProblem.FETCH and "forbidden" in error.detail


@pytest.mark.parametrize("path", ["/to-metadata", "/to-internal", "/to-unlisted", "/to-file"])
def test_every_redirect_hop_is_checked_again(path, server) -> None:  # type: ignore[no-untyped-def]
    error = refusal(url(server, path), reader())
    assert str(error) == "image of document 'd' could not be fetched"
    assert [hit[0] for hit in server.hits] == [path]  # the hop was never requested


def test_redirects_are_bounded(server) -> None:  # type: ignore[no-untyped-def]
    error = refusal(url(server, "/loop"), reader(max_redirects=2))
    assert error.problem is ImageProblem.FETCH and len(server.hits) == 3


def test_refused_timed_out_and_forbidden_read_the_same_to_a_client(server, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.WARNING, logger="serving.index.doc_images")
    texts = {
        str(refusal(f"http://closed.test:{closed_port()}/x.png", reader())),
        str(refusal(url(server, "/slow"), reader(fetch_timeout_s=0.3))),
        str(refusal("http://internal.test/x.png", reader())),
        str(refusal(url(server, "/missing.png"), reader())),
        str(refusal(url(server, "/gzip.png"), reader())),
    }
    assert texts == {"image of document 'd' could not be fetched"}
    # ... while the server log keeps each cause
    logged = caplog.text
    assert "no address of 'closed.test'" in logged and "'internal.test' resolves" in logged
    assert "HTTP status 404" in logged and "content-encoding 'gzip'" in logged


@pytest.mark.parametrize("path", ["/big", "/big-unsized", "/claims-big"])
def test_a_body_over_max_bytes_is_refused_naming_the_limit(path, server) -> None:  # type: ignore[no-untyped-def]
    error = refusal(url(server, path), reader(max_bytes=1024))
    assert str(error) == "image of document 'd' is larger than serving.index.images.max_bytes=1024"


def test_a_decompression_bomb_behind_a_url_is_refused_naming_the_limit(server) -> None:  # type: ignore[no-untyped-def]
    error = refusal(url(server, "/bomb.png"), reader(max_pixels=1_000_000))
    assert str(error) == (
        "image of document 'd' has more pixels than serving.index.images.max_pixels=1000000"
    )


def test_data_uris_need_no_allow_list() -> None:
    value = "data:image/png;base64," + base64.b64encode(png_bytes((1, 2, 3))).decode()
    assert load_image(value).getpixel((0, 0)) == (1, 2, 3)


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.215.14", True),
        ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", True),
        ("127.0.0.1", False),
        ("10.0.0.5", False),
        ("172.16.3.4", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # AWS, GCP, Azure metadata
        ("100.100.100.200", False),  # Alibaba metadata (shared address space)
        ("fd00:ec2::254", False),  # AWS metadata over IPv6
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("255.255.255.255", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped loopback
        ("::ffff:10.0.0.5", False),
        ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
        ("64:ff9b::a00:5", False),  # NAT64 of 10.0.0.5
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", False),  # Teredo of 127.0.0.1
    ],
)
def test_public_address(address, public) -> None:  # type: ignore[no-untyped-def]
    assert public_address(ip_address(address)) is public


def test_allowed_hosts_match_exact_names_and_suffixes_only() -> None:
    hosts = ImageSettings(allowed_hosts=["Images.Example.", "*.cdn.example"]).allowed_hosts
    assert hosts == ["images.example", "*.cdn.example"]
    assert host_allowed("images.example", hosts) and host_allowed("a.b.cdn.example", hosts)
    assert not host_allowed("cdn.example", hosts) and not host_allowed("xcdn.example", hosts)
    assert not host_allowed("images.example.evil", hosts)
    for bad in ("*", "https://images.example", "images.example:443", "a/b", "*.", ""):
        with pytest.raises(ValueError, match="must be a host name or"):
            ImageSettings(allowed_hosts=[bad])
