"""The proxy's key and CSR, made in a short-lived helper process.

The sidecar needs ECDSA key generation and a CSR only once per process (the same key and CSR
serve every renewal), but ``cryptography`` costs ~13 MB of resident memory once imported (a
second OpenSSL, its Rust module, the x509 classes) and memory cannot be given back. So the
proxy runs this module as ``python -m gossamer_proxy.mesh.credential_helper``: one JSON
request on stdin (``{"local_name": ...}``), one JSON answer on stdout (``key_pem`` and the
DER ``csr``, base64), then the helper exits. Checking what the identity service returns
needs no ``cryptography``: see :mod:`.credential_check`.

The private key crosses only the anonymous pipe between the proxy and its own child: it
never touches a file system. A helper that fails raises :class:`CredentialHelperError`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from typing import Any

__all__ = ["CredentialHelperError", "new_key_and_csr"]

HELPER_TIMEOUT = 30.0  # seconds: a helper that takes longer is killed and the call fails
MAX_ANSWER = 1 << 20  # bytes: a key and a CSR are under 1 KB; anything larger is a broken helper


class CredentialHelperError(RuntimeError):
    """The helper process could not be run or gave no usable answer."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object) -> bytes:
    if not isinstance(text, str):
        raise CredentialHelperError("credential helper answered a non-string field")
    return base64.b64decode(text.encode("ascii"), validate=True)


def _argv() -> list[str]:
    return [sys.executable, "-m", "gossamer_proxy.mesh.credential_helper"]


def _answer(stdout: bytes, stderr: bytes, returncode: int | None) -> dict[str, Any]:
    if returncode != 0:
        tail = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise CredentialHelperError(f"credential helper exited with {returncode}: {tail[0]}")
    if len(stdout) > MAX_ANSWER:
        raise CredentialHelperError("credential helper answer is too large")
    try:
        answer = json.loads(stdout)
    except ValueError:
        raise CredentialHelperError("credential helper answer is not JSON") from None
    if not isinstance(answer, dict):
        raise CredentialHelperError("credential helper answer is not an object")
    return answer


async def _call(request: dict[str, Any]) -> dict[str, Any]:
    try:
        process = await asyncio.create_subprocess_exec(
            *_argv(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise CredentialHelperError(f"credential helper failed to start: {exc}") from None
    try:
        async with asyncio.timeout(HELPER_TIMEOUT):
            stdout, stderr = await process.communicate(json.dumps(request).encode())
    except TimeoutError:
        raise CredentialHelperError("credential helper timed out") from None
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return _answer(stdout, stderr, process.returncode)


# --- the proxy's side ------------------------------------------------------------------------


async def new_key_and_csr(local_name: str) -> tuple[bytes, bytes]:
    """``(key_pem, csr_der)``: a new P-256 key and a DER CSR for ``local_name``."""
    answer = await _call({"local_name": local_name})
    try:
        return _unb64(answer["key_pem"]), _unb64(answer["csr"])
    except KeyError as exc:
        raise CredentialHelperError(f"credential helper answer lacks {exc}") from None


# --- the helper's side (imports cryptography) ------------------------------------------------


def _serve(request: dict[str, Any]) -> dict[str, Any]:
    from gossamer_tls import build_csr, generate_private_key, private_key_to_pem

    local_name = request.get("local_name")
    if not isinstance(local_name, str) or not local_name:
        raise ValueError("the request needs a local_name")
    key = generate_private_key()
    return {"key_pem": _b64(private_key_to_pem(key)), "csr": _b64(build_csr(key, local_name))}


def main() -> None:
    request = json.loads(sys.stdin.buffer.read(MAX_ANSWER + 1))
    if not isinstance(request, dict):
        raise SystemExit("credential helper: the request must be a JSON object")
    sys.stdout.write(json.dumps(_serve(request)))


if __name__ == "__main__":
    main()
