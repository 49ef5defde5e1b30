"""``python -m whisper_k8s.transfer.fetch URL DEST``: pull a dataset into a volume from inside the cluster.

Runs in a Kubernetes Job (``dataset fetch``) with the volume at DEST and the store's credentials in its
environment (from a Secret). Sources:

- ``s3://BUCKET/PREFIX``: every object under the prefix (S3-compatible: MinIO, Ceph RGW, Huawei OBS; see
  ``s3``), each verified against its size and, for objects stored in one part, its MD5 ETag;
- ``https://HOST/PATH/`` (ending in ``/``): a Common Voice 11 tree published over HTTP(S): n_shards.json
  names every transcript and shard (as the Hugging Face loader reads it), ``--lang`` keeps some languages;
- ``https://HOST/PATH/FILE``: that one file; verified against its Content-Length.

Writes go through ``store`` as for an upload: a file appears under its name only whole and verified, the
manifest records its sha256 and source identity (ETag, else Last-Modified), a rerun fetches only what is
missing or changed, and an interrupted file continues from its partial bytes (Range requests; a server that
ignores them sends the whole file again). Exit status 0 done, 2 bad input (URL, credentials, a full volume),
3 the store cannot be reached. Progress goes to stderr as log lines (a pod's log is no terminal).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import PurePosixPath

from whisper_k8s.dataset import common_voice_layout as cv
from whisper_k8s.errors import ClusterError, UserError, WhisperK8sError
from whisper_k8s.transfer.store import TransferResult, VolumeFull, VolumeStore, free_bytes, human_size

LOG = logging.getLogger("whisper_k8s.transfer.fetch")
CHUNK = 1 << 20
ATTEMPTS = 3


@dataclass(frozen=True)
class RemoteFile:
    path: str  # the name under DEST
    size: int
    source: str  # ETag or Last-Modified: what makes two versions differ
    md5: str | None = None  # the content's MD5 when the store states it (an S3 single-part ETag)
    location: str = ""  # the key or URL to read


class S3Source:
    def __init__(self, url: str, endpoint: str | None = None):
        from whisper_k8s.transfer.s3 import S3Client

        parts = urllib.parse.urlsplit(url)
        self.bucket, self.prefix = parts.netloc, parts.path.lstrip("/")
        if not self.bucket:
            raise UserError(f"{url}: no bucket; write s3://BUCKET/PREFIX")
        self.client = S3Client.from_environment(endpoint)

    def list(self) -> list[RemoteFile]:
        base = self.prefix if not self.prefix or self.prefix.endswith("/") else self.prefix + "/"
        objects = [o for o in self.client.list(self.bucket, self.prefix) if not o.key.endswith("/")]
        if not objects:
            raise UserError(f"s3://{self.bucket}/{self.prefix} holds no objects: check the prefix")
        files = []
        for obj in objects:
            name = obj.key[len(base):] if obj.key.startswith(base) else PurePosixPath(obj.key).name
            md5 = obj.etag if len(obj.etag) == 32 and "-" not in obj.etag else None
            files.append(RemoteFile(name, obj.size, obj.etag, md5, obj.key))
        return files

    def open(self, file: RemoteFile, offset: int):
        return self.client.get(self.bucket, file.location, offset, etag=file.source)


class HttpSource:
    def __init__(self, url: str, languages: list[str] | None = None, timeout: float = 60.0):
        self.url, self.languages, self.timeout = url, languages, timeout

    def _open(self, url: str, method: str = "GET", headers: dict | None = None):
        request = urllib.request.Request(url, method=method, headers=headers or {})
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)  # noqa: S310 - http(s) only
        except urllib.error.HTTPError as err:
            fix = "check the URL" if err.code == 404 else "check the URL and that the server allows this client"
            raise UserError(f"{url}: the server answered {err.code} {err.reason}: {fix}") from None
        except (urllib.error.URLError, OSError) as err:
            raise ClusterError(f"cannot reach {url} ({getattr(err, 'reason', err)}): check the URL and that the "
                               "cluster can reach the server (proxy: HTTPS_PROXY in the Job's environment)") from None

    def _describe(self, url: str, name: str) -> RemoteFile:
        with self._open(url, "HEAD") as response:
            size = response.headers.get("Content-Length")
            if size is None:
                raise UserError(f"{url}: the server gives no Content-Length, so the download cannot be verified")
            source = response.headers.get("ETag") or response.headers.get("Last-Modified") or ""
            return RemoteFile(name, int(size), source, None, url)

    def list(self) -> list[RemoteFile]:
        if not self.url.endswith("/"):
            return [self._describe(self.url, PurePosixPath(urllib.parse.urlsplit(self.url).path).name)]
        with self._open(self.url + cv.N_SHARDS_FILE) as response:
            try:
                counts = json.loads(response.read())
            except ValueError:
                raise UserError(f"{self.url}{cv.N_SHARDS_FILE} is not JSON: is the URL a Common Voice 11 root?") from None
        languages = self.languages or sorted(counts)
        absent = [lang for lang in languages if lang not in counts]
        if absent:
            raise UserError(f"--lang {','.join(absent)}: not in {self.url}{cv.N_SHARDS_FILE} (it has "
                            f"{', '.join(sorted(counts))})")
        names = [cv.N_SHARDS_FILE]
        for lang in languages:
            for split, shards in sorted(counts[lang].items()):
                if int(shards or 0) > 0:
                    names.append(str(cv.transcript_path("", lang, split)))
                    names += [str(cv.shard_path("", lang, split, k)) for k in range(int(shards))]
        return [self._describe(self.url + urllib.parse.quote(name), name) for name in names]

    def open(self, file: RemoteFile, offset: int):
        headers = {"Range": f"bytes={offset}-", "If-Range": file.source} if offset and file.source else {}
        return self._open(file.location, headers=headers)


def open_source(url: str, *, endpoint: str | None = None, languages: list[str] | None = None):
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme == "s3":
        return S3Source(url, endpoint)
    if scheme in ("http", "https"):
        return HttpSource(url, languages)
    raise UserError(f"{url}: unsupported URL; use s3://BUCKET/PREFIX, https://HOST/PATH/ (a Common Voice tree) "
                    "or https://HOST/PATH/FILE")


def _fetch_one(store: VolumeStore, source, file: RemoteFile) -> int:
    """Download one file into the store (continuing a partial one); the bytes transferred."""
    partial = store.partials().get(file.path)
    offset = partial.received if partial and (partial.size, partial.source) == (file.size, file.source) else 0
    with source.open(file, offset) as response:
        if offset and response.status != 206:
            offset = 0  # the server sent the whole file (no Range support, or the file changed)
        incoming = store.begin(file.path, file.size, file.source, offset, md5=file.md5 is not None)
        try:
            while chunk := response.read(CHUNK):
                incoming.write(chunk)
        except (OSError, urllib.error.URLError):
            incoming.suspend()
            raise
    incoming.finish(md5=file.md5)
    return file.size - offset


def fetch(url: str, dest: str, *, endpoint: str | None = None, languages: list[str] | None = None,
          verify: bool = False, progress_seconds: float = 10.0) -> TransferResult:
    """Fetch ``url`` into ``dest`` (see the module doc)."""
    started = time.monotonic()
    source = open_source(url, endpoint=endpoint, languages=languages)
    with VolumeStore(dest) as store:
        result = _fetch_into(store, source, url, verify=verify, progress_seconds=progress_seconds)
    result.seconds = time.monotonic() - started
    return result


def _fetch_into(store: VolumeStore, source, url: str, *, verify: bool, progress_seconds: float) -> TransferResult:
    from whisper_k8s.transfer.store import Rejected

    started, dest = time.monotonic(), store.root
    present = store.manifest.present(verify=verify)
    files = source.list()
    todo = [f for f in files if (r := present.get(f.path)) is None or (r.size, r.source) != (f.size, f.source)]
    result = TransferResult(kept_files=len(files) - len(todo))
    total = sum(f.size for f in todo)
    if total > free_bytes(store.root):
        raise UserError(f"{dest} has {human_size(free_bytes(store.root))} free but {len(todo)} files need "
                        f"{human_size(total)}: give the claim more room (a larger --size) and fetch again")
    LOG.info("fetching %d of %d files (%.2f GiB) from %s; %d already there", len(todo), len(files),
             total / 2**30, url, result.kept_files)
    last = time.monotonic()
    try:
        for number, file in enumerate(todo, start=1):
            for attempt in range(1, ATTEMPTS + 1):
                try:
                    result.stored_bytes += _fetch_one(store, source, file)
                    break
                except (ClusterError, Rejected, OSError) as err:
                    if isinstance(err, VolumeFull) or attempt == ATTEMPTS:
                        raise
                    LOG.warning("%s: %s; trying again (%d of %d)", file.path, err, attempt + 1, ATTEMPTS)
                    time.sleep(attempt)
            result.stored_files += 1
            if time.monotonic() - last >= progress_seconds or number == len(todo):
                last = time.monotonic()
                rate = result.stored_bytes / max(1e-9, last - started)
                LOG.info("%d/%d files, %.2f of %.2f GiB, %.1f MiB/s, ETA %.0f s", number, len(todo),
                         result.stored_bytes / 2**30, total / 2**30, rate / 2**20,
                         (total - result.stored_bytes) / max(rate, 1.0))
    except VolumeFull as err:
        raise UserError(f"{dest} is full ({err.strerror}); {result.stored_files} file(s) fetched and kept: give "
                        "the claim more room (a larger --size) and fetch again to get the rest") from None
    except Rejected as err:
        raise ClusterError(f"{err}: the store served other bytes than it announced; fetch again") from None
    finally:
        store.manifest.compact()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m whisper_k8s.transfer.fetch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("dest", help="destination folder on the volume")
    parser.add_argument("--endpoint", help="S3 endpoint (default: $AWS_ENDPOINT_URL_S3 or $AWS_ENDPOINT_URL)")
    parser.add_argument("--lang", help="Common Voice languages to fetch from an HTTP(S) tree (comma list)")
    parser.add_argument("--verify", action="store_true", help="re-hash what the volume already holds first")
    parser.add_argument("--check", choices=["common-voice"], help="print the Common Voice tree check at the end")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="fetch: %(message)s", stream=sys.stderr)
    try:
        result = fetch(args.url, args.dest, endpoint=args.endpoint, verify=args.verify,
                       languages=args.lang.split(",") if args.lang else None)
    except WhisperK8sError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print(f"fetched {result.stored_files} file(s), {result.stored_bytes / 2**20:.1f} MiB in {result.seconds:.1f} s; "
          f"{result.kept_files} already there", file=sys.stderr)
    if args.check:
        from whisper_k8s.dataset.tree_check import check_tree

        print(check_tree(args.dest).summary(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
