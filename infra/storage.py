"""Artifact store: a local directory (`file:///path`) or S3 (`s3://bucket/prefix`, via boto3).

Both speak the same small protocol so the service layer never branches on where bytes live. Keys
are relative paths (`files/{org}/{file_id}.jsonl`, `artifacts/{org}/{job}/{target}/model.gguf`).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from infra.settings import get_settings

CHUNK = 1024 * 1024


class ArtifactStore(Protocol):
    url: str

    def put_file(self, key: str, path: Path, metadata: dict[str, str] | None = None) -> None: ...
    def put_bytes(self, key: str, data: bytes) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def download(self, key: str, dest: Path) -> Path: ...
    def size(self, key: str) -> int: ...
    def iter_range(self, key: str, start: int, end: int) -> Iterator[bytes]: ...
    def delete(self, key: str) -> None: ...
    def presigned_url(self, key: str, expires_s: int = 3600) -> str | None: ...


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = f"file://{root}"
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"storage key escapes the store: {key!r}")
        return path

    def put_file(self, key: str, path: Path, metadata: dict[str, str] | None = None) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".partial")
        shutil.copyfile(path, tmp)
        tmp.replace(dest)  # readers never see a half-written file

    def put_bytes(self, key: str, data: bytes) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".partial")
        tmp.write_bytes(data)
        tmp.replace(dest)

    def get_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def download(self, key: str, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self._path(key), dest)
        return dest

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def iter_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        with self._path(key).open("rb") as fh:
            fh.seek(start)
            remaining = end - start + 1
            while remaining > 0 and (chunk := fh.read(min(CHUNK, remaining))):
                remaining -= len(chunk)
                yield chunk

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def presigned_url(self, key: str, expires_s: int = 3600) -> str | None:
        return None  # a local directory has no URL a customer could reach; the API streams instead


class S3Store:
    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None, region: str) -> None:
        import boto3

        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}"
        self.client: Any = boto3.client("s3", endpoint_url=endpoint_url, region_name=region)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_file(self, key: str, path: Path, metadata: dict[str, str] | None = None) -> None:
        # upload_file switches to multipart for large files; our own sha256 goes in metadata
        # because S3's multipart checksums are composite, not a full-file sha256.
        self.client.upload_file(
            str(path), self.bucket, self._key(key), ExtraArgs={"Metadata": metadata or {}}
        )

    def put_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get_bytes(self, key: str) -> bytes:
        body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        try:
            return bytes(body.read())
        finally:
            body.close()

    def download(self, key: str, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.client.download_file(self.bucket, self._key(key), str(dest))
        return dest

    def size(self, key: str) -> int:
        return int(self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"])

    def iter_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        resp = self.client.get_object(Bucket=self.bucket, Key=self._key(key), Range=f"bytes={start}-{end}")
        body = resp["Body"]
        try:
            yield from body.iter_chunks(CHUNK)
        finally:
            body.close()

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def presigned_url(self, key: str, expires_s: int = 3600) -> str | None:
        url: str = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=expires_s
        )
        return url


def open_store(url: str, endpoint_url: str | None = None, region: str = "us-east-1") -> ArtifactStore:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalStore(Path(parsed.path))
    if parsed.scheme == "s3":
        if len(parsed.netloc) < 3:
            raise ValueError(f"S3 bucket name in {url!r} must be at least 3 characters")
        return S3Store(parsed.netloc, parsed.path, endpoint_url, region)
    raise ValueError(f"EDGETUNE_ARTIFACT_STORE must be file:///path or s3://bucket/prefix, got {url!r}")


@lru_cache
def get_store() -> ArtifactStore:
    s = get_settings()
    return open_store(s.resolved_artifact_store, s.s3_endpoint_url, s.s3_region)
