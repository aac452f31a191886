"""Both artifact stores honour the same protocol; S3 runs against moto's real HTTP server."""

from __future__ import annotations

import hashlib

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer

from infra.storage import LocalStore, open_store
from tests.conftest import free_port


@pytest.fixture(scope="module")
def s3_url():
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
    ).create_bucket(Bucket="store-test")
    yield endpoint
    server.stop()


def _roundtrip(store, tmp_path) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    src = tmp_path / "blob.bin"
    src.write_bytes(data)
    store.put_file("a/b/blob.bin", src, metadata={"sha256": hashlib.sha256(data).hexdigest()})
    assert store.size("a/b/blob.bin") == len(data)
    assert store.get_bytes("a/b/blob.bin") == data
    assert b"".join(store.iter_range("a/b/blob.bin", 10, 1000)) == data[10:1001]
    assert store.download("a/b/blob.bin", tmp_path / "out.bin").read_bytes() == data
    store.delete("a/b/blob.bin")
    with pytest.raises(Exception):  # noqa: B017 - each backend raises its own not-found error
        store.get_bytes("a/b/blob.bin")


def test_local_store(tmp_path) -> None:
    store = LocalStore(tmp_path / "store")
    _roundtrip(store, tmp_path)
    assert store.presigned_url("x") is None
    with pytest.raises(ValueError, match="escapes"):
        store.put_bytes("../outside", b"x")


def test_s3_store_against_moto(s3_url, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "t")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "t")
    store = open_store("s3://store-test/pre", endpoint_url=s3_url)
    _roundtrip(store, tmp_path)
    store.put_bytes("k.txt", b"hello")
    url = store.presigned_url("k.txt")
    assert url and httpx.get(url).content == b"hello"


def test_bad_store_urls() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        open_store("s3://ab/x")
    with pytest.raises(ValueError, match="file:///path or s3://"):
        open_store("ftp://host/x")
