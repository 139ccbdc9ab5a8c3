"""The server under bad input, path tricks, missing credentials and faults: every refusal a 4xx with a JSON error, nothing
read from outside the prompt folder, nothing open without the token but /healthz, no CORS, and a server that keeps
answering after clients vanish and prompt files break."""

import hmac
import json
import logging
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import COLOUR, SENTIMENT, save_model, tiny_gpt2, write_prompt
from fastapi.testclient import TestClient
from test_serve import free_port, served_folder

import softprompt
from softprompt.cli import main
from softprompt.files.prompt_file import save_prompt
from softprompt.options import ServeOptions
from softprompt.serve.app import create_app
from softprompt.serve.client import Client, ServeError
from softprompt.serve.engine import Engine

pytestmark = pytest.mark.slow  # starts processes or servers, loads real models, or draws many examples

JSON = {"content-type": "application/json"}
LIMITS = {"max_inputs": 4, "max_input_chars": 100, "max_body_bytes": 2000}


@pytest.fixture
def served(tmp_path):
    model = tiny_gpt2()
    folder = served_folder(tmp_path / "prompts", model)
    return model, folder, Engine(model, folder)


def is_json_error(response) -> str:
    assert response.headers["content-type"] == "application/json", response.headers
    body = response.json()
    assert set(body) == {"error"} and body["error"], body
    return body["error"]


# ----- bad requests ----------------------------------------------------------------------------------------
def body(value) -> bytes:
    return json.dumps(value).encode()


BAD = [
    # oversize: a declared length beyond the bound, and a chunked body with no length that grows beyond it
    ("declared length", body({"task": "sentiment", "inputs": ["x" * 2100]}), 413, "larger than 2000 bytes"),
    (
        "chunked, no length",
        iter([b'{"task": "sentiment", "inputs": ["', b"x" * 1500, b"x" * 1500, b'"]}']),
        413,
        "larger than 2000 bytes",
    ),
    # too many inputs, too long inputs, in either form; an object's fields count together
    ("too many inputs", body({"task": "sentiment", "inputs": ["x"] * 5}), 413, "5 inputs, more than the 4"),
    ("too many items", body({"items": [{"task": "sentiment", "input": "x"}] * 5}), 413, "5 inputs, more than the 4"),
    (
        "too long input",
        body({"task": "sentiment", "inputs": ["x" * 101]}),
        413,
        "input 1 has 101 characters, more than the 100",
    ),
    (
        "too long item",
        body({"items": [{"task": "sentiment", "input": "x"}, {"task": "colour", "input": "y" * 101}]}),
        413,
        "input 2 has 101",
    ),
    (
        "too long object",
        body({"task": "qa", "inputs": [{"question": "q" * 60, "context": "c" * 60}]}),
        413,
        "input 1 has 120",
    ),
    # wrong types
    ("task a number", body({"task": 3, "inputs": ["x"]}), 422, "task: Input should be a valid string"),
    (
        "task null",
        body({"task": None, "items": [{"task": "sentiment", "input": "x"}]}),
        422,
        "task: Input should be a valid string",
    ),
    ("inputs a text", body({"task": "sentiment", "inputs": "great"}), 422, "inputs: Input should be a valid list"),
    (
        "an input a number",
        body({"task": "sentiment", "inputs": [1]}),
        422,
        "inputs.0: an input is a text, or an object whose values are texts",
    ),
    ("an input a list", body({"task": "sentiment", "inputs": [["great"]]}), 422, "inputs.0: an input is a text"),
    (
        "a field a number",
        body({"task": "qa", "inputs": [{"question": "q", "context": 3}]}),
        422,
        "inputs.0: an input is a text",
    ),
    (
        "an item's input a number",
        body({"items": [{"task": "qa", "input": 3}]}),
        422,
        "items.0.input: an input is a text",
    ),
    ("an item a text", body({"items": ["sentiment"]}), 422, "items.0"),
    ("a body a list", body([{"task": "sentiment", "inputs": ["x"]}]), 422, "body"),
    (
        "both forms",
        body({"task": "sentiment", "inputs": ["x"], "items": []}),
        422,
        'give either "task" and "inputs", or "items"',
    ),
    (
        "an unknown field",
        body({"task": "sentiment", "inputs": ["x"], "limit": 1}),
        422,
        "limit: Extra inputs are not permitted",
    ),
    # not JSON
    ("invalid JSON", b'{"task": "sentiment", "inputs": [}', 422, "the body is not valid JSON"),
    ("no body", b"", 422, "body: Field required"),
    ("not UTF-8", b'{"task": "\xff\xfe"}', 400, "error parsing the body"),
]


@pytest.mark.parametrize("content, status, message", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_a_bad_request_gets_a_4xx_with_a_json_error(served, content, status, message):
    _, _, engine = served
    with TestClient(create_app(engine, ServeOptions(**LIMITS))) as client:
        response = client.post("/v1/predict", content=content, headers=JSON)
        assert response.status_code == status
        assert message in is_json_error(response)
        assert (
            client.post("/v1/predict", json={"task": "sentiment", "inputs": ["great"]}).status_code == 200
        )  # still serving


def test_a_form_body_is_told_to_be_json(served):
    _, _, engine = served
    with TestClient(create_app(engine)) as client:
        response = client.post(
            "/v1/predict",
            content=b"task=sentiment&inputs=great",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert response.status_code == 422 and "as JSON" in is_json_error(response)


# ----- paths -------------------------------------------------------------------------------------------------
def test_task_and_file_names_cannot_leave_the_prompt_folder(served, tmp_path, caplog):
    model, folder, engine = served
    outside = write_prompt(tmp_path / "outside.safetensors", model, COLOUR, 2, seed=9)
    write_prompt(tmp_path / "elsewhere" / "prompt.safetensors", model, COLOUR, 2, seed=9)
    (folder / "link.safetensors").symlink_to(outside)  # a file link out of the folder
    (folder / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)  # a folder link out of it
    (folder / "alias.safetensors").symlink_to(folder / "sentiment.safetensors")  # a link within it serves
    with TestClient(create_app(engine)) as client, caplog.at_level(logging.WARNING, logger="softprompt.serve"):
        report = client.post("/v1/tasks").json()
        assert report["added"] == ["alias"]
        refused = {r["file"]: r["error"] for r in report["refused"]}
        assert set(refused) == {"link.safetensors", "linked/prompt.safetensors"}
        assert all("a link to a file outside the prompt folder" in error for error in refused.values())
        assert all(any(error in r.getMessage() for r in caplog.records) for error in refused.values())
        for name in [
            "../outside",
            "../outside.safetensors",
            str(outside),
            str(outside.with_suffix("")),
            "link",
            "linked",
            "..",
            "colour/prompt",
            "sentiment.safetensors",
            "",
        ]:
            response = client.post("/v1/predict", json={"task": name, "inputs": ["x"]})
            assert response.status_code == 404 and is_json_error(response).startswith(f"unknown task {name!r}"), name
        response = client.post("/v1/tasks", json={"file": str(outside)})  # the rescan names no file
        assert response.status_code == 422 and "takes no body" in is_json_error(response)
        assert client.post("/v1/tasks", json={}).status_code == 200
        assert sorted(t["name"] for t in client.get("/v1/tasks").json()["tasks"]) == [
            "alias",
            "answer",
            "colour",
            "qa",
            "sentiment",
        ]


def test_the_served_model_is_not_chosen_by_a_file_outside_the_folder(tmp_path, monkeypatch):
    model = tiny_gpt2()
    folder = tmp_path / "prompts"
    write_prompt(folder / "sentiment.safetensors", model, SENTIMENT, base_model="tiny")
    write_prompt(tmp_path / "outside.safetensors", model, SENTIMENT, base_model="another-model")
    (folder / "link.safetensors").symlink_to(tmp_path / "outside.safetensors")
    chosen = []
    monkeypatch.setattr(
        "softprompt.models.model.SoftPromptModel.load", lambda name, *a, **k: chosen.append(name) or model
    )
    monkeypatch.setattr("uvicorn.run", lambda app, **kwargs: None)
    assert main(["serve", "--prompts", str(folder), "--port", str(free_port())]) == 0
    assert chosen == ["tiny"]


# ----- credentials, CORS, the address --------------------------------------------------------------------------
def test_with_a_token_every_route_but_healthz_needs_it(served):
    _, _, engine = served
    app = create_app(engine, ServeOptions(token="s3cret"))
    routes = {(method, route.path) for route in app.routes for method in getattr(route, "methods", None) or ["GET"]}
    assert {("GET", "/docs"), ("GET", "/redoc"), ("GET", "/openapi.json"), ("POST", "/v1/predict")} <= routes
    with TestClient(app) as client:
        for method, path in sorted(routes | {("GET", "/nowhere"), ("OPTIONS", "/v1/predict"), ("DELETE", "/v1/tasks")}):
            response = client.request(method, path)
            if path == "/healthz":
                assert response.status_code == 200
                continue
            assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer", (method, path)
            if method != "HEAD":  # a HEAD answer has no body
                assert is_json_error(response) == "missing or wrong bearer token"
            for wrong in ["Bearer s3cre", "Bearer s3cret2", "Basic s3cret", "s3cret", "Bearer", b"Bearer \xe9s3cret"]:
                assert client.request(method, path, headers={"Authorization": wrong}).status_code == 401, (
                    method,
                    path,
                    wrong,
                )
            assert client.request(method, path, headers={"Authorization": "Bearer s3cret"}).status_code != 401, (
                method,
                path,
            )
        schema = client.get("/openapi.json", headers={"Authorization": "bearer s3cret"}).json()
        assert schema["components"]["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer"}}
        assert (
            "security" not in schema["paths"]["/healthz"]["get"]
            and "401" in schema["paths"]["/v1/predict"]["post"]["responses"]
        )


def test_the_token_is_compared_in_constant_time(served, monkeypatch):
    _, _, engine = served
    compared = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: compared.append((a, b)) or real(a, b))
    with TestClient(create_app(engine, ServeOptions(token="s3cret"))) as client:
        assert client.get("/v1/tasks", headers={"Authorization": "Bearer guess"}).status_code == 401
        assert client.get("/v1/tasks", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert compared == [(b"guess", b"s3cret"), (b"s3cret", b"s3cret")]  # every check goes through hmac.compare_digest


def test_no_cors_headers(served):
    _, _, engine = served
    origin = {"Origin": "https://example.com"}
    with TestClient(create_app(engine)) as client:
        responses = [
            client.get("/v1/tasks", headers=origin),
            client.post("/v1/predict", json={"task": "sentiment", "inputs": ["x"]}, headers=origin),
            client.options("/v1/predict", headers={**origin, "Access-Control-Request-Method": "POST"}),
        ]
    assert [r.status_code for r in responses] == [200, 200, 405]
    assert not [h for r in responses for h in r.headers if h.lower().startswith("access-control-")]


def test_serve_listens_on_loopback_unless_told_and_warns_without_a_token(tmp_path, capsys, monkeypatch):
    model = tiny_gpt2()
    folder = served_folder(tmp_path / "prompts", model)
    bound = []
    monkeypatch.setattr("softprompt.models.model.SoftPromptModel.load", lambda *a, **k: model)
    monkeypatch.setattr("uvicorn.run", lambda app, **kwargs: bound.append(kwargs["host"]))
    monkeypatch.delenv("SOFTPROMPT_TOKEN", raising=False)
    port = str(free_port())
    assert main(["serve", "--prompts", str(folder), "--port", port]) == 0
    assert bound == ["127.0.0.1"] and "without a token" not in capsys.readouterr().err
    assert main(["serve", "--prompts", str(folder), "--port", port, "--host", "0.0.0.0"]) == 0
    assert bound[-1] == "0.0.0.0" and "serving on 0.0.0.0 without a token" in capsys.readouterr().err
    for token in ["pass word", "pässword", "tab\there"]:
        assert main(["serve", "--prompts", str(folder), "--port", port, "--token", token]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: --token: use printable ASCII") and err.count("\n") == 1


# ----- faults ------------------------------------------------------------------------------------------------
def test_a_served_file_deleted_or_broken_withdraws_its_task_and_the_others_serve(tmp_path, caplog):
    model = tiny_gpt2()
    folder = served_folder(tmp_path / "prompts", model)
    write_prompt(folder / "mood.safetensors", model, SENTIMENT, 3, seed=5)
    engine = Engine(model, folder)
    good = (folder / "qa.safetensors").read_bytes()
    (folder / "answer.safetensors").unlink()  # deleted
    (folder / "qa.safetensors").write_bytes(good[: len(good) // 2])  # truncated, as by a copy cut short
    (folder / "colour" / "prompt.safetensors").write_bytes(b"\x00garbage" * 40)  # corrupted
    save_prompt(folder / "mood.safetensors", torch.zeros(2, 16), {"task": SENTIMENT})  # no longer fits the model
    with caplog.at_level(logging.INFO, logger="softprompt.serve"):
        report = engine.rescan()
    assert sorted(report.dropped) == ["answer", "colour", "mood", "qa"] and not report.added and not report.changed
    assert list(engine.snapshot().tasks) == ["sentiment"]
    assert engine.predict([("sentiment", "great")])[0] in {"0", "1"}
    assert {r["file"] for r in report.refused} == {"qa.safetensors", "colour/prompt.safetensors", "mood.safetensors"}
    assert "dropped task answer (answer.safetensors is gone)" in caplog.text
    for name, file in [("qa", "qa.safetensors"), ("colour", "colour/prompt.safetensors"), ("mood", "mood.safetensors")]:
        assert f"withdrew task {name}: {file} no longer loads" in caplog.text
    (folder / "qa.safetensors").write_bytes(good)  # repaired: served again
    assert engine.rescan().added == ["qa"]
    assert engine.predict([("qa", {"question": "who", "context": "rome"})])


class Served:
    """`softprompt serve` in a subprocess on a free loopback port, its output in a log file."""

    def __init__(self, tmp: Path, *options: str):
        model = tiny_gpt2()
        self.folder = served_folder(tmp / "prompts", model, base_model=save_model(model, tmp / "tiny-gpt2"))
        self.port, self.log = free_port(), tmp / "server.log"
        env = {**os.environ, "PYTHONPATH": str(Path(softprompt.__file__).parents[1])}
        env.pop("SOFTPROMPT_TOKEN", None)
        with open(self.log, "wb") as out:
            command = [
                sys.executable,
                "-m",
                "softprompt",
                "serve",
                "--prompts",
                str(self.folder),
                "--port",
                str(self.port),
                *options,
            ]
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.client = Client(f"http://127.0.0.1:{self.port}", timeout=30)
        deadline = time.monotonic() + 120
        while True:
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "the server did not start:\n" + self.log.read_text()
            try:
                if self.client.health() == {"status": "ok"}:
                    break
            except OSError:
                time.sleep(0.25)

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=30)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    served = Served(
        tmp_path_factory.mktemp("served"), "--rescan_seconds", "0.2", "--max_body_bytes", "4000", "--max_wait_ms", "50"
    )
    yield served
    served.stop()


def http_request(body: bytes) -> bytes:
    return (
        b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (len(body), body)
    )


def read_answer(stream) -> tuple[int, bytes]:
    """The status and body of the next answer on a connection (`socket.makefile("rb")`)."""
    status = int(stream.readline().split()[1])
    headers = dict(
        line.decode().lower().split(": ", 1) for line in iter(lambda: stream.readline().rstrip(b"\r\n"), b"")
    )
    return status, stream.read(int(headers["content-length"]))


def test_the_server_answers_on_after_clients_vanish_mid_request(server):
    full = http_request(json.dumps({"task": "sentiment", "inputs": ["great fun"] * 32}).encode())
    vanishing = [
        b"POST /v1/predict HTTP/1.1\r\nHost: 127",  # mid-headers
        full[: len(full) - 40],  # mid-body
        full,  # the whole request, gone before its answer
        full + http_request(b'{"task": "colour", "inputs": ["cat"]}'),  # two pipelined, both unread
    ]
    for abrupt in (False, True):
        for data in vanishing:
            with server.connect() as sock:
                sock.sendall(data)
                if abrupt:  # a reset, not a close
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            assert server.client.predict("sentiment", ["great", "bad"])  # the next request is answered
    with server.connect() as sock:  # a chunked body with no length, beyond the bound, refused before it ends
        sock.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        sock.sendall(b"%x\r\n%s\r\n" % (3000, b"x" * 3000) * 2)
        status, answer = read_answer(sock.makefile("rb"))
    assert status == 413 and json.loads(answer) == {"error": "the request body is larger than 4000 bytes"}
    with server.connect() as sock:  # a keep-alive connection still answers after a bad request on it
        sock.sendall(http_request(b"{not json") + http_request(b'{"task": "colour", "inputs": ["cat"]}'))
        answers = sock.makefile("rb")
        assert read_answer(answers)[0] == 422 and read_answer(answers)[0] == 200
    assert server.client.predict_items([("colour", "cat"), ("qa", {"question": "who", "context": "rome"})])
    log = server.log.read_text()
    assert "Traceback" not in log and "ERROR" not in log, log


@pytest.mark.parametrize(
    "garbage",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nBad Header Line\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
    ],
)
def test_a_malformed_http_request_gets_a_json_400(server, garbage):
    with server.connect() as sock:
        sock.sendall(garbage)
        status, answer = read_answer(sock.makefile("rb"))
    assert status == 400 and json.loads(answer)["error"].startswith("malformed HTTP request")
    assert server.client.predict("sentiment", ["great"])  # and the server answers on


def test_while_serving_a_deleted_or_corrupted_file_is_withdrawn_with_a_log_line(server):
    (server.folder / "answer.safetensors").unlink()
    (server.folder / "qa.safetensors").write_bytes(b"\x00corrupted" * 30)
    deadline = time.monotonic() + 60
    while sorted(t["name"] for t in server.client.tasks()) != ["colour", "sentiment"]:
        assert time.monotonic() < deadline, server.log.read_text()
        time.sleep(0.1)
    log = server.log.read_text()
    assert "dropped task answer (answer.safetensors is gone)" in log
    assert (
        "refused qa.safetensors: not a readable safetensors file" in log
        and "withdrew task qa: qa.safetensors no longer loads" in log
    )
    assert set(server.client.predict("sentiment", ["great", "bad"])) <= {"0", "1"}
    assert server.client.predict_items([("colour", "cat"), ("sentiment", "great")])
    for name in ("answer", "qa"):
        with pytest.raises(ServeError, match=f"404: unknown task '{name}'"):
            server.client.predict(name, ["x"])
    assert server.process.poll() is None and "Traceback" not in log
