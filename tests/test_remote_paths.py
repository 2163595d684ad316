"""A remote checkpoint or SentencePiece model that cannot be reached or read fails in bounded
time, in one line naming the path and the credentials variable (`ptune.remote`,
PTUNE_REMOTE_TIMEOUT).

No network: tensorstore's gcs kvstore is pointed at 127.0.0.1 (`TENSORSTORE_GCS_HTTP_URL`), and
so is the GCE metadata server it asks for credentials (`GCE_METADATA_ROOT`), with no gcloud
configuration (`CLOUDSDK_CONFIG` an empty folder): the offline user's situation, where the
real endpoints never answer. Each case runs in its own process, since tensorstore reads these
variables once per process.
"""

import http.server
import os
import socket
import subprocess
import sys
import threading
import time

import msgpack
import pytest

from ptune import remote
from ptune.errors import UserError

BUCKET = "ptune-test-bucket"
TIMEOUT_S = 3


def _free_port() -> int:
    """A local port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _offline_env(tmp_path, port: int, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "GOOGLE_APPLICATION_CREDENTIALS"}
    env.pop("GOOGLE_AUTH_TOKEN_FOR_TESTING", None)
    gcloud = tmp_path / "gcloud"
    gcloud.mkdir(exist_ok=True)
    env.update(
        CLOUDSDK_CONFIG=str(gcloud),
        TENSORSTORE_GCS_HTTP_URL=f"http://127.0.0.1:{port}",
        GCE_METADATA_ROOT=f"127.0.0.1:{port}",
        PTUNE_REMOTE_TIMEOUT=str(TIMEOUT_S),
        JAX_PLATFORMS="cpu",
        **extra,
    )
    return env


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("ptune: error:")]


@pytest.fixture
def gcs_server():
    """A local stand-in for GCS (and the metadata server): `files` {object name: bytes} are
    served; a request for another object is answered with `status` (403: refused), or never
    (status None: the metadata server then answers 404, so credentials are not waited on)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        files: dict = {}
        status = 403

        def do_GET(self):
            name = self.path.split("/o/", 1)[-1].split("?", 1)[0].replace("%2F", "/")
            body = self.files.get(name)
            storage = self.path.startswith("/storage/")  # else the metadata server
            if body is None and self.status is None and storage:
                time.sleep(60)  # never answers within the test's bound
                return
            code = 200 if body is not None else self.status or 404
            body = body if body is not None else b'{"error": {"code": 403, "message": "denied"}}'
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], Handler
    server.shutdown()
    server.server_close()


def test_an_unreachable_gs_checkpoint_fails_in_bounded_time_in_one_line(tmp_path):
    """Nothing listens at the endpoint and no credentials exist: tensorstore would retry for
    many minutes; `ptune info` stops after PTUNE_REMOTE_TIMEOUT with one line and exit 2."""
    path = f"gs://{BUCKET}/t5x/checkpoint_1100000"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "ptune", "info", f"--checkpoint={path}"],
        env=_offline_env(tmp_path, _free_port()),
        capture_output=True,
        text=True,
        timeout=180,  # a hang fails here rather than stalling the suite
        cwd=tmp_path,
    )
    waited = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    (line,) = _errors(done.stderr)
    assert f"{path}/checkpoint" in line
    assert f"no answer within {TIMEOUT_S} s" in line
    assert "GOOGLE_APPLICATION_CREDENTIALS" in line and "PTUNE_REMOTE_TIMEOUT" in line
    assert "Traceback" not in done.stderr
    assert waited >= TIMEOUT_S


def _read_header(path: str) -> str:
    return (
        "from ptune.checkpoints import t5x\n"
        "from ptune.errors import UserError\n"
        "try:\n"
        f"    t5x.open_checkpoint({path!r})\n"
        "except UserError as e:\n"
        "    print('ptune: error:', e)\n"
    )


def _header_error(tmp_path, port: int, path: str) -> str:
    """The one error line of reading `path`'s header in a fresh process against the local
    stand-in GCS server on `port`."""
    done = subprocess.run(
        [sys.executable, "-c", _read_header(path)],
        env=_offline_env(tmp_path, port),
        capture_output=True,
        text=True,
        timeout=180,
    )
    (line,) = _errors(done.stdout)
    return line


def test_a_refused_gs_read_is_one_line_naming_the_credentials_variable(tmp_path, gcs_server):
    port, handler = gcs_server
    handler.status = 403
    path = f"gs://{BUCKET}/ckpt"
    line = _header_error(tmp_path, port, path)
    assert f"{path}/checkpoint: cannot read it: PERMISSION_DENIED" in line
    assert "GOOGLE_APPLICATION_CREDENTIALS" in line and "http_response" not in line


def test_zarr_arrays_that_never_answer_fail_in_bounded_time(tmp_path, gcs_server):
    """The msgpack file is read, but the zarr metadata of its arrays never comes: the opens
    share one deadline and end in one line naming an array's path."""
    port, handler = gcs_server
    spec = {
        "driver": "zarr",
        "kvstore": {"driver": "gfile", "path": "target.encoder.kernel"},
        "metadata": {"shape": [2, 2], "chunks": [2, 2], "dtype": "<f4"},
    }
    checkpoint = {
        "version": 3,
        "optimizer": {"target": {"encoder": {"kernel": spec}}, "state": {"step": 7}},
    }
    handler.files = {"ckpt/checkpoint": msgpack.packb(checkpoint)}
    handler.status = None
    path = f"gs://{BUCKET}/ckpt"
    line = _header_error(tmp_path, port, path)
    assert f"{path}/target.encoder.kernel: no answer within {TIMEOUT_S} s" in line
    assert "GOOGLE_APPLICATION_CREDENTIALS" in line


@pytest.mark.parametrize("value", ["abc", "0", "-5", "inf", "nan"])
def test_a_bad_remote_timeout_is_refused_in_one_line(monkeypatch, value):
    monkeypatch.setenv(remote.TIMEOUT_ENV, value)
    with pytest.raises(UserError, match="PTUNE_REMOTE_TIMEOUT must be a positive number"):
        remote.remote_timeout()


def test_the_remote_timeout_defaults_to_a_minute(monkeypatch):
    monkeypatch.delenv(remote.TIMEOUT_ENV, raising=False)
    assert remote.remote_timeout() == 60.0
    monkeypatch.setenv(remote.TIMEOUT_ENV, "2.5")
    assert remote.remote_timeout() == 2.5


@pytest.fixture
def silent_server():
    """A local port that accepts connections and never answers (a metadata server, or any
    endpoint, on a network that drops replies)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted = []

    def accept():
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:  # closed
                return

    threading.Thread(target=accept, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()
    for connection in accepted:
        connection.close()


def test_an_unreachable_gs_sentencepiece_model_fails_in_bounded_time_in_one_line(
    tmp_path, silent_server
):
    """T5's vocabulary defaults to gs://t5-data/...; TensorFlow's GCS file system waits 61 s
    per try on a metadata server that never answers, and tries again. Loading it stops after
    PTUNE_REMOTE_TIMEOUT instead, naming the path, the credentials and the local way out."""
    env = _offline_env(tmp_path, _free_port(), GCE_METADATA_HOST=f"127.0.0.1:{silent_server}")
    env.pop("PTUNE_SPM_PATH", None)
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from ptune.tasks import vocab\n"
            "try:\n    vocab.get_vocabulary().vocab_size\n"
            "except FileNotFoundError as e:\n    print(e)",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,  # a hang fails here rather than stalling the suite
        cwd=tmp_path,
    )
    waited = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert line.startswith(
        "SentencePiece model gs://t5-data/vocabs/cc_all.32000.100extra/sentencepiece.model: "
        f"no answer within {TIMEOUT_S} s"
    ), line
    assert "GOOGLE_APPLICATION_CREDENTIALS" in line and "PTUNE_SPM_PATH" in line
    assert TIMEOUT_S <= waited < 60
