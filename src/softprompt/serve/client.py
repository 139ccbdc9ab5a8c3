"""A small client for `softprompt serve`, on the standard library alone.

    client = Client("http://127.0.0.1:8000", token="...")
    client.predict("sentiment", ["A gorgeous film.", "The plot was a mess."])   # ["1", "0"]
    client.predict_items([("sentiment", "A gorgeous film."), ("colour", "the sky")])

An error answer raises ServeError (its HTTP status and message); no answer at all raises ServerUnreachable.
"""

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class ServeError(Exception):
    """An answer that is an error, or not softprompt serve's (not a JSON object): its HTTP status and message."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class ServerUnreachable(ConnectionError):
    """No answer from the server at all: nothing listening, an unknown host, or no answer within the timeout."""


class Client:
    def __init__(self, url: str = "http://127.0.0.1:8000", token: str | None = None, timeout: float = 60.0):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        local = urllib.parse.urlsplit(self.url).hostname in LOOPBACK
        self._opener = (
            urllib.request.build_opener(urllib.request.ProxyHandler({})) if local else urllib.request.build_opener()
        )

    def predict(self, task: str, inputs: list) -> list[str]:
        """Predictions for inputs of one task: texts, or objects holding the template's fields."""
        return self._call("POST", "/v1/predict", {"task": task, "inputs": list(inputs)})["predictions"]

    def predict_items(self, items: list) -> list[str]:
        """Predictions for (task, input) pairs (or {"task": ..., "input": ...} objects) of any tasks, in order."""
        items = [item if isinstance(item, dict) else {"task": item[0], "input": item[1]} for item in items]
        return self._call("POST", "/v1/predict", {"items": items})["predictions"]

    def tasks(self) -> list[dict]:
        return self._call("GET", "/v1/tasks")["tasks"]

    def rescan(self) -> dict:
        """Ask the server to load new and changed prompt files now."""
        return self._call("POST", "/v1/tasks")

    def health(self) -> dict:
        return self._call("GET", "/healthz")

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                raw, status = response.read(), response.status
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                message = json.loads(raw)["error"]
            except (ValueError, KeyError, TypeError):
                message = raw.decode(errors="replace") or e.reason
            raise ServeError(e.code, message) from None
        except urllib.error.URLError as e:  # refused, unknown host, or a connect timeout
            raise ServerUnreachable(f"cannot reach softprompt serve at {self.url}: {e.reason}") from None
        except TimeoutError:  # connected, but no answer in time
            raise ServerUnreachable(f"no answer from {self.url}{path} within {self.timeout:g} s") from None
        except (ConnectionError, http.client.HTTPException) as e:  # closed mid-answer, or not an HTTP server
            raise ServerUnreachable(
                f"no HTTP answer from {self.url}{path}: {e.__class__.__name__} {e}".rstrip()
            ) from None
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise ServeError(
                status, f"{self.url}{path} answered with something other than a JSON object: is it softprompt serve?"
            )
        return answer
