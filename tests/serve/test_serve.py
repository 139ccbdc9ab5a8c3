"""Serving: the engine's mixed-task batches, hot-loading, the micro-batching scheduler, the HTTP app and the command."""

import http.server
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import ANSWER, COLOUR, QA, SENTIMENT, save_model, tiny_bert, tiny_gpt2, write_prompt
from fastapi.testclient import TestClient

import softprompt
from softprompt.cli import main
from softprompt.core.bank import PromptBank
from softprompt.core.families import ENCODER_ONLY
from softprompt.files.prompt_file import PromptFile, load_prompt, save_prompt
from softprompt.inference.loading import task_options
from softprompt.options import ServeOptions
from softprompt.serve import batching
from softprompt.serve.app import create_app
from softprompt.serve.batching import Scheduler
from softprompt.serve.client import Client, ServeError, ServerUnreachable
from softprompt.serve.engine import Engine, UnknownTask, input_fields
from softprompt.serve.registry import ServedTask
from softprompt.tasks import make_task


def served_folder(folder: Path, model, generation: bool = True, base_model: str = "tiny") -> Path:
    """sentiment (4 tokens), colour (2, as colour/prompt.safetensors) and, for generative models, answer and qa."""
    write_prompt(
        folder / "sentiment.safetensors",
        model,
        SENTIMENT,
        4,
        seed=1,
        base_model=base_model,
        metrics={"accuracy": 75.0},
        step=10,
    )
    write_prompt(folder / "colour" / "prompt.safetensors", model, COLOUR, 2, seed=2, base_model=base_model)
    if generation:
        write_prompt(folder / "answer.safetensors", model, ANSWER, 3, seed=3, base_model=base_model)
        write_prompt(folder / "qa.safetensors", model, QA, 5, seed=4, base_model=base_model)
    return folder


def alone(model, path: Path, value):
    """What the task of one prompt file predicts for one input with that prompt alone in the bank, and its label scores."""
    file = load_prompt(path)
    task = make_task(task_options(file))
    fields = task.fields_from_texts([value])[0] if isinstance(value, str) else value
    model.bank = PromptBank(file.prompt)
    scores = (
        model.class_scores([fields], task.label_texts, template=task.template)[0]
        if hasattr(task, "label_texts")
        else None
    )
    return task.predict(model, [fields])[0], scores


# ----- the engine ------------------------------------------------------------------------------------------
def test_a_mixed_batch_equals_each_task_alone(tmp_path, tiny, family):
    """Classification rows of two tasks (other labels, other prompt lengths) in one scoring pass, generation rows with
    a prompt each: every row as its task alone."""
    folder = served_folder(tmp_path / "prompts", tiny, generation=family != ENCODER_ONLY)
    engine = Engine(tiny, folder)
    items = [("sentiment", "great fun"), ("colour", "cat"), ("colour", "sun and moon"), ("sentiment", "bad")]
    if family != ENCODER_ONLY:
        items[1:1] = [("answer", "who is it"), ("qa", {"question": "where", "context": "paris"})]
        items.append(("qa", json.dumps({"question": "what", "context": "the red sun"})))  # an object as JSON text
    calls = {"score_labels": [], "generate": 0}
    score_labels, generate = tiny.score_labels, tiny.generate

    def spy_scores(*args, **kwargs):
        calls["score_labels"].append(score_labels(*args, **kwargs))
        return calls["score_labels"][-1]

    def spy_generate(*args, **kwargs):
        calls["generate"] += 1
        return generate(*args, **kwargs)

    tiny.score_labels, tiny.generate = spy_scores, spy_generate
    mixed = engine.predict(items)
    tiny.score_labels, tiny.generate = score_labels, generate
    assert len(calls["score_labels"]) == 1  # every classification row, of both tasks, in one pass
    assert calls["generate"] == (2 if family != ENCODER_ONLY else 0)  # one pass per answer length (3 and 4 tokens)
    scores = iter(calls["score_labels"][0])
    files = {
        "sentiment": folder / "sentiment.safetensors",
        "colour": folder / "colour" / "prompt.safetensors",
        "answer": folder / "answer.safetensors",
        "qa": folder / "qa.safetensors",
    }
    for (name, value), prediction in zip(items, mixed):
        expected, expected_scores = alone(tiny, files[name], value)
        assert prediction == expected, (name, value)
        if expected_scores is not None:
            torch.testing.assert_close(next(scores), expected_scores, rtol=1e-5, atol=1e-5)


def test_task_names_and_refused_files(tmp_path, caplog):
    model = tiny_gpt2()
    folder = served_folder(tmp_path / "prompts", model)
    engine = Engine(model, folder)
    write_prompt(folder / ".hidden.safetensors", model, SENTIMENT)
    (folder / "notes.txt").write_text("not a prompt")
    wide = save_prompt(
        folder / "wide.safetensors", torch.zeros(2, 16), {**model.identity(), "hidden_size": 16, "task": SENTIMENT}
    )
    write_prompt(
        folder / "sentiment" / "prompt.safetensors", model, COLOUR
    )  # the name is taken by the served sentiment.safetensors
    (folder / "broken.safetensors").write_bytes(b"not safetensors")
    write_prompt(folder / "long.safetensors", model, ANSWER, length=125)  # 128 positions: no room for an input
    with caplog.at_level(logging.WARNING, logger="softprompt.serve"):
        assert engine.rescan().added == []
    assert sorted(engine.snapshot().tasks) == ["answer", "colour", "qa", "sentiment"]
    refused = {r["file"]: r["error"] for r in engine.refused()}
    assert set(refused) == {
        "wide.safetensors",
        "sentiment/prompt.safetensors",
        "broken.safetensors",
        "long.safetensors",
    }
    assert "width 16 does not match the model's hidden size 32" in refused["wide.safetensors"]
    assert "taken by sentiment.safetensors" in refused["sentiment/prompt.safetensors"]
    assert "leaves no room for the input" in refused["long.safetensors"]
    assert refused["broken.safetensors"].startswith("broken.safetensors: not a readable safetensors file")
    assert all(any(error in r.getMessage() for r in caplog.records) for error in refused.values())
    assert engine.predict([("sentiment", "great"), ("colour", "cat")])  # the others serve
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="softprompt.serve"):
        engine.rescan()
    assert not caplog.records  # a refused file is not retried (nor logged again) until it changes
    assert wide.exists()
    with pytest.raises(UnknownTask, match="unknown task 'wide'"):
        engine.prepare([("wide", "x")])


def test_an_encoder_only_model_refuses_generation_tasks(tmp_path):
    from conftest import tiny_bert

    model = tiny_bert()
    folder = served_folder(tmp_path / "prompts", model)
    engine = Engine(model, folder)
    assert sorted(engine.snapshot().tasks) == ["colour", "sentiment"]
    assert {r["file"] for r in engine.refused()} == {"answer.safetensors", "qa.safetensors"}


def test_inputs_are_checked_against_the_template():
    def served(name, task):
        file = PromptFile(torch.zeros(1, 1), {"task": task})
        return ServedTask(name, f"{name}.safetensors", make_task(task_options(file)), file, "", (0, 0, 0))

    qa, one = served("qa", QA), served("sentiment", SENTIMENT)
    assert input_fields(qa, {"question": "q", "context": "c", "extra": "x"}, 1) == {"question": "q", "context": "c"}
    assert input_fields(qa, '{"question": "q", "context": "c"}', 1) == {"question": "q", "context": "c"}
    assert input_fields(one, "great", 1) == {"": "great"}
    with pytest.raises(softprompt.UserError, match="input 2: task qa takes an object .* 'question', 'context'"):
        input_fields(qa, "just text", 2)
    with pytest.raises(softprompt.UserError, match="input 1: task sentiment takes a text"):
        input_fields(one, {"text": "great"}, 1)


def test_hot_load_new_changed_and_deleted_files_without_touching_requests_in_flight(tmp_path):
    model = tiny_gpt2()
    folder = tmp_path / "prompts"
    write_prompt(folder / "sentiment.safetensors", model, SENTIMENT, 4, seed=1)
    engine = Engine(model, folder)
    first = engine.snapshot()
    assert list(first.tasks) == ["sentiment"]
    in_flight = engine.prepare([("sentiment", "great fun"), ("sentiment", "bad")])
    before_change = engine.run(in_flight)

    write_prompt(folder / "colour.safetensors", model, COLOUR, 2, seed=2)
    report = engine.rescan()
    assert report.added == ["colour"] and not report.changed and not report.dropped
    assert engine.predict([("colour", "cat")])[0] in {"a", "b", "c"}

    os.utime(folder / "colour.safetensors")  # touched, not changed: nothing reloads
    before = engine.snapshot()
    assert not engine.rescan().changed and engine.snapshot() is before

    write_prompt(
        folder / "sentiment.safetensors", model, {**SENTIMENT, "verbalizers": {"bad": "no", "good": "yes"}}, 6, seed=5
    )
    report = engine.rescan()
    assert report.changed == ["sentiment"]
    assert engine.snapshot().tasks["sentiment"].prompt.length == 6
    assert engine.predict([("sentiment", "great fun")])[0] in {"bad", "good"}
    assert (
        engine.run(in_flight) == before_change
    )  # checked before the change: runs with the prompt it was checked against

    (folder / "colour.safetensors").unlink()
    assert engine.rescan().dropped == ["colour"]
    assert list(engine.snapshot().tasks) == ["sentiment"]


def rewrite_in_place(path: Path, content: bytes, upto: int) -> None:
    """Overwrite the first `upto` bytes of `path` with `content`'s, as a writer part-way through rewriting it in place."""
    with open(path, "r+b") as f:
        f.write(content[:upto])
    stamp = time.time_ns() + 1_000_000 * (
        1 + path.stat().st_mtime_ns % 7
    )  # a new modification time, whatever the clock's grain
    os.utime(path, ns=(stamp, stamp))


@pytest.mark.parametrize("watching", [False, True])
def test_a_file_rewritten_in_place_is_never_served_half_written(tmp_path, watching, monkeypatch):
    model = tiny_gpt2()
    folder = tmp_path / "prompts"
    path = write_prompt(folder / "sentiment.safetensors", model, SENTIMENT, 4, seed=1)
    old = load_prompt(path).prompt
    new_bytes = write_prompt(tmp_path / "new.safetensors", model, SENTIMENT, 4, seed=2).read_bytes()
    assert len(new_bytes) == path.stat().st_size  # the same size: only the contents change
    new = load_prompt(tmp_path / "new.safetensors").prompt
    engine = Engine(model, folder)
    served = lambda: engine.snapshot().tasks["sentiment"].prompt.prompt  # noqa: E731
    if not watching:  # the writer goes on during the asked-for rescan's settling pause
        wait = threading.Event.wait

        def writing_meanwhile(event, seconds=None):
            rewrite_in_place(path, new_bytes, len(new_bytes) - 100)
            return wait(event, 0)

        monkeypatch.setattr(threading.Event, "wait", writing_meanwhile)
    data_start = 8 + int.from_bytes(new_bytes[:8], "little")  # safetensors: header length, header, then the tensors
    rewrite_in_place(
        path, new_bytes, data_start + 2 * model.hidden * 4
    )  # the header and 2 of the 4 new rows: a torn mix
    assert not torch.equal(load_prompt(path).prompt, old) and not torch.equal(load_prompt(path).prompt, new)
    report = engine.rescan(watching=watching)
    assert not report.changed and torch.equal(served(), old)  # the old prompt keeps serving
    monkeypatch.undo()
    rewrite_in_place(path, new_bytes, len(new_bytes))
    if watching:
        assert not engine.rescan(watching=True).changed  # changed since the last rescan: not settled yet
    assert engine.rescan(watching=watching).changed == ["sentiment"]
    assert torch.equal(served(), new)


# ----- the scheduler ----------------------------------------------------------------------------------------
def recording(fail_on=None):
    batches = []

    def run(rows):
        batches.append(list(rows))
        if fail_on in rows:
            raise ValueError(f"bad row {fail_on}")
        return [f"{row}!" for row in rows]

    return run, batches


def test_concurrent_requests_run_together_and_each_gets_its_own_answers():
    run, batches = recording()
    with Scheduler(run, max_batch_size=6, max_wait_ms=5000) as scheduler:
        futures = [scheduler.submit([f"{i}a", f"{i}b"]) for i in range(3)]  # a full batch starts at once
        assert [f.result(timeout=10) for f in futures] == [[f"{i}a!", f"{i}b!"] for i in range(3)]
    assert batches == [["0a", "0b", "1a", "1b", "2a", "2b"]]


def test_a_request_larger_than_a_batch_is_split():
    run, batches = recording()
    with Scheduler(run, max_batch_size=2, max_wait_ms=0) as scheduler:
        assert scheduler.submit(list("abcde")).result(timeout=10) == ["a!", "b!", "c!", "d!", "e!"]
        assert scheduler.submit([]).result(timeout=1) == []
    assert [len(b) for b in batches] == [2, 2, 1]


def test_no_wait_and_batches_of_one_run_one_row_at_a_time():
    run, batches = recording()
    with Scheduler(run, max_batch_size=1, max_wait_ms=0) as scheduler:
        futures = [scheduler.submit([i]) for i in range(5)]
        assert [f.result(timeout=10) for f in futures] == [[f"{i}!"] for i in range(5)]
    assert batches == [[i] for i in range(5)]


def test_a_failing_request_fails_alone():
    run, batches = recording(fail_on="bad")
    with Scheduler(run, max_batch_size=3, max_wait_ms=5000) as scheduler:
        good, bad, other = scheduler.submit(["a"]), scheduler.submit(["bad"]), scheduler.submit(["b"])
        assert good.result(timeout=10) == ["a!"] and other.result(timeout=10) == ["b!"]
        with pytest.raises(ValueError, match="bad row"):
            bad.result(timeout=10)
    assert batches[0] == ["a", "bad", "b"]  # together first, then each alone
    with pytest.raises(RuntimeError, match="closed"):
        scheduler.submit(["late"])


def test_the_wait_ends_a_batch_that_does_not_fill():
    run, batches = recording()
    with Scheduler(run, max_batch_size=100, max_wait_ms=50) as scheduler:
        start = time.monotonic()
        assert scheduler.submit(["a"]).result(timeout=10) == ["a!"]
        assert 0.04 <= time.monotonic() - start < 5
    assert scheduler.starts == {"waited": 1}


def test_by_default_a_lone_request_runs_at_once_and_those_arriving_meanwhile_are_gathered():
    batches, started, release = [], threading.Event(), threading.Event()

    def run(rows):
        batches.append(list(rows))
        if len(batches) == 1:
            started.set()
            assert release.wait(10)
        return [f"{row}!" for row in rows]

    with Scheduler(run) as scheduler:  # the defaults, as softprompt serve has them
        first = scheduler.submit(["a"])
        assert started.wait(10) and scheduler.starts == {"idle": 1}  # not held back waiting for company
        later = [scheduler.submit([i]) for i in range(7)]  # these arrive while the model runs the first
        release.set()
        assert first.result(timeout=10) == ["a!"] and [f.result(timeout=10) for f in later] == [
            [f"{i}!"] for i in range(7)
        ]
    assert batches == [["a"], list(range(7))] and scheduler.starts == {"idle": 2}


def test_under_load_the_next_batch_gathers_as_many_rows_as_the_last_one_held(monkeypatch):
    """After a batch of 4 rows, the first of 4 requests sent one after another waits for the other three (up to
    GATHER times the last batch's time: here 20 s, so the test does not hang on a busy machine's timing), instead of
    running alone and splitting them over a second pass."""
    monkeypatch.setattr(batching, "GATHER", 20.0)
    batches = []

    def run(rows):
        batches.append(list(rows))
        if len(batches) == 1:
            time.sleep(0.1)
        return [f"{row}!" for row in rows]

    with Scheduler(run) as scheduler:
        assert scheduler.submit(list("abcd")).result(timeout=10) == ["a!", "b!", "c!", "d!"]
        futures = [scheduler.submit([i]) for i in range(4)]
        assert [f.result(timeout=10) for f in futures] == [[f"{i}!"] for i in range(4)]
    assert batches == [list("abcd"), [0, 1, 2, 3]] and scheduler.starts == {"idle": 2}


# ----- the HTTP app -----------------------------------------------------------------------------------------
@pytest.fixture
def served(tmp_path):
    model = tiny_gpt2()
    folder = served_folder(tmp_path / "prompts", model)
    return model, folder, Engine(model, folder)


def client_for(engine, **settings) -> TestClient:
    return TestClient(create_app(engine, ServeOptions(**settings)))


def test_every_endpoint(served):
    model, folder, engine = served
    with client_for(engine) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        listing = client.get("/v1/tasks").json()
        tasks = {t["name"]: t for t in listing["tasks"]}
        assert listing["family"] == "decoder-only" and listing["refused"] == []
        assert sorted(tasks) == ["answer", "colour", "qa", "sentiment"]
        assert tasks["sentiment"]["length"] == 4 and tasks["colour"]["length"] == 2
        assert tasks["sentiment"]["type"] == "classification" and tasks["sentiment"]["template"] == "review {} it was"
        assert tasks["sentiment"]["verbalizers"] == {"0": "no", "1": "yes"} and tasks["sentiment"]["metrics"] == {
            "accuracy": 75.0
        }
        assert tasks["colour"]["file"] == "colour/prompt.safetensors" and tasks["qa"]["type"] == "text2text"

        texts = ["great fun", "bad", "boring plot"]
        response = client.post("/v1/predict", json={"task": "sentiment", "inputs": texts})
        assert response.status_code == 200
        assert response.json() == {"predictions": engine.predict([("sentiment", t) for t in texts])}
        items = [
            {"task": "colour", "input": "cat"},
            {"task": "sentiment", "input": "great"},
            {"task": "qa", "input": {"question": "who", "context": "rome"}},
        ]
        response = client.post("/v1/predict", json={"items": items})
        assert response.json()["predictions"] == engine.predict([(i["task"], i["input"]) for i in items])

        assert client.post("/v1/tasks").json()["added"] == []
        assert client.get("/docs").status_code == 200 and "swagger" in client.get("/docs").text.lower()
        assert "/v1/predict" in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"task": "nope", "inputs": ["x"]}, 404, "unknown task 'nope'"),
        ({"items": [{"task": "sentiment", "input": "x"}, {"task": "nope", "input": "x"}]}, 404, "unknown task 'nope'"),
        ({"task": "sentiment", "inputs": ["x"] * 5}, 413, "5 inputs, more than the 4"),
        ({"task": "sentiment", "inputs": ["x", "y" * 101]}, 413, "input 2 has 101 characters"),
        ({"task": "sentiment", "inputs": [1, 2]}, 422, "inputs.0"),
        ({"task": "sentiment", "inputs": "great"}, 422, "inputs"),
        ({"task": "sentiment"}, 422, 'give either "task" and "inputs", or "items"'),
        ({"task": "sentiment", "inputs": ["x"], "items": []}, 422, "give either"),
        ({"task": "sentiment", "inputs": ["x"], "extra": 1}, 422, "extra"),
        ({"task": "qa", "inputs": ["just text"]}, 422, "input 1: task qa takes an object"),
        ({"task": "qa", "inputs": [{"question": "q", "context": 3}]}, 422, "inputs.0"),
    ],
)
def test_errors_are_json(served, body, status, message):
    _, _, engine = served
    with client_for(engine, max_inputs=4, max_input_chars=100) as client:
        response = client.post("/v1/predict", json=body)
    assert response.status_code == status and message in response.json()["error"], response.json()


def test_bodies_are_bounded_before_parsing(served):
    _, _, engine = served
    with client_for(engine, max_body_bytes=200) as client:
        big = json.dumps({"task": "sentiment", "inputs": ["x" * 300]}).encode()
        response = client.post("/v1/predict", content=big, headers={"content-type": "application/json"})
        assert response.status_code == 413 and "larger than 200 bytes" in response.json()["error"]
        chunked = client.post(
            "/v1/predict", content=iter([big[:100], big[100:]]), headers={"content-type": "application/json"}
        )
        assert chunked.status_code == 413
        assert (
            client.post("/v1/predict", content=b"{not json", headers={"content-type": "application/json"}).status_code
            == 422
        )
        assert client.get("/nowhere").json() == {"error": "Not Found"}
        form = client.post(
            "/v1/predict", content=b"task=sentiment", headers={"content-type": "application/x-www-form-urlencoded"}
        )
        assert form.status_code == 422 and "as JSON" in form.json()["error"]


def test_a_token_guards_every_endpoint_but_healthz(served, monkeypatch):
    _, _, engine = served
    with client_for(engine, token="s3cret") as client:
        assert client.get("/healthz").status_code == 200
        for method, path in [
            ("GET", "/v1/tasks"),
            ("POST", "/v1/tasks"),
            ("POST", "/v1/predict"),
            ("GET", "/docs"),
            ("GET", "/openapi.json"),
        ]:
            response = client.request(method, path)
            assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer", path
            assert response.json() == {"error": "missing or wrong bearer token"}
        assert client.get("/v1/tasks", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/v1/tasks", headers={"Authorization": "Basic s3cret"}).status_code == 401
        assert client.get("/v1/tasks", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        ok = client.post(
            "/v1/predict", json={"task": "sentiment", "inputs": ["great"]}, headers={"Authorization": "Bearer s3cret"}
        )
        assert ok.status_code == 200


def test_hot_load_through_the_app(served):
    model, folder, engine = served
    with client_for(engine) as client:
        write_prompt(
            folder / "mood.safetensors", model, {**SENTIMENT, "verbalizers": {"sad": "no", "glad": "yes"}}, 3, seed=7
        )
        save_prompt(folder / "wide.safetensors", torch.zeros(2, 16), {"task": SENTIMENT})
        report = client.post("/v1/tasks").json()
        assert report["added"] == ["mood"] and [r["file"] for r in report["refused"]] == ["wide.safetensors"]
        assert client.post("/v1/predict", json={"task": "mood", "inputs": ["great"]}).json()["predictions"][0] in {
            "sad",
            "glad",
        }
        assert client.get("/v1/tasks").json()["refused"][0]["file"] == "wide.safetensors"
        write_prompt(
            folder / "mood.safetensors", model, {**SENTIMENT, "verbalizers": {"low": "no", "high": "yes"}}, 5, seed=8
        )
        assert client.post("/v1/tasks").json()["changed"] == ["mood"]
        assert client.post("/v1/predict", json={"task": "mood", "inputs": ["great"]}).json()["predictions"][0] in {
            "low",
            "high",
        }
        assert (
            client.post("/v1/predict", json={"task": "sentiment", "inputs": ["great"]}).status_code == 200
        )  # the others serve


def test_periodic_rescans(served):
    model, folder, engine = served
    with client_for(engine, rescan_seconds=0.05) as client:
        write_prompt(folder / "mood.safetensors", model, SENTIMENT, 3, seed=7)
        deadline = time.monotonic() + 10
        while "mood" not in engine.snapshot().tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.post("/v1/predict", json={"task": "mood", "inputs": ["great"]}).status_code == 200


def test_generation_is_capped_and_bounded_in_time_by_the_servers_settings(served, monkeypatch):
    model, folder, engine = served
    calls = []
    generate = model.generate
    monkeypatch.setattr(model, "generate", lambda *a, **k: calls.append(k) or generate(*a, **k))
    with client_for(engine, max_new_tokens=2, timeout_seconds=7.5) as client:
        assert client.post("/v1/predict", json={"task": "answer", "inputs": ["who is it"]}).status_code == 200
    assert calls and all(k["max_new_tokens"] == 2 and k["max_time"] == 7.5 for k in calls)  # the file records 3


def test_a_request_past_its_deadline_answers_504_and_healthz_names_the_stuck_pass(served, monkeypatch):
    _, _, engine = served
    release, running = threading.Event(), threading.Event()
    run = engine.run

    def stuck(rows):
        running.set()
        release.wait(30)
        return run(rows)

    monkeypatch.setattr(engine, "run", stuck)
    with client_for(engine, timeout_seconds=0.3) as client:
        late = client.post("/v1/predict", json={"task": "sentiment", "inputs": ["great"]})
        assert late.status_code == 504
        assert late.json() == {
            "error": "no answer within 0.3 s (--timeout_seconds): the model is busy or the request is too large"
        }
        assert running.wait(5)
        deadline = time.monotonic() + 10
        while client.get("/healthz").status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        health = client.get("/healthz")
        assert health.status_code == 503 and health.json()["status"] == "stuck" and health.json()["busy_seconds"] >= 0.3
        release.set()
        while client.get("/healthz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get("/healthz").json() == {"status": "ok"}
        assert (
            client.post("/v1/predict", json={"task": "sentiment", "inputs": ["great"]}).status_code == 200
        )  # the worker is free


def test_a_prompt_file_recording_an_endless_answer_is_refused_by_serve_and_predict(served, capsys):
    model, folder, engine = served
    write_prompt(folder / "endless.safetensors", model, {**ANSWER, "max_target_length": 1_000_000})
    message = "its metadata field 'task.max_target_length' is 1000000, expected at most 4096"
    assert f"endless.safetensors: {message}" in [r["error"] for r in engine.rescan().refused]
    assert main(["predict", str(folder / "endless.safetensors"), "who is it"]) == 1
    assert capsys.readouterr().err == f"error: {folder / 'endless.safetensors'}: {message}\n"


def test_a_prompt_file_recording_no_label_texts_is_refused_naming_it(served, capsys):
    model, folder, engine = served
    write_prompt(folder / "bare.safetensors", model, {**SENTIMENT, "verbalizers": {}})
    refused = {r["file"]: r["error"] for r in engine.rescan().refused}
    assert refused["bare.safetensors"].startswith(
        "bare.safetensors: the recorded task: --data.verbalizers: a classification task needs label texts"
    )


def test_a_label_text_longer_than_the_models_positions_is_refused_by_serve_and_predict(tmp_path, capsys):
    model = tiny_bert()  # 128 positions; each label is embedded under the prompt
    folder = tmp_path / "prompts"
    long_label = " ".join(["great"] * 130)
    write_prompt(folder / "sentiment.safetensors", model, SENTIMENT, 4, seed=1)
    write_prompt(
        folder / "long.safetensors", model, {**SENTIMENT, "verbalizers": {"0": "no", "1": long_label}}, 4, seed=2
    )
    engine = Engine(model, folder)
    refused = {r["file"]: r["error"] for r in engine.refused()}
    assert refused["long.safetensors"].startswith(
        "long.safetensors: --data.verbalizers: the label text 'great great great great great great grea...' has 132 tokens, which beside a 4-vector prompt overflow tiny-bert's 128 positions"
    )
    assert engine.predict([("sentiment", "great fun")])[0] in {"0", "1"}  # the others serve
    path = write_prompt(
        tmp_path / "long.safetensors",
        model,
        {**SENTIMENT, "verbalizers": {"0": "no", "1": long_label}},
        4,
        seed=2,
        base_model=save_model(model, tmp_path / "bert"),
    )
    capsys.readouterr()
    assert main(["predict", str(path), "great"]) == 1
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and err.startswith("error: --data.verbalizers: the label text 'great great")
        and "overflow" in err
    )


def test_file_names_that_are_not_printable_text_are_refused_and_listed_escaped(served, caplog):
    model, folder, engine = served
    odd = [os.fsdecode(b"caf\xe9.safetensors"), "two\nrefused forged line.safetensors"]
    for name in odd:
        write_prompt(folder / name, model, SENTIMENT, 3, seed=9)
    with caplog.at_level(logging.INFO, logger="softprompt.serve"), client_for(engine) as client:
        report = client.post("/v1/tasks")
        assert report.status_code == 200
        refused = {r["file"]: r["error"] for r in report.json()["refused"]}
        assert refused == {
            "caf\\xe9.safetensors": "caf\\xe9.safetensors: the file name is not printable UTF-8 text; rename the file to serve it",
            "two\\nrefused forged line.safetensors": "two\\nrefused forged line.safetensors: the file name is not printable UTF-8 text; rename the file to serve it",
        }
        assert client.get("/v1/tasks").status_code == 200
        assert client.post("/v1/predict", json={"task": "sentiment", "inputs": ["great"]}).status_code == 200
    assert all("\n" not in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    "value",
    [
        "\ud800 great",
        {"question": "\udfff", "context": "c"},
        '{"question": "\\ud800", "context": "c"}',
        "[" * 5000 + "]" * 5000,
        '{"question": ' + "9" * 5000 + ', "context": "c"}',
    ],
)
def test_inputs_that_are_not_text_or_not_parsable_answer_422(served, value):
    _, _, engine = served
    task = "sentiment" if isinstance(value, str) and value.startswith("\ud800") else "qa"
    with client_for(engine) as client:
        answer = client.post(
            "/v1/predict",
            content=json.dumps({"task": task, "inputs": [value]}),
            headers={"Content-Type": "application/json"},
        )
    assert answer.status_code == 422 and answer.json()["error"].startswith("input 1: "), answer.text


def test_concurrent_requests_through_the_scheduler(served):
    _, _, engine = served
    requests = [
        {"task": "sentiment", "inputs": ["great fun", "bad"]},
        {"task": "colour", "inputs": ["cat", "sun and moon", "dog"]},
        {"task": "answer", "inputs": ["who is it"]},
        {
            "items": [
                {"task": "qa", "input": {"question": "where", "context": "paris"}},
                {"task": "sentiment", "input": "awful"},
            ]
        },
        {"task": "sentiment", "inputs": ["wonderful", "hated it", "boring"]},
        {"task": "colour", "inputs": ["moon"]},
        {"items": [{"task": "answer", "input": "what"}, {"task": "colour", "input": "red cat"}]},
        {"task": "qa", "inputs": [{"question": "who", "context": "the cast"}]},
    ]
    expected = [
        engine.predict(
            [(i["task"], i["input"]) for i in r["items"]] if "items" in r else [(r["task"], x) for x in r["inputs"]]
        )
        for r in requests
    ]
    rows = sum(len(e) for e in expected)
    results = [None] * len(requests)
    with client_for(engine, max_batch_size=rows, max_wait_ms=2000) as client:

        def send(k):
            results[k] = client.post("/v1/predict", json=requests[k]).json()["predictions"]

        threads = [threading.Thread(target=send, args=(k,)) for k in range(len(requests))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        batches = client.app.state.scheduler.batches
    assert results == expected
    assert batches < len(requests)  # requests shared model passes


# ----- the command ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_serve_checks_its_options_before_the_model_loads(tmp_path, capsys, monkeypatch):
    model = tiny_gpt2()
    folder = served_folder(tmp_path / "prompts", model)
    monkeypatch.setattr("softprompt.models.model.SoftPromptModel.load", lambda *a, **k: pytest.fail("the model loaded"))
    cases = [
        (["--prompts", str(tmp_path / "missing")], "--prompts: no such folder"),
        (["--prompts", str(folder), "--max_batch_size", "0"], "--max_batch_size must be at least 1 (got 0)"),
        (["--prompts", str(folder), "--max_wait_ms", "-1"], "--max_wait_ms must not be negative"),
        (["--prompts", str(folder), "--port", "70000"], "--port must be between 0 and 65535"),
        (["--prompts", str(folder), "--token", " "], "--token: the token is empty"),
        (
            ["--prompts", str(folder), "--token", ""],
            "--token: the token is empty; give one, or leave the option out to serve without one",
        ),
        (["--prompts", str(folder), "--token="], "--token: the token is empty"),
        (["--prompts", str(folder), "--device", "tpu"], "--device: 'tpu' is not auto, cpu or cuda[:N]"),
        (["--prompts", str(tmp_path / "empty")], "no prompt file in"),
    ]
    (tmp_path / "empty").mkdir()
    for args, message in cases:
        assert main(["serve", *args]) == 1, args
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    monkeypatch.setenv("SOFTPROMPT_TOKEN", "")  # set, but to nothing: no fallback to serving without a token
    assert main(["serve", "--prompts", str(folder)]) == 1
    assert (
        capsys.readouterr().err
        == "error: SOFTPROMPT_TOKEN: the token is empty; give one, or unset it to serve without one\n"
    )
    monkeypatch.delenv("SOFTPROMPT_TOKEN")
    write_prompt(folder / "other.safetensors", model, SENTIMENT, base_model="another-model")
    assert main(["serve", "--prompts", str(folder)]) == 1
    assert "the prompt files name different models" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["serve", "--prompts", str(folder), "--model", "tiny", "--port", str(taken.getsockname()[1])]) == 1
        assert "cannot listen there" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_client_names_the_server_it_cannot_reach_and_an_answer_that_is_not_json():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(ServerUnreachable, match=f"^cannot reach softprompt serve at {re.escape(url)}: "):
        Client(url, timeout=5).health()
    with socket.socket() as silent:  # accepts the connection, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(ServerUnreachable, match=f"^no answer from {re.escape(url)}/healthz within 0.5 s$"):
            Client(url, timeout=0.5).health()

    with socket.socket() as closing:  # accepts the connection, reads the request, closes without an answer
        closing.bind(("127.0.0.1", 0))
        closing.listen()
        url = f"http://127.0.0.1:{closing.getsockname()[1]}"

        def hang_up():
            connection, _ = closing.accept()
            connection.recv(65536)
            connection.close()

        threading.Thread(target=hang_up, daemon=True).start()
        with pytest.raises(ServerUnreachable, match=f"^no HTTP answer from {re.escape(url)}/v1/tasks: "):
            Client(url, timeout=30).tasks()

    for body in (b"<html>another server</html>", b"[1, 2]"):

        class Other(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.end_headers()
                self.wfile.write(body)  # noqa: B023  (served within this iteration)

            def log_message(self, *args):
                pass

        with http.server.HTTPServer(("127.0.0.1", 0), Other) as other:
            threading.Thread(target=other.handle_request, daemon=True).start()
            with pytest.raises(ServeError, match="answered with something other than a JSON object") as caught:
                Client(f"http://127.0.0.1:{other.server_address[1]}", timeout=30).tasks()
        assert caught.value.status == 200


@pytest.mark.slow
def test_the_serve_command_end_to_end(tmp_path):
    model = tiny_gpt2()
    model_folder = save_model(model, tmp_path / "tiny-gpt2")
    folder = served_folder(tmp_path / "prompts", model, base_model=model_folder)
    port, token = free_port(), "s3cret"
    env = {**os.environ, "PYTHONPATH": str(Path(softprompt.__file__).parents[1]), "SOFTPROMPT_TOKEN": token}
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "softprompt",
                "serve",
                "--prompts",
                str(folder),
                "--port",
                str(port),
                "--max_wait_ms",
                "2",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        client = Client(url, token=token, timeout=30)
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the server did not start:\n" + log.read_text()
            try:
                if client.health() == {"status": "ok"}:
                    break
            except OSError:
                time.sleep(0.25)
        assert sorted(t["name"] for t in client.tasks()) == ["answer", "colour", "qa", "sentiment"]
        assert set(client.predict("sentiment", ["great fun", "bad"])) <= {"0", "1"}
        predictions = client.predict_items(
            [("colour", "cat"), ("qa", {"question": "who", "context": "rome"}), {"task": "sentiment", "input": "great"}]
        )
        assert len(predictions) == 3 and predictions[0] in {"a", "b", "c"} and predictions[2] in {"0", "1"}
        assert client.rescan()["added"] == []
        with pytest.raises(ServeError) as refused:
            Client(url, timeout=30).tasks()
        assert refused.value.status == 401
        with pytest.raises(ServeError, match="404: unknown task 'nope'"):
            client.predict("nope", ["x"])
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    assert "serving 4 tasks" in log.read_text()


def test_the_serve_options_set_key_value_reuse_and_its_budget():
    from softprompt.cli.parser import build_parser
    from softprompt.serve.server import set_key_value_reuse

    model = tiny_gpt2()
    set_key_value_reuse(model, ServeOptions(kv_cache_mb=0.5))
    assert model.kv_reuse and model.prefix_cache.max_bytes == 2**19
    set_key_value_reuse(model, ServeOptions(kv_reuse=False))
    assert not model.kv_reuse and model.prefix_cache.max_bytes == 2**30  # the default, 1,024 MB
    args = build_parser().parse_args(["serve", "--prompts", "p", "--kv_cache_mb", "64"])
    assert args.serve.kv_cache_mb == 64.0
