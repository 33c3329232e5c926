"""Transient I/O while reading a crawl file: retried, resumed by range request, never doubled.

Real servers on loopback inject the faults (tests/support/faults.py): an HTTP server with
Range support, and a TCP proxy in front of SeaweedFS for s3://. Every faulty read must
give exactly the rows of a clean local read of the same file (same order, no duplicates),
resume where it stopped rather than from the start, and, when the faults outlast the
retries, end in TransientIOError (the job then leaves the file uncommitted).
"""

from __future__ import annotations

import errno
import http.client
import socket
import time
from pathlib import Path

import pyarrow as pa
import pytest

from crawlpairs.config import ExtractConfig, StorageConfig
from crawlpairs.errors import TransientIOError
from crawlpairs.stats import Stats
from crawlpairs.storage import backoff_delay, is_transient, open_input
from crawlpairs.udfs.extract.candidates import CANDIDATE_SCHEMA, extract_file
from support import faults

BLOCK = 256 * 1024  # small range requests, so a 2 MB file takes several GETs


@pytest.fixture(scope="module")
def wat(tmp_path_factory) -> Path:
    from crawlpairs.generate import generate

    out = tmp_path_factory.mktemp("faultwat")
    res = generate(str(out), kind="wat", files=1, pages_per_file=400, seed=11, layout="flat", write_truth=False)
    return Path(res.wat_files[0])


@pytest.fixture(scope="module")
def ecfg() -> ExtractConfig:
    return ExtractConfig(lid_model=None)  # reading is under test, not language ID


@pytest.fixture(scope="module")
def clean(wat, ecfg):
    """The rows of a plain local read: what every faulty read must reproduce."""
    return read(str(wat), ecfg, None)[0]


def read(uri: str, cfg: ExtractConfig, st: StorageConfig | None) -> tuple[pa.Table, Stats]:
    stats = Stats()
    batches = list(extract_file(uri, None, cfg, st, stats, batch_rows=300))
    table = pa.Table.from_batches(batches, schema=CANDIDATE_SCHEMA)
    return table.drop_columns(["source_file"]), stats


def storage(**kw) -> StorageConfig:
    # io_timeout well above any pause a loaded CI machine makes, well below the injected stalls
    base = dict(io_retries=3, io_backoff_base=0.05, io_backoff_max=2.0, io_timeout=3.0, io_block_size=BLOCK)
    return StorageConfig(**{**base, **kw})


def range_starts(log, name: str) -> list[int]:
    return [int(r[6:].split("-")[0]) for m, p, r, _ in log if m == "GET" and p.endswith(name) and r]


@pytest.fixture
def server(wat):
    with faults.FaultHTTPServer(wat.parent) as srv:
        yield srv


def test_clean_file_has_rows_over_several_batches(clean, wat):
    assert clean.num_rows > 900 and wat.stat().st_size > 6 * BLOCK


def test_http_503_on_first_get_then_rows_equal(server, wat, ecfg, clean):
    server.inject(wat.name, faults.status(503))
    table, stats = read(server.url(wat.name), ecfg, storage())
    assert table.equals(clean)
    assert stats.counts["io.retries"] == 1 and not stats.errors


def test_http_503_on_open_is_transient_not_missing(server, wat, ecfg, clean):
    # fsspec's HTTP open turns a failing HEAD + GET into FileNotFoundError: still transient
    server.inject(wat.name, faults.status(503), faults.status(503), methods=("GET", "HEAD"))
    table, stats = read(server.url(wat.name), ecfg, storage())
    assert table.equals(clean)
    assert stats.counts["io.retries"] == 1 and not stats.errors
    server.inject(wat.name, faults.status(503), every=True, methods=("GET", "HEAD"))
    with pytest.raises(TransientIOError):
        read(server.url(wat.name), ecfg, storage(io_retries=1))


def test_http_cut_halfway_resumes_with_a_range_request(server, wat, ecfg, clean):
    # third GET reset after half its bytes: the read resumes at the first byte not received
    server.inject(wat.name, faults.ok(), faults.ok(), faults.cut(0.5))
    table, stats = read(server.url(wat.name), ecfg, storage())
    assert table.equals(clean)  # same rows, same order: none lost, none twice
    assert stats.counts["io.retries"] == 1
    starts = range_starts(server.log, wat.name)
    kinds = [k for m, p, _, k in server.log if m == "GET"]
    cut_at = kinds.index("cut")
    # the retry asks for the first byte not yet handed on (the failed read's start, at most
    # one 1 MiB read before the cut request), not for byte 0
    assert starts[cut_at] - 1024 * 1024 <= starts[cut_at + 1] <= starts[cut_at]
    assert starts.count(0) == 1 and starts[cut_at + 1] > 0


def test_http_short_body_without_error_and_stall_are_retried(server, wat, ecfg, clean):
    server.inject(wat.name, faults.ok(), faults.cut(0.3, reset=False), faults.stall(7, at=0.2))
    t0 = time.monotonic()
    table, stats = read(server.url(wat.name), ecfg, storage())
    assert table.equals(clean)
    assert stats.counts["io.retries"] == 2
    assert time.monotonic() - t0 < 20


def test_http_429_waits_for_retry_after(server, wat, ecfg, clean):
    server.inject(wat.name, faults.status(429, retry_after=1))
    table, stats = read(server.url(wat.name), ecfg, storage(io_backoff_base=0.01))
    assert table.equals(clean)
    assert stats.counts["io.backoff_ms"] >= 1000  # the server's Retry-After, not the 10 ms back-off


def test_retries_spent_raise_transient_io_error(server, wat, ecfg):
    server.inject(wat.name, faults.ok(), faults.ok(), *[faults.status(503)] * 20)  # then down for good
    stats = Stats()
    got = []
    with pytest.raises(TransientIOError) as err:
        for batch in extract_file(server.url(wat.name), None, ecfg, storage(io_retries=2), stats, batch_rows=300):
            got.append(batch)
    assert wat.name in str(err.value) and "after 2 retries" in str(err.value)
    assert got  # rows were yielded before the failure: the caller must not commit them
    assert sum(1 for m, p, _, k in server.log if m == "GET" and k == "status") == 3


def test_a_file_replaced_mid_read_is_not_spliced(wat, ecfg, tmp_path):
    served = tmp_path / "moving.wat.gz"
    served.write_bytes(wat.read_bytes())
    with faults.FaultHTTPServer(tmp_path) as srv:
        stats = Stats()
        batches = extract_file(srv.url(served.name), None, ecfg, storage(), stats, batch_rows=300)
        next(batches)  # reading has begun
        served.write_bytes(wat.read_bytes() + b"\0" * 100)  # the object is replaced ...
        srv.inject(served.name, faults.cut(0.5))  # ... and the next range request is cut
        with pytest.raises(TransientIOError, match="changed while being read"):
            list(batches)


def test_missing_and_forbidden_are_not_retried(server, wat, ecfg):
    t0 = time.monotonic()
    with pytest.raises(FileNotFoundError):
        list(extract_file(server.url("nope.wat.gz"), None, ecfg, storage(io_backoff_base=5), Stats()))
    server.inject(wat.name, faults.status(403), every=True)
    with pytest.raises(Exception) as err:
        list(extract_file(server.url(wat.name), None, ecfg, storage(io_backoff_base=5), Stats()))
    assert not isinstance(err.value, TransientIOError)
    assert time.monotonic() - t0 < 5  # no back-off was slept


def test_s3_through_fault_proxy(s3_server, wat, ecfg, clean):
    key = "crawl/" + wat.name
    s3_server.client.put_object(Bucket=s3_server.bucket, Key=key, Body=wat.read_bytes())
    with faults.FaultProxy(s3_server.endpoint) as proxy:
        st = storage(s3_endpoint=proxy.endpoint, s3_region="us-east-1")
        proxy.inject(wat.name, faults.status(503), faults.ok(), faults.cut(0.5), faults.stall(7, at=0.1),
                     faults.status(500, s3_code="InternalError"))
        table, stats = read(s3_server.uri(key), ecfg, st)
        assert table.equals(clean)
        assert stats.counts["io.retries"] == 4
        kinds = [k for m, _, _, k in proxy.log if m == "GET"]
        assert kinds[:6] == ["status", "", "cut", "stall", "status", ""]
        starts = [int(r[6:].split("-")[0]) for m, _, r, _ in proxy.log if m == "GET" and r]
        # resumed at the first byte not handed on (at most one 1 MiB read before the cut range), not at 0
        assert starts[2] - 1024 * 1024 <= starts[3] <= starts[2] and starts[3] > 0
        assert starts.count(0) == 2  # the 503 and its retry

        proxy.inject(wat.name, faults.status(503), every=True)
        with pytest.raises(TransientIOError):
            read(s3_server.uri(key), ecfg, st)


def test_open_input_reads_local_files_plainly(wat):
    with open_input(str(wat)) as fh:
        assert fh.read() == wat.read_bytes()


def test_classifier():
    import aiohttp
    from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

    def client_error(code: str, status: int) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": "m"},
                            "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")

    def wrapped(cause: BaseException) -> OSError:  # what s3fs raises for a ClientError
        exc = OSError(errno.EBUSY, "translated")
        exc.__cause__ = cause
        return exc

    info = aiohttp.RequestInfo(url="http://127.0.0.1/x", method="GET", headers={}, real_url="http://127.0.0.1/x")
    transient = [
        client_error("SlowDown", 503), client_error("InternalError", 500), client_error("RequestTimeout", 400),
        wrapped(client_error("SlowDown", 503)), ConnectionResetError(), TimeoutError(), socket.gaierror(-2, "dns"),
        http.client.IncompleteRead(b"x", 10), aiohttp.ClientResponseError(info, (), status=503),
        aiohttp.ClientResponseError(info, (), status=429), aiohttp.ClientPayloadError("cut"),
        aiohttp.ServerDisconnectedError(), EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), OSError(errno.ECONNRESET, "reset"),
    ]
    permanent = [
        client_error("AccessDenied", 403), client_error("NoSuchKey", 404), wrapped(client_error("AccessDenied", 403)),
        aiohttp.ClientResponseError(info, (), status=404), aiohttp.ClientResponseError(info, (), status=400),
        FileNotFoundError("x"), PermissionError("x"), ValueError("bad json"), OSError(errno.EINVAL, "bad"),
        TransientIOError("already retried"),
    ]
    assert [e for e in transient if not is_transient(e)] == []
    assert [e for e in permanent if is_transient(e)] == []


def test_backoff_is_exponential_with_jitter_and_capped():
    import random

    st = StorageConfig(io_backoff_base=1.0, io_backoff_max=10.0)
    rng = random.Random(1)
    for attempt in range(1, 8):
        delays = [backoff_delay(attempt, st, rng=rng) for _ in range(200)]
        assert min(delays) >= 0 and max(delays) <= min(10.0, 2 ** (attempt - 1))
        assert max(delays) - min(delays) > 0.3 * min(10.0, 2 ** (attempt - 1))  # jittered, not fixed
