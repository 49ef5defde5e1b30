"""A fake Kubernetes API server at the client's HTTP boundary, answering with recorded responses.

The official client builds real requests and parses real responses (including ApiException handling);
only urllib3's ``PoolManager.request`` is replaced. Each route maps (method, path[?query]) to a recorded
file of tests/fixtures/reference/k8s-api-responses/ (``*.json``: one response; ``*.jsonl``: a watch stream), or to
a response built in memory from a recorded one (:func:`changed`).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

import urllib3

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "reference" / "k8s-api-responses"
HOST = "https://k8s.test"


def recorded(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def changed(name: str, edit) -> dict:
    """A recorded response with its body changed by ``edit(body)``, for answers no recording holds (each test
    that uses one says which field it changed and where the new value's shape comes from)."""
    rec = recorded(name)
    edit(rec["body"])
    return rec


def response_for(name: str | dict) -> urllib3.HTTPResponse:
    if isinstance(name, dict):  # an in-memory response, {"status", "body"} as in the recorded files
        body = name["body"]  # a string is a text answer (a pod's log)
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        headers = {"Content-Type": "text/plain" if isinstance(body, str) else "application/json"}
        return urllib3.HTTPResponse(body=io.BytesIO(data), status=name["status"], headers=headers,
                                    preload_content=False, reason=_REASONS.get(name["status"], "OK"))
    if name.endswith(".jsonl"):
        data = (FIXTURES / name).read_bytes()
        return urllib3.HTTPResponse(body=io.BytesIO(data), status=200, headers={"Content-Type": "application/json"},
                                    preload_content=False)
    rec = recorded(name)
    body = rec["body"]
    if isinstance(body, str):
        data, headers = body.encode(), ({"Content-Type": "text/plain; charset=utf-8"} if body else {})
    else:
        data, headers = json.dumps(body).encode(), {"Content-Type": "application/json"}
    return urllib3.HTTPResponse(body=io.BytesIO(data), status=rec["status"], headers=headers,
                                preload_content=False, reason=_REASONS.get(rec["status"], "OK"))


_REASONS = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
            403: "Forbidden", 404: "Not Found", 409: "Conflict", 422: "Unprocessable Entity",
            500: "Internal Server Error"}


class FakeApiServer:
    """Routes requests to recorded responses and keeps every request for assertions."""

    def __init__(self, routes: dict[tuple[str, str], str | dict | list]):
        self.routes = {key: list(v) if isinstance(v, list) else [v] for key, v in routes.items()}
        self.requests: list[tuple[str, str, dict]] = []

    def __call__(self, method, url, *args, **kwargs):
        parts = urlsplit(url)
        path, query = unquote(parts.path), dict(parse_qsl(parts.query))
        self.requests.append((method, path, query))
        # the most specific route wins: one whose query items are all in the request, else the bare path
        candidates = []
        for (route_method, route), names in self.routes.items():
            route_path, _, route_query = route.partition("?")
            wanted = dict(parse_qsl(route_query))
            if route_method == method and route_path == path and wanted.items() <= query.items():
                candidates.append((len(wanted), names))
        if not candidates:
            raise AssertionError(f"unexpected request {method} {url}")
        names = max(candidates, key=lambda c: c[0])[1]
        name = names.pop(0) if len(names) > 1 else names[0]
        return response_for(name)

    def client(self):
        from kubernetes import client

        api_client = client.ApiClient(client.Configuration(host=HOST))
        api_client.rest_client.pool_manager.request = self
        return api_client
