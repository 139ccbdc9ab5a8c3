"""schemathesis against the served OpenAPI schema (/openapi.json): any generated request, valid by the schema or not,
gets no 5xx and an answer the schema documents (status, content type, body); every error answer is {"error": "..."}."""

import pytest
import schemathesis
from conftest import tiny_gpt2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from test_serve import served_folder

from softprompt.options import ServeOptions
from softprompt.serve.app import create_app
from softprompt.serve.engine import Engine

pytestmark = pytest.mark.slow  # starts processes or servers, loads real models, or draws many examples

TOKEN = "s3cret"
TASKS = ["sentiment", "colour", "answer", "qa"]
# a request valid by the schema may still name an unknown task (404), pass the server's limits (413), or give an input
# that its task's template cannot take (422, as the schema cannot say which fields each task's template has)
# (checked below, by the error's message); a request the schema refuses may also be too large (413)
REFUSED = ["400", "401", "404", "405", "413", "415", "422"]
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "positive_data_acceptance": {"enabled": False},
            "negative_data_rejection": {"expected-statuses": REFUSED},
        }
    }
)
VALID_BUT_REFUSED = {404: "unknown task ", 413: "", 422: "input "}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    model = tiny_gpt2()
    return Engine(model, served_folder(tmp_path_factory.mktemp("prompts"), model))


def load(engine, token=None):
    app = create_app(engine, ServeOptions(token=token, max_inputs=8, max_input_chars=200, max_body_bytes=20_000))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=CONFIG, headers=headers)


@pytest.fixture(scope="module")
def api(engine):
    return load(engine)


@pytest.fixture(scope="module")
def guarded(engine):
    return load(engine, TOKEN)


def cases(api):
    """Requests of every operation, valid by the schema and not; a valid one names served tasks half the time, so that
    its inputs reach the model."""
    operations = [result.ok() for result in api.get_all_operations()]
    case = st.sampled_from(operations).flatmap(lambda op: st.sampled_from(list(GenerationMode)).flatmap(op.as_strategy))
    return st.tuples(case, st.booleans(), st.randoms(use_true_random=False))


def served_names(case, swap, random):
    body = case.body
    if swap and case.meta.generation.mode.is_positive and isinstance(body, dict):
        if isinstance(body.get("task"), str):
            body["task"] = random.choice(TASKS)
        for item in body.get("items") or []:
            item["task"] = random.choice(TASKS)
    return case


def check(case, response):
    if response.status_code >= 400:
        assert set(response.json()) == {"error"}, response.text
        if case.meta.generation.mode.is_positive and response.status_code != 401:
            assert response.json()["error"].startswith(VALID_BUT_REFUSED[response.status_code]), response.text
            if response.status_code == 422:
                assert " takes " in response.json()["error"], response.text
    return response


@settings(max_examples=300, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_any_request_gets_a_documented_answer(api, data):
    case = served_names(*data.draw(cases(api)))
    check(case, case.call_and_validate())


@settings(max_examples=150, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), authorised=st.booleans())
def test_with_a_token_any_request_gets_a_documented_answer(guarded, data, authorised):
    case = served_names(*data.draw(cases(guarded)))
    headers = {"Authorization": f"Bearer {TOKEN}"} if authorised else {}
    response = check(case, case.call_and_validate(headers=headers))
    if not authorised and case.path != "/healthz":
        assert response.status_code == 401
