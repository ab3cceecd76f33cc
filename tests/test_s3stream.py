"""roles/mlflow_server/files/mlflow_aws_s3stream.py writes the object MLflow's own upload writes.

The same bytes go to the same S3 (moto, in process: no network) twice: once the way MLflow 3.17's
server does it (into a temporary file, then ``S3ArtifactRepository.log_artifact``), once through
the stream methods this module adds, fed by a real Starlette request (the FastAPI route's) or a
Flask request (the Flask route's). The objects must match: body, ContentType, ContentEncoding,
server-side encryption, and the ETag, which for a multipart upload encodes how the body was split
into parts. Also: the upload reaches S3 while the body is still arriving; a body that breaks off
leaves no object and no open multipart upload; a body without a Content-Length takes MLflow's
temporary-file path. The deployed module is checked in molecule/front_door (test_lookup_cache).
"""

import asyncio
import functools
import importlib.util
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import boto3
import pytest
from mlflow.store.artifact.s3_artifact_repo import S3ArtifactRepository
from moto import mock_aws

FILES = Path(__file__).resolve().parents[1] / "roles" / "mlflow_server" / "files"
MODULE = FILES / "mlflow_aws_s3stream.py"
BUCKET = "artifacts"
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def s3stream():
    spec = importlib.util.spec_from_file_location("mlflow_aws_s3stream_under_test", MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def s3(monkeypatch):
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    for name in ("MLFLOW_S3_ENDPOINT_URL", "MLFLOW_S3_UPLOAD_EXTRA_ARGS", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.fixture
def repos(s3stream, s3):
    """(MLflow's repository, one with the stream methods), writing under two prefixes."""

    class Streamed(S3ArtifactRepository):
        log_artifact_from_stream = s3stream.log_artifact_from_stream
        log_artifact_from_async_stream = s3stream.log_artifact_from_async_stream

    return S3ArtifactRepository(f"s3://{BUCKET}/mlflow/0/run"), Streamed(f"s3://{BUCKET}/stream/0/run")


def mlflows_upload(repo, tmp_path, data, name, artifact_path):
    # What MLflow 3.17's server does without a StreamUploadMixin: a temporary file, then log_artifact.
    path = tmp_path / "spool" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    repo.log_artifact(str(path), artifact_path=artifact_path)


def pieces(data, seed):
    """The body as a client's packets arrive: sizes from 1 byte to 256 KiB."""
    rng = random.Random(seed)
    at = 0
    while at < len(data):
        size = rng.choice((1, 1000, 16 * 1024, 64 * 1024, 256 * 1024))
        yield data[at:at + size]
        at += size


def starlette_request(chunks, length=True, fail_after=None):
    """A Starlette request (what the FastAPI route gets) whose body is ``chunks``."""
    from starlette.requests import ClientDisconnect, Request

    chunks = list(chunks)
    total = sum(len(chunk) for chunk in chunks)
    headers = [(b"content-length", str(total).encode())] if length else []
    state = {"sent": 0, "at": 0}

    async def receive():
        if fail_after is not None and state["sent"] >= fail_after:
            raise ClientDisconnect()
        at = state["at"]
        state["at"] += 1
        body = chunks[at] if at < len(chunks) else b""
        state["sent"] += len(body)
        return {"type": "http.request", "body": body, "more_body": at + 1 < len(chunks)}

    return Request({"type": "http", "method": "PUT", "path": "/", "headers": headers, "query_string": b""}, receive)


def stream_async(repo, request, name, artifact_path):
    asyncio.run(repo.log_artifact_from_async_stream(request.stream(), name, artifact_path=artifact_path))


def stream_flask(repo, data, name, artifact_path, length=True):
    import flask

    app = flask.Flask(__name__)
    # Without a length, the WSGI server must say the input ends by itself (as a chunked body does).
    with app.test_request_context("/", method="PUT", data=data,
                                  environ_overrides=None if length else {"wsgi.input_terminated": True}):
        if not length:
            flask.request.environ.pop("CONTENT_LENGTH", None)
        repo.log_artifact_from_stream(flask.request.stream, name, artifact_path=artifact_path)


def head(s3, key):
    found = s3.head_object(Bucket=BUCKET, Key=key)
    body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return {name: found.get(name) for name in ("ETag", "ContentType", "ContentEncoding", "ContentLength",
                                               "ServerSideEncryption")}, body


def assert_same_object(s3, name, artifact_path, data):
    sub = f"{artifact_path}/" if artifact_path else ""
    theirs, their_body = head(s3, f"mlflow/0/run/{sub}{name}")
    ours, our_body = head(s3, f"stream/0/run/{sub}{name}")
    assert our_body == their_body == data
    assert ours == theirs
    return ours


SIZES = [0, 1, 5 * MIB + 17, 8 * MIB, 8 * MIB + 1, 21 * MIB + 3]


@pytest.mark.parametrize("size", SIZES, ids=[str(size) for size in SIZES])
def test_async_stream_writes_mlflows_object(repos, s3, tmp_path, size):
    mlflow_repo, streamed = repos
    data = random.Random(size).randbytes(size)
    mlflows_upload(mlflow_repo, tmp_path, data, "model.pkl", "models/m")
    stream_async(streamed, starlette_request(pieces(data, size)), "model.pkl", "models/m")
    found = assert_same_object(s3, "model.pkl", "models/m", data)
    assert ("-" in found["ETag"]) == (size >= 8 * MIB), found  # boto3's threshold: multipart from 8 MiB


@pytest.mark.parametrize("size", [3, 9 * MIB + 5], ids=["small", "multipart"])
def test_flask_stream_writes_mlflows_object(repos, s3, tmp_path, size):
    mlflow_repo, streamed = repos
    data = random.Random(size).randbytes(size)
    mlflows_upload(mlflow_repo, tmp_path, data, "weights.bin", None)
    stream_flask(streamed, data, "weights.bin", None)
    assert_same_object(s3, "weights.bin", None, data)


def test_content_type_encoding_and_extra_args_are_mlflows(repos, s3, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_S3_UPLOAD_EXTRA_ARGS", '{"ServerSideEncryption": "AES256"}')
    mlflow_repo, streamed = repos
    data = random.Random(1).randbytes(9 * MIB)
    mlflows_upload(mlflow_repo, tmp_path, data, "model.tar.gz", "a")
    stream_async(streamed, starlette_request(pieces(data, 1)), "model.tar.gz", "a")
    found = assert_same_object(s3, "model.tar.gz", "a", data)
    assert (found["ContentType"], found["ContentEncoding"], found["ServerSideEncryption"]) == (
        "application/x-tar", "gzip", "AES256")


def test_part_size_follows_the_declared_size(repos, s3, tmp_path, monkeypatch):
    """boto3 picks larger parts for larger files (at most 10,000 parts): with the limit set to 2 parts,
    a 20 MiB upload is 2 parts of 10 MiB for MLflow's file, and must be for the stream too, which
    only the request's Content-Length tells it."""
    import s3transfer.upload
    from s3transfer.utils import ChunksizeAdjuster

    monkeypatch.setattr(s3transfer.upload, "ChunksizeAdjuster", functools.partial(ChunksizeAdjuster, max_parts=2))
    mlflow_repo, streamed = repos
    data = random.Random(2).randbytes(20 * MIB)
    mlflows_upload(mlflow_repo, tmp_path, data, "big.bin", None)
    stream_async(streamed, starlette_request(pieces(data, 2)), "big.bin", None)
    assert assert_same_object(s3, "big.bin", None, data)["ETag"].endswith('-2"')


def test_parts_reach_s3_while_the_body_arrives(repos, s3):
    """The body's last piece is held back until S3 has received a part: a server that receives the
    whole body before uploading would wait for ever (here: fail after 20 s)."""
    _, streamed = repos
    part_seen = threading.Event()
    streamed._get_s3_client().meta.events.register("before-call.s3.UploadPart", lambda **_: part_seen.set())
    data = random.Random(3).randbytes(24 * MIB)
    chunks = list(pieces(data, 3))
    inner = starlette_request(chunks)
    receive = inner.receive
    served = {"n": 0}

    async def held_receive():
        if served["n"] == len(chunks) - 1:
            if not await asyncio.to_thread(part_seen.wait, 20):
                raise AssertionError("no part reached S3 before the body's end")
        served["n"] += 1
        return await receive()

    inner._receive = held_receive
    stream_async(streamed, inner, "early.bin", None)
    assert s3.get_object(Bucket=BUCKET, Key="stream/0/run/early.bin")["Body"].read() == data


@pytest.mark.parametrize("broken_after", [2 * MIB, 13 * MIB], ids=["before-the-first-part", "after-a-part"])
def test_a_broken_body_leaves_nothing(repos, s3, broken_after):
    from starlette.requests import ClientDisconnect

    _, streamed = repos
    data = random.Random(4).randbytes(30 * MIB)
    with pytest.raises(ClientDisconnect):
        stream_async(streamed, starlette_request(pieces(data, 4), fail_after=broken_after), "cut.bin", None)
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="stream/")
    assert not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")


@pytest.mark.parametrize("caller", ["async", "flask"])
def test_without_content_length_the_body_is_spooled_as_mlflow_does(repos, s3, tmp_path, s3stream, monkeypatch,
                                                                   caller):
    def no_streaming(*args, **kwargs):
        raise AssertionError("streamed a body of unknown size")

    monkeypatch.setattr(s3stream, "_upload", no_streaming)
    mlflow_repo, streamed = repos
    data = random.Random(5).randbytes(9 * MIB + 1)
    mlflows_upload(mlflow_repo, tmp_path, data, "spooled.bin", "x")
    if caller == "async":
        stream_async(streamed, starlette_request(pieces(data, 5), length=False), "spooled.bin", "x")
    else:
        stream_flask(streamed, data, "spooled.bin", "x", length=False)
    assert_same_object(s3, "spooled.bin", "x", data)


INSTALL_CHECK = """
import mlflow_aws_s3stream as m
from mlflow.store.artifact.artifact_repo import StreamUploadMixin
from mlflow.store.artifact.s3_artifact_repo import S3ArtifactRepository
if {other_mlflow}:
    m.EXPECTED["S3ArtifactRepository._upload_file"] ^= 1
done, why = m.install()
streams = isinstance(S3ArtifactRepository("s3://b/p"), StreamUploadMixin)
if {other_mlflow}:
    assert not done and "S3ArtifactRepository._upload_file: source differs" in why and not streams, (done, why)
else:
    assert (done, why, streams) == (True, "", True), (done, why)
    assert m.install() == (True, "")  # a second import changes nothing
"""


@pytest.mark.parametrize("other_mlflow", [False, True], ids=["pinned-mlflow", "another-mlflow"])
def test_install(other_mlflow):
    """install() finds MLflow's functions as written for and makes the S3 repository stream; with
    another MLflow's source (a checksum that does not match) it leaves MLflow as it is."""
    env = {**os.environ, "PYTHONPATH": str(FILES)}
    done = subprocess.run([sys.executable, "-c", INSTALL_CHECK.format(other_mlflow=other_mlflow)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
