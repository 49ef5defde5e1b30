"""A small S3 client: list a prefix and read objects (ranges included), signed with AWS Signature Version 4.

Why not boto3: the images carry no AWS SDK (boto3 + botocore are ~100 MB and pin python-dateutil below the
version the kubernetes client needs), and a fetch needs two read-only calls: ListObjectsV2 and GetObject.
SigV4 over ``urllib`` is the documented algorithm (AWS "Signature Version 4 signing process": canonical
request, string to sign, HMAC-SHA256 key chain) and is what MinIO, Ceph RGW and Huawei OBS verify for their
S3 APIs. Path-style addressing (``ENDPOINT/BUCKET/KEY``) is the default, as those stores expect;
``S3_ADDRESSING_STYLE=virtual`` uses ``BUCKET.ENDPOINT/KEY``.

Configuration, from the environment only (a Kubernetes Secret; never a flag, never a values file):
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, optional ``AWS_SESSION_TOKEN``, ``AWS_REGION`` (or
``AWS_DEFAULT_REGION``; default us-east-1), ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (the SDKs' names).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timezone

from whisper_k8s.errors import ClusterError, UserError

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
_CREDENTIAL_ERRORS = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken",
                      "ExpiredToken", "AuthorizationHeaderMalformed")
CREDENTIALS_FIX = ("check the Secret given with --secret: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and "
                   "AWS_REGION) must be a key pair the store accepts, allowed to list and read the bucket")


@dataclass(frozen=True)
class S3Object:
    key: str
    size: int
    etag: str  # without quotes


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    token: str | None = None

    @classmethod
    def from_environment(cls) -> Credentials:
        access, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
        if not access or not secret:
            raise UserError("no S3 credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set; create a "
                            "Secret with those keys and pass --secret NAME")
        return cls(access, secret, os.environ.get("AWS_SESSION_TOKEN") or None)


def _quote(text: str, safe: str = "-_.~") -> str:
    return urllib.parse.quote(text, safe=safe)


def signing_key(secret: str, date: str, region: str, service: str = "s3") -> bytes:
    key = f"AWS4{secret}".encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def sign(method: str, url: str, headers: dict[str, str], credentials: Credentials, region: str,
         now: datetime | None = None, payload_sha256: str = EMPTY_SHA256) -> dict[str, str]:
    """``headers`` plus the SigV4 ones (x-amz-date, x-amz-content-sha256, Authorization) for this request."""
    now = now or datetime.now(timezone.utc)
    stamp, date = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    parts = urllib.parse.urlsplit(url)
    signed = {k.lower(): v.strip() for k, v in headers.items()}
    signed.update({"host": parts.netloc, "x-amz-date": stamp, "x-amz-content-sha256": payload_sha256})
    if credentials.token:
        signed["x-amz-security-token"] = credentials.token
    names = sorted(signed)
    query = sorted(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    canonical = "\n".join([
        method, _quote(urllib.parse.unquote(parts.path) or "/", safe="-_.~/"),
        "&".join(f"{_quote(k)}={_quote(v)}" for k, v in query),
        "".join(f"{k}:{signed[k]}\n" for k in names), ";".join(names), payload_sha256,
    ])
    scope = f"{date}/{region}/s3/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    signature = hmac.new(signing_key(credentials.secret_key, date, region), to_sign.encode(),
                         hashlib.sha256).hexdigest()
    signed["authorization"] = (f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
                               f"SignedHeaders={';'.join(names)}, Signature={signature}")
    return signed


class S3Client:
    def __init__(self, endpoint: str, credentials: Credentials, region: str = "us-east-1",
                 virtual_hosted: bool = False, timeout: float = 60.0):
        self.endpoint, self.credentials, self.region = endpoint.rstrip("/"), credentials, region
        self.virtual_hosted, self.timeout = virtual_hosted, timeout

    @classmethod
    def from_environment(cls, endpoint: str | None = None) -> S3Client:
        endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if not endpoint:
            raise UserError("no S3 endpoint: set AWS_ENDPOINT_URL in the Secret or pass --endpoint "
                            "https://HOST:PORT (MinIO, Ceph RGW and OBS each have their own)")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        return cls(endpoint, Credentials.from_environment(), region,
                   os.environ.get("S3_ADDRESSING_STYLE", "path") == "virtual")

    def url(self, bucket: str, key: str = "", query: dict[str, str] | None = None) -> str:
        parts = urllib.parse.urlsplit(self.endpoint)
        path = "/" + _quote(key, safe="-_.~/")
        if self.virtual_hosted:
            netloc = f"{bucket}.{parts.netloc}"
        else:
            netloc, path = parts.netloc, f"/{bucket}" + (path if key else "")
        return urllib.parse.urlunsplit((parts.scheme, netloc, path, urllib.parse.urlencode(sorted((query or {}).items()), quote_via=urllib.parse.quote), ""))

    def request(self, bucket: str, key: str = "", query: dict | None = None, headers: dict | None = None):
        """GET one resource; the open response. UserError/ClusterError with the fix for what went wrong."""
        url = self.url(bucket, key, query)
        request = urllib.request.Request(url, headers=sign("GET", url, headers or {}, self.credentials, self.region))
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)  # noqa: S310 - http(s) endpoint only
        except urllib.error.HTTPError as err:
            raise self._error(err, bucket, key) from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise ClusterError(f"cannot reach the object store at {self.endpoint} ({reason}): check the endpoint "
                               "(AWS_ENDPOINT_URL or --endpoint) and that the cluster can reach it") from None

    def _error(self, err: urllib.error.HTTPError, bucket: str, key: str) -> Exception:
        body = err.read()
        try:
            root = ET.fromstring(body)
            code, message = root.findtext("Code") or "", root.findtext("Message") or ""
        except ET.ParseError:
            code, message = "", body[:200].decode(errors="replace")
        where = f"s3://{bucket}/{key}" if key else f"s3://{bucket}"
        if code in _CREDENTIAL_ERRORS or err.code in (401, 403):
            return UserError(f"the object store at {self.endpoint} refused {where}: {code or err.code} "
                             f"({message}): {CREDENTIALS_FIX}")
        if code in ("NoSuchBucket", "NoSuchKey") or err.code == 404:
            return UserError(f"{where} does not exist on {self.endpoint} ({code or err.code}): check the bucket "
                             "and prefix in the URL")
        return ClusterError(f"the object store at {self.endpoint} answered {err.code} {code} for {where} "
                            f"({message}): retry later, or ask its operator")

    def list(self, bucket: str, prefix: str = "") -> list[S3Object]:
        """Every object under ``prefix`` (ListObjectsV2, all pages)."""
        objects, token = [], None
        while True:
            query = {"list-type": "2", "prefix": prefix, **({"continuation-token": token} if token else {})}
            with self.request(bucket, query=query) as response:
                root = ET.fromstring(response.read())
            for item in root.iter(f"{_NS}Contents"):
                objects.append(S3Object(item.findtext(f"{_NS}Key"), int(item.findtext(f"{_NS}Size")),
                                        (item.findtext(f"{_NS}ETag") or "").strip('"')))
            if root.findtext(f"{_NS}IsTruncated") != "true":
                return objects
            token = root.findtext(f"{_NS}NextContinuationToken")

    def get(self, bucket: str, key: str, offset: int = 0, etag: str | None = None):
        """The object's body from ``offset`` (the same version as ``etag``: a changed object is refused)."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        if etag:
            headers["If-Match"] = f'"{etag}"'
        return self.request(bucket, key, headers=headers)
