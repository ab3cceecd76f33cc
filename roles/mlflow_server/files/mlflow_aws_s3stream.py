# Installed by the mlflow_server role (mlflow_server_stream_artifact_uploads). Do not edit by hand.
"""Proxied artifact uploads streamed to S3, for MLflow's S3ArtifactRepository (the pinned MLflow 3.17).

MLflow's server receives an uploaded artifact (``PUT /api/2.0/mlflow-artifacts/artifacts/...``)
into a temporary file, and only when the last byte is in does it upload that file to S3. The two
transfers run one after the other: a 1 GiB upload through the front door ran at 53-64 % of boto3's
speed straight to the same S3 endpoint (bench/README.md). MLflow streams instead when the artifact
repository is a ``StreamUploadMixin``, which its S3 repository is not in 3.17.

Here it becomes one: ``log_artifact_from_async_stream`` (the FastAPI route's call) and
``log_artifact_from_stream`` (the Flask route's) give the request body to boto3's own transfer
manager (``upload_fileobj``'s), which sends it as a multipart upload while it arrives, part by
part, several parts at once. The object is the one MLflow's ``log_artifact`` would write: the same
bucket and key, the same ContentType and ContentEncoding guessed from the file name, the same
ExpectedBucketOwner and MLFLOW_S3_UPLOAD_EXTRA_ARGS, the same checksums and part sizes (boto3's
transfer manager, told the size from the request's Content-Length, makes the same choices as for a
file of that size). A request that fails half way (client gone, S3 error) aborts the multipart
upload: no object, no parts left behind, as the temporary file path leaves none.

Memory: at most ``MAX_PARTS_IN_MEMORY`` parts per upload (8 MiB each up to 78 GiB; boto3 makes parts
larger for larger files so that there are at most 10,000), in place of a temporary file on disk.

A body without a Content-Length (a chunked request) is received into a temporary file first, as
MLflow does, since its size decides the part size. ``install`` makes the change only if MLflow's
functions are the ones this was written against (checksums of their source). Imported by
mlflow_aws_authcache in each server worker, with MLFLOW_AWS_STREAM_UPLOADS=true.
"""

import asyncio
import inspect
import os
import posixpath
import tempfile
import zlib

import flask
import mlflow.server.artifact_router as _router
import mlflow.server.handlers as _handlers
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from mlflow.store.artifact.artifact_repo import ARTIFACT_STREAM_CHUNK_SIZE, StreamUploadMixin
from mlflow.store.artifact.s3_artifact_repo import S3ArtifactRepository
from s3transfer.subscribers import BaseSubscriber

# CRC32 of the source of MLflow's functions, in the version this was written for: the two routes
# that call the repository's stream methods, the repository's upload (called with a client that
# streams: its one call must stay ``s3_client.upload_file(Filename=, Bucket=, Key=, ExtraArgs=)``)
# and log_artifact (whose key _destination reproduces).
EXPECTED = {
    "artifact_router.upload_artifact": 0x829AB1D5,
    "handlers._upload_artifact": 0x2F084F8B,
    "S3ArtifactRepository._upload_file": 0x5BCBF8AC,
    "S3ArtifactRepository.log_artifact": 0xDBE0778B,
}

# Parts read ahead of S3 and being sent, per upload (boto3's default is 10).
MAX_PARTS_IN_MEMORY = 4
# What the thread bridging the event loop asks of it at least at a time (one hop per MiB).
MIN_PULL = 1024 * 1024


def source_crc(func):
    return zlib.crc32(inspect.getsource(func).encode()) & 0xFFFFFFFF


def _functions():
    return {
        "artifact_router.upload_artifact": _router.upload_artifact,
        "handlers._upload_artifact": _handlers._upload_artifact,
        "S3ArtifactRepository._upload_file": S3ArtifactRepository._upload_file,
        "S3ArtifactRepository.log_artifact": S3ArtifactRepository.log_artifact,
    }


class _KnownSize(BaseSubscriber):
    """Tells boto3's transfer manager the body's size, which it cannot learn from a stream."""

    def __init__(self, size):
        super().__init__()
        self._size = size

    def on_queued(self, future, **kwargs):
        future.meta.provide_transfer_size(self._size)


class _ExactReader:
    """A stream whose read(n) returns n bytes until the end (boto3 makes each read a part, and S3
    refuses a part under 5 MiB that is not the last). ``pull(n)`` returns up to n bytes, fewer only
    at the end; b"" at the end."""

    def __init__(self, pull):
        self._pull = pull
        self._buffer = bytearray()
        self._eof = False

    def read(self, amount=-1):
        if amount is None or amount < 0:
            while not self._eof:
                self._fill(MIN_PULL * 8)
            data, self._buffer = bytes(self._buffer), bytearray()
            return data
        while len(self._buffer) < amount and not self._eof:
            self._fill(amount - len(self._buffer))
        data = bytes(self._buffer[:amount])
        del self._buffer[:amount]
        return data

    def _fill(self, amount):
        piece = self._pull(max(amount, MIN_PULL))
        if piece:
            self._buffer += piece
        else:
            self._eof = True


def _destination(repo, artifact_file_name, artifact_path):
    # S3ArtifactRepository.log_artifact's key, for a local file named artifact_file_name.
    bucket, dest_path = repo.parse_s3_compliant_uri(repo.artifact_uri)
    if artifact_path:
        dest_path = posixpath.join(dest_path, artifact_path)
    return bucket, posixpath.join(dest_path, os.path.basename(artifact_file_name))


class _StreamingClient:
    """What S3ArtifactRepository._upload_file calls ``upload_file`` on: it uploads the stream in
    place of the named file, with the ExtraArgs MLflow's own function chose for that name."""

    def __init__(self, client, reader, size):
        self._client, self._reader, self._size = client, reader, size

    def upload_file(self, Filename, Bucket, Key, ExtraArgs):  # noqa: N803 (boto3's argument names)
        config = TransferConfig(max_concurrency=MAX_PARTS_IN_MEMORY)
        config.max_in_memory_upload_chunks = MAX_PARTS_IN_MEMORY
        with create_transfer_manager(self._client, config) as manager:
            manager.upload(self._reader, Bucket, Key, extra_args=ExtraArgs,
                           subscribers=[_KnownSize(self._size)]).result()


def _upload(repo, reader, size, artifact_file_name, artifact_path):
    bucket, key = _destination(repo, artifact_file_name, artifact_path)
    # MLflow's own _upload_file guesses the content type and encoding from the (never opened) file
    # name and adds the expected bucket owner and MLFLOW_S3_UPLOAD_EXTRA_ARGS.
    repo._upload_file(s3_client=_StreamingClient(repo._get_s3_client(), reader, size),
                      local_file=os.path.basename(artifact_file_name), bucket=bucket, key=key)


def _content_length(value):
    try:
        size = int(value)
    except (TypeError, ValueError):
        return None
    return size if size >= 0 else None


def _request_content_length(chunks):
    """The Content-Length of the request whose ``stream()`` produced ``chunks`` (Starlette's
    ``Request.stream`` is an async generator method: its frame holds the request), or None."""
    frame = getattr(chunks, "ag_frame", None)
    request = frame.f_locals.get("self") if frame is not None else None
    headers = getattr(request, "headers", None)
    return _content_length(headers.get("content-length")) if headers is not None else None


def log_artifact_from_stream(self, stream, artifact_file_name, artifact_path=None):
    size = _content_length(flask.request.content_length) if flask.has_request_context() else None
    if size is None:
        with tempfile.TemporaryDirectory() as tmp_dir:
            tmp_path = os.path.join(tmp_dir, os.path.basename(artifact_file_name))
            with open(tmp_path, "wb") as f:
                while chunk := stream.read(ARTIFACT_STREAM_CHUNK_SIZE):
                    f.write(chunk)
            self.log_artifact(tmp_path, artifact_path=artifact_path)
        return
    _upload(self, _ExactReader(stream.read), size, artifact_file_name, artifact_path)


async def log_artifact_from_async_stream(self, chunks, artifact_file_name, artifact_path=None):
    size = _request_content_length(chunks)
    if size is None:
        with tempfile.TemporaryDirectory() as tmp_dir:
            tmp_path = os.path.join(tmp_dir, os.path.basename(artifact_file_name))
            with open(tmp_path, "wb") as f:
                async for chunk in chunks:
                    await asyncio.to_thread(f.write, chunk)
            await asyncio.to_thread(self.log_artifact, tmp_path, artifact_path=artifact_path)
        return
    loop = asyncio.get_running_loop()
    iterator = aiter(chunks)

    async def gather(amount):
        pieces, have = [], 0
        while have < amount:
            try:
                piece = await anext(iterator)
            except StopAsyncIteration:
                break
            pieces.append(piece)
            have += len(piece)
        return b"".join(pieces)

    def pull(amount):  # in boto3's thread: the event loop reads the body
        return asyncio.run_coroutine_threadsafe(gather(amount), loop).result()

    await asyncio.to_thread(_upload, self, _ExactReader(pull), size, artifact_file_name, artifact_path)


def install():
    """Make S3ArtifactRepository a StreamUploadMixin. Returns (done, why not)."""
    if getattr(S3ArtifactRepository, "log_artifact_from_async_stream", None) is log_artifact_from_async_stream:
        return True, ""
    if issubclass(S3ArtifactRepository, StreamUploadMixin):
        return False, "MLflow's S3 repository streams uploads itself"
    for name, func in _functions().items():
        crc = source_crc(func)
        if crc != EXPECTED[name]:
            return False, f"{name}: source differs (crc32 {crc:#010x})"
    S3ArtifactRepository.log_artifact_from_stream = log_artifact_from_stream
    S3ArtifactRepository.log_artifact_from_async_stream = log_artifact_from_async_stream
    StreamUploadMixin.register(S3ArtifactRepository)
    return True, ""
