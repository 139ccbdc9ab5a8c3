"""`softprompt serve`: check the options, load the model the prompts name, and run the app under uvicorn."""

import ipaddress
import logging
import os
import socket
import sys
from dataclasses import replace
from pathlib import Path

from softprompt.checks import MAX_SIZE, MAX_TARGET_LENGTH, at_least, at_most, check_device, not_negative, positive
from softprompt.errors import UserError
from softprompt.files.prompt_file import load_prompt
from softprompt.options import ServeOptions
from softprompt.serve.registry import discover, inside

log = logging.getLogger("softprompt.serve")


def check_options(prompts: str, o: ServeOptions) -> None:
    if not Path(prompts).is_dir():
        raise UserError(
            f"--prompts: {prompts} is not a folder"
            if Path(prompts).exists()
            else f"--prompts: no such folder {prompts}"
        )
    if not 0 <= o.port <= 65535:
        raise UserError(f"--port must be between 0 and 65535 (got {o.port})")
    check_token(o.token, "--token")
    for option, value in (
        ("--max_batch_size", o.max_batch_size),
        ("--max_inputs", o.max_inputs),
        ("--max_input_chars", o.max_input_chars),
        ("--max_body_bytes", o.max_body_bytes),
    ):
        at_least(option, value, 1)
    at_most("--max_batch_size", o.max_batch_size, MAX_SIZE)
    not_negative("--max_wait_ms", o.max_wait_ms)
    at_most("--max_wait_ms", o.max_wait_ms, 60_000)  # a minute: a timer thread takes no longer wait
    not_negative("--rescan_seconds", o.rescan_seconds)
    at_most("--rescan_seconds", o.rescan_seconds, 86_400)  # a day
    at_least("--max_new_tokens", o.max_new_tokens, 1)
    at_most("--max_new_tokens", o.max_new_tokens, MAX_TARGET_LENGTH)
    positive("--timeout_seconds", o.timeout_seconds)
    at_most("--timeout_seconds", o.timeout_seconds, 86_400)
    positive("--kv_cache_mb", o.kv_cache_mb)
    at_most("--kv_cache_mb", o.kv_cache_mb, 2**30)  # a petabyte
    check_device(o.device)


def check_token(token: str | None, source: str) -> None:
    """Refuse an empty token (`--token "$TOKEN"` with the variable unset would otherwise turn authentication off) and
    one an HTTP header cannot carry; None means none was given."""
    if token is not None and not token.strip():
        without = "unset it" if source == "SOFTPROMPT_TOKEN" else "leave the option out"
        raise UserError(f"{source}: the token is empty; give one, or {without} to serve without one")
    if token is not None and not (token.isascii() and token.isprintable() and " " not in token):
        raise UserError(f"{source}: use printable ASCII characters without spaces (as an HTTP header carries them)")


def given_token(token: str | None) -> str | None:
    """--token as given, else $SOFTPROMPT_TOKEN when it is set (checked the same way), else None: no token."""
    if token is not None:
        return token
    token = os.environ.get("SOFTPROMPT_TOKEN")
    check_token(token, "SOFTPROMPT_TOKEN")
    return token


def check_address(host: str, port: int) -> None:
    """Refuse a host that does not resolve or an address already in use, before the model loads."""
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise UserError(f"--host {host}: cannot resolve it ({e.strerror})") from None
    with socket.socket(family, kind) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            s.bind(address)
        except OSError as e:
            raise UserError(f"--host {host} --port {port}: cannot listen there ({e.strerror})") from None


def served_model(prompts: str, model: str | None) -> tuple[str, str | None]:
    """The model to serve and its family: `model`, or the one every prompt file in the folder names."""
    named: dict[tuple[str, str | None], list[str]] = {}
    refused = []
    for _, path in discover(prompts):
        if not inside(Path(prompts), path):
            continue  # refused when the engine scans the folder
        try:
            metadata = load_prompt(path).metadata
        except UserError as e:
            refused.append(str(e))  # and refused, with its reason, when the engine scans the folder
            continue
        if metadata.get("base_model"):
            named.setdefault((metadata["base_model"], metadata.get("family")), []).append(path.name)
    if model:
        families = {family for name, family in named if name == model}
        return model, families.pop() if len(families) == 1 else None
    names = {name for name, _ in named}
    if not names:
        why = f" ({refused[0]}{f'; {len(refused) - 1} more refused' if len(refused) > 1 else ''})" if refused else ""
        raise UserError(f"--prompts: no prompt file in {prompts} names its model{why}; give --model")
    if len(names) > 1:
        shown = "; ".join(f"{name} ({', '.join(files)})" for (name, _), files in named.items())
        raise UserError(f"--prompts: the prompt files name different models: {shown}; choose one with --model")
    families = {family for _, family in named}
    return names.pop(), families.pop() if len(families) == 1 else None


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def run(prompts: str, model: str | None, options: ServeOptions, allow_other_model: bool = False) -> None:
    options = replace(options, token=given_token(options.token))
    check_options(prompts, options)
    name, family = served_model(prompts, model)
    check_address(options.host, options.port)
    import uvicorn

    from softprompt.models.loading import pick_device
    from softprompt.models.model import SoftPromptModel
    from softprompt.models.prefix_cache import supports as reuses_prefixes
    from softprompt.serve.app import create_app
    from softprompt.serve.engine import Engine

    handler = _log_to_stderr()
    try:
        if not options.token and not is_loopback(options.host):
            log.warning(
                "serving on %s without a token: anyone who reaches it can use it (give --token or SOFTPROMPT_TOKEN)",
                options.host,
            )
        device = pick_device(options.device)
        frozen = SoftPromptModel.load(name, family=family, dtype=options.dtype, compile=options.compile).to(device)
        set_key_value_reuse(frozen, options)
        log.info(
            "model %s (%s) on %s%s",
            frozen.name,
            frozen.family,
            device,
            ", prompt keys/values reused" if reuses_prefixes(frozen) else "",
        )
        engine = Engine(frozen, prompts, allow_other_model)
        log.info(
            "serving %d tasks from %s: %s",
            len(engine.snapshot().tasks),
            prompts,
            ", ".join(engine.snapshot().tasks) or "none yet",
        )
        uvicorn.run(
            create_app(engine, options),
            host=options.host,
            port=options.port,
            log_level="info",
            workers=1,
            http=json_errors_protocol(),
        )
    finally:
        log.removeHandler(handler)


def set_key_value_reuse(frozen, options: ServeOptions) -> None:
    """Decoder-only prompt keys/values: reused unless --no_kv_reuse or SOFTPROMPT_KV_REUSE=0 turns it off, within
    --kv_cache_mb."""
    frozen.kv_reuse = frozen.kv_reuse and options.kv_reuse
    frozen.prefix_cache.max_bytes = options.kv_cache_bytes


def _log_to_stderr() -> logging.Handler:
    """The server's log lines on standard error, as uvicorn writes its own, while it runs."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def json_errors_protocol():
    """uvicorn's HTTP/1.1 protocol with its answer to a malformed request (not HTTP at all, a bad request line or
    header) in JSON, as every other error is; uvicorn's own is plain text."""
    import json

    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class JsonErrors(H11Protocol):
        def send_400_response(self, msg: str) -> None:
            body = json.dumps({"error": f"malformed HTTP request ({msg.rstrip('.')})"}).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ]
            for event in (
                h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                h11.Data(data=body),
                h11.EndOfMessage(),
            ):
                self.transport.write(self.conn.send(event))
            self.transport.close()

    return JsonErrors
