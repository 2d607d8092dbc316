"""The Open Inference Protocol v2 on the wire: the infer request and response, with the binary
tensor data extension, and the protocol's error shape.

A request body is JSON whatever its Content-Type (the reference client, ``tritonclient``,
sends none). With the binary extension the JSON header is followed by raw tensor bytes: the
``Inference-Header-Content-Length`` header gives the JSON's length, and each input carrying
``parameters.binary_data_size`` takes that many bytes, in input order. Raw layouts: numbers
little-endian (BOOL one byte, BF16 the upper 16 bits of an fp32), BYTES elements each a 4-byte
little-endian length then the bytes. Outputs come back in binary the same way when a requested
output says ``parameters.binary_data: true`` (or the request says ``binary_data_output``);
JSON otherwise. Every error on a /v2 route is ``{"error": "<message>"}``, the body the client
decodes. The binary framing is written here by hand: no maintained server-side library of it
exists outside Triton itself (the client packages only encode requests).

Only the codec lives here; the routes are in ``serve/app.py``.
"""

from __future__ import annotations

import math
import struct
import zlib
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = ["EXTENSIONS", "INFER_OPENAPI", "InferRequest", "add_error_shape", "decode_inputs",
           "encode_response", "parse_infer_request"]

EXTENSIONS = ["binary_tensor_data"]
HEADER_LENGTH = "inference-header-content-length"

# Little-endian numpy types of the protocol's numeric datatypes (BF16 is decoded by hand).
_NUMPY = {"BOOL": "u1", "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
          "INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8", "FP16": "<f2",
          "FP32": "<f4", "FP64": "<f8", "BF16": "<u2"}
NUMBERS = tuple(d for d in _NUMPY if d != "BOOL")
Datatype = Literal["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32",
                   "INT64", "FP16", "FP32", "FP64", "BF16", "BYTES"]


# ---------------------------------------------------------------------------------- request
class InferInput(BaseModel):
    name: str
    shape: list[Annotated[int, Field(ge=0, strict=True)]]
    datatype: Datatype
    data: list[Any] | None = Field(None, description="Row-major values (flat or nested); "
                                   "absent when parameters.binary_data_size says the tensor's "
                                   "bytes follow the JSON")
    parameters: dict[str, Any] | None = None


class RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = Field(None, description='{"binary_data": true} for '
                                              "raw bytes after the JSON")


class InferRequest(BaseModel):
    id: str | None = None
    inputs: list[InferInput] = Field(min_length=1)
    outputs: list[RequestedOutput] | None = None
    parameters: dict[str, Any] | None = Field(None, description='{"binary_data_output": true}'
                                              " for every output in binary")


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema with its ``$defs`` written in place (OpenAPI resolves ``$ref``
    against the whole document, where those definitions do not exist)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return walk(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {k: walk(v) for k, v in node.items()}
        return [walk(v) for v in node] if isinstance(node, list) else node

    return walk(schema)


# The route reads its body itself (any Content-Type, binary tensors), so the schema is given.
INFER_OPENAPI = {
    "requestBody": {"required": True, "content": {
        "application/json": {"schema": _inlined(InferRequest.model_json_schema())},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
    "parameters": [{"name": "Inference-Header-Content-Length", "in": "header",
                    "required": False, "schema": {"type": "integer", "minimum": 0},
                    "description": "Binary tensor data: the JSON header's length in bytes; "
                                   "the tensors' raw bytes follow it"}],
}


def parse_infer_request(body: bytes, headers: Any, max_bytes: int
                        ) -> tuple[InferRequest, bytes]:
    """The JSON header of an infer request, validated, and the binary bytes after it."""
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding in ("gzip", "deflate"):  # the client's request_compression_algorithm
        body = _decompress(body, encoding, max_bytes)
    elif encoding not in ("", "identity"):
        raise HTTPException(415, f"Content-Encoding {encoding!r}: expected gzip, deflate or "
                                 "none")
    declared = headers.get(HEADER_LENGTH)
    if declared is None:
        header, raw = body, b""
    else:
        if not _whole(declared) or int(declared) > len(body):
            raise HTTPException(400, f"Inference-Header-Content-Length: expected the JSON "
                                     f"header's length in bytes, at most the body's "
                                     f"{len(body)}, got {declared[:40]!r}")
        header, raw = body[:int(declared)], body[int(declared):]
    try:
        return InferRequest.model_validate_json(header), raw
    except ValidationError as err:
        errors = err.errors(include_url=False)
        if errors and errors[0]["type"] == "json_invalid":
            where = "the JSON header" if declared is not None else "the body"
            raise HTTPException(400, f"{where} is not valid UTF-8 JSON "
                                     f"({errors[0]['msg'].removeprefix('Invalid JSON: ')}); an"
                                     " infer request is a JSON object, then any binary tensor "
                                     "data (Inference-Header-Content-Length)") from None
        raise HTTPException(422, one_line(errors)) from None


def _decompress(body: bytes, encoding: str, max_bytes: int) -> bytes:
    inflate = zlib.decompressobj(zlib.MAX_WBITS | 16 if encoding == "gzip" else zlib.MAX_WBITS)
    try:
        out = inflate.decompress(body, max_bytes + 1)
    except zlib.error as err:
        raise HTTPException(400, f"Content-Encoding {encoding}: the body does not "
                                 f"decompress ({err})") from None
    if len(out) > max_bytes:
        raise HTTPException(413, f"request body is over {max_bytes} bytes once decompressed; "
                                 f"the limit is {max_bytes} (--max-body-bytes)")
    return out


def _whole(text: str) -> bool:
    """ASCII digits only ("²".isdigit() is true, and int("²") fails)."""
    text = text.strip()
    return text.isascii() and text.isdigit()


# ---------------------------------------------------------------------------------- inputs
# What each input kind takes: datatypes, and the shapes after the batch dimension N.
_TAKES = {
    "text": ("BYTES",), "category": ("BYTES", "BOOL", *NUMBERS), "numeric": NUMBERS,
    "image": NUMBERS, "sequence": ("BYTES", *NUMBERS), "series": NUMBERS,
    "time": ("BYTES", *NUMBERS),
    "audio": ("BYTES", *NUMBERS),  # a file's bytes (base64 text in JSON), or the samples
}
_SHAPES = {"text": "[N] or [N, 1]", "category": "[N] or [N, 1]", "numeric": "[N] or [N, 1]",
           "image": "[N, H, W] or [N, H, W, C]", "sequence": "[N, T] or [N, T, F] ([N] text)",
           "series": "[N, T]", "time": "[N, T]", "audio": "[N] file bytes or [N, T] samples"}


def _shape_fits(kind: str, shape: list[int], datatype: str) -> bool:
    rest = shape[1:]
    if kind in ("text", "category", "numeric") or (
            kind in ("sequence", "audio") and datatype == "BYTES"):
        return rest in ([], [1])
    if kind == "image":
        return len(rest) in (2, 3)
    if kind == "sequence":
        return len(rest) in (1, 2)
    if kind in ("series", "time", "audio"):
        return len(rest) == 1
    return True  # a kind this codec does not know: the model's check judges its values


def decode_inputs(model: Any, req: InferRequest, raw: bytes, max_instances: int
                  ) -> list[dict[str, Any]]:
    """The request's tensors as instances (one dict of column values per row), for
    ``model.check``: text as str, numbers as float (NaN: missing), images as arrays."""
    kinds = {**dict(model.inputs), **{c: "category" for c in model.sensitive},
             **{c: "time" for c in model.optional}}  # optional: a forecaster's time
    required = [n for n, _ in model.inputs] + model.sensitive
    tensors: dict[str, InferInput] = {}
    for t in req.inputs:
        if t.name not in kinds:
            raise HTTPException(422, f"inputs: unknown tensor {t.name!r}; the model's inputs "
                                     f"are {', '.join(kinds)}")
        if t.name in tensors:
            raise HTTPException(422, f"inputs: two tensors named {t.name!r}")
        tensors[t.name] = t
    missing = [n for n in required if n not in tensors]
    if missing:
        raise HTTPException(422, f"inputs: no tensor named {missing[0]!r}; the model's "
                                 f"inputs are {', '.join(kinds)}")
    values = _split_binary(req.inputs, raw)
    n = None
    columns: dict[str, list[Any]] = {}
    for t in req.inputs:
        kind, where = kinds[t.name], f"inputs.{t.name}"
        if t.datatype not in _TAKES.get(kind, (t.datatype,)):
            want = "BYTES" if kind == "text" else "a numeric datatype (FP32, INT64, ...)" if \
                kind in ("numeric", "image", "series") else "BYTES or a numeric datatype"
            raise HTTPException(422, f"{where}.datatype: expected {want} ({kind} input), "
                                     f"got {t.datatype}")
        if not _shape_fits(kind, t.shape, t.datatype):
            raise HTTPException(422, f"{where}.shape: expected {_SHAPES[kind]} ({kind} "
                                     f"input), got {t.shape}")
        if n is None:
            n = t.shape[0]
            if n == 0:
                raise HTTPException(422, f"{where}.shape: {t.shape} holds no instance; the "
                                         "first dimension is the batch")
            if n > max_instances:
                raise HTTPException(413, f"{n} instances; the limit is {max_instances} per "
                                         "request (--max-instances)")
        elif t.shape[0] != n:
            raise HTTPException(422, f"{where}.shape: expected [{n}, ...] like the other "
                                     f"inputs, got {t.shape}")
        arr = values[t.name] if t.name in values else _from_json(t, where)
        columns[t.name] = _rows(arr, t.shape, kind, where)
    assert n is not None  # at least one input (InferRequest: min_length=1)
    return [{c: col[i] for c, col in columns.items()} for i in range(n)]


def _split_binary(inputs: list[InferInput], raw: bytes) -> dict[str, Any]:
    """Each binary input's values (numpy array, or a list of bytes for BYTES), sliced from the
    bytes after the JSON in input order; every byte must be accounted for."""
    out: dict[str, Any] = {}
    at = 0
    for t in inputs:
        where = f"inputs.{t.name}"
        params = t.parameters or {}
        unsupported = sorted(k for k in params if k.startswith("shared_memory"))
        if unsupported:
            raise HTTPException(422, f"{where}.parameters.{unsupported[0]}: shared memory is "
                                     "not supported; send the data in JSON or binary")
        size = params.get("binary_data_size")
        if size is None:
            if t.data is None:
                raise HTTPException(422, f"{where}: no data; give data in the JSON or "
                                         "parameters.binary_data_size with the bytes after it")
            continue
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise HTTPException(422, f"{where}.parameters.binary_data_size: expected a whole "
                                     f"number of bytes, got {size!r}")
        if t.data is not None:
            raise HTTPException(422, f"{where}: both data and binary_data_size; give one")
        if at + size > len(raw):
            raise HTTPException(400, f"{where}.parameters.binary_data_size: {size} bytes, but "
                                     f"only {len(raw) - at} follow the JSON header")
        out[t.name] = _from_bytes(raw[at:at + size], t, where)
        at += size
    if at != len(raw):
        raise HTTPException(400, f"{len(raw) - at} bytes after the JSON header belong to no "
                                 "input (binary_data_size); check Inference-Header-Content-"
                                 "Length")
    return out


def _from_bytes(raw: bytes, t: InferInput, where: str) -> Any:
    count = math.prod(t.shape)
    if t.datatype == "BYTES":
        items, at = [], 0
        while at < len(raw):
            if at + 4 > len(raw):
                raise HTTPException(400, f"{where}: BYTES element {len(items)} is cut short; "
                                         "each is a 4-byte little-endian length, then that "
                                         "many bytes")
            (size,) = struct.unpack_from("<I", raw, at)
            if at + 4 + size > len(raw):
                raise HTTPException(400, f"{where}: BYTES element {len(items)} says {size} "
                                         f"bytes, but {len(raw) - at - 4} remain")
            items.append(raw[at + 4:at + 4 + size])
            at += 4 + size
        if len(items) != count:
            raise HTTPException(422, f"{where}: {len(items)} BYTES elements for shape "
                                     f"{t.shape}")
        return items
    itemsize = np.dtype(_NUMPY[t.datatype]).itemsize
    if len(raw) != count * itemsize:
        raise HTTPException(422, f"{where}: {len(raw)} bytes for shape {t.shape} of "
                                 f"{t.datatype} ({count * itemsize} expected)")
    arr = np.frombuffer(raw, _NUMPY[t.datatype])
    if t.datatype == "BF16":  # bfloat16: the upper half of a float32
        return (arr.astype("<u4") << 16).view("<f4")
    return arr != 0 if t.datatype == "BOOL" else arr.copy()  # writable, for torch


def _from_json(t: InferInput, where: str) -> Any:
    flat: list[Any] = []
    stack = [iter(t.data or [])]
    while stack:  # row-major, flat or nested to any depth
        for x in stack[-1]:
            if isinstance(x, list):
                stack.append(iter(x))
                break
            flat.append(x)
        else:
            stack.pop()
    if len(flat) != math.prod(t.shape):
        raise HTTPException(422, f"{where}.data: {len(flat)} values for shape {t.shape}")
    if t.datatype == "BYTES":
        return flat
    if t.datatype == "BOOL":
        ok, dtype = (lambda x: isinstance(x, bool)), bool
    elif t.datatype.startswith(("INT", "UINT")):  # Python ints, exact (a category's codes)
        ok, dtype = (lambda x: isinstance(x, int) and not isinstance(x, bool)), object
    else:  # floats; null (or NaN) is a missing value
        ok, dtype = (lambda x: x is None or (isinstance(x, int | float)
                                             and not isinstance(x, bool))), np.float64
    bad = next((x for x in flat if not ok(x)), None)
    if bad is not None:
        raise HTTPException(422, f"{where}.data: expected {t.datatype} values, got {bad!r}")
    return np.asarray(flat, dtype=dtype)


def _rows(arr: Any, shape: list[int], kind: str, where: str) -> list[Any]:
    """One value per instance: the tensor split along its first dimension."""
    n = shape[0]
    if isinstance(arr, list):  # BYTES: str (bytes decoded as UTF-8) per element
        if kind not in _TAKES or kind == "audio":  # raw bytes (an audio file's), as sent
            return arr if len(shape) == 1 or math.prod(shape[1:]) == 1 else \
                [arr[i * len(arr) // n:(i + 1) * len(arr) // n] for i in range(n)]
        items = []
        for i, x in enumerate(arr):
            if isinstance(x, bytes):
                try:
                    x = x.decode("utf-8")
                except UnicodeDecodeError:
                    raise HTTPException(422, f"{where}[{i}]: not valid UTF-8 text") from None
            items.append(x)
        if len(shape) == 1 or kind in ("text", "category", "sequence"):
            return items
        per = len(items) // n  # [N, T] strings (a forecaster's times)
        return [items[i * per:(i + 1) * per] for i in range(n)]
    arr = arr.reshape(shape)
    if kind == "image":
        return list(arr)
    if kind in ("numeric", "category"):
        flat = arr.reshape(n).tolist()
        return [None if isinstance(v, float) and v != v else v for v in flat]  # NaN: missing
    if kind in ("sequence", "audio"):
        return list(arr.astype(np.float32))
    if kind in ("series", "time"):
        return [[None if v != v else v for v in row] for row in arr.tolist()]
    return arr.tolist() if arr.ndim == 1 else [row.tolist() for row in arr]


# ---------------------------------------------------------------------------------- response
def encode_response(name: str, req: InferRequest, outputs: list[dict[str, Any]]) -> Response:
    """The infer response: the requested outputs (all when none are named), each in binary
    after the JSON when asked, in JSON otherwise."""
    import orjson

    by_name = {o["name"]: o for o in outputs}
    default = bool((req.parameters or {}).get("binary_data_output", False))
    wanted = [(o.name, o.parameters or {}) for o in req.outputs] if req.outputs else \
        [(o["name"], {}) for o in outputs]
    chosen, chunks = [], []
    for i, (out_name, params) in enumerate(wanted):
        if out_name not in by_name:
            raise HTTPException(422, f"outputs[{i}].name: no output {out_name!r}; the model's "
                                     f"outputs are {', '.join(by_name)}")
        if params.get("classification"):
            raise HTTPException(422, f"outputs[{i}].parameters.classification: the "
                                     "classification extension is not supported; ask for the "
                                     "probabilities output")
        o = by_name[out_name]
        if not params.get("binary_data", default):
            chosen.append(o)
            continue
        data = _to_bytes(o)
        chunks.append(data)
        chosen.append({"name": o["name"], "datatype": o["datatype"], "shape": o["shape"],
                       "parameters": {"binary_data_size": len(data)}})
    body: dict[str, Any] = {"model_name": name, "model_version": "1", "outputs": chosen}
    if req.id is not None:
        body["id"] = req.id
    header = orjson.dumps(body)
    if not chunks:
        return Response(header, media_type="application/json")
    return Response(b"".join([header, *chunks]), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(header))})


def _to_bytes(output: dict[str, Any]) -> bytes:
    if output["datatype"] == "BYTES":
        items = [str(x).encode("utf-8") for x in output["data"]]
        return b"".join(struct.pack("<I", len(b)) + b for b in items)
    return np.asarray(output["data"], dtype=_NUMPY[output["datatype"]]).tobytes()


# ---------------------------------------------------------------------------------- errors
def is_v2_path(path: str) -> bool:
    return path == "/v2" or path.startswith("/v2/")


def one_line(errors: list[dict[str, Any]]) -> str:
    """pydantic's errors as one line: ``inputs[0].shape[1]: Input should be ...; ...``."""
    parts = []
    for e in errors[:3]:
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"]
                      if p != "body").lstrip(".")
        parts.append(f"{loc}: {e['msg']}" if loc else e["msg"])
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(parts) + more


def add_error_shape(app: FastAPI) -> None:
    """Errors on the /v2 routes as ``{"error": message}`` (what v2 clients decode); elsewhere
    FastAPI's ``{"detail": ...}``, except that a body that is not text is never echoed back
    (FastAPI's own handler would fail decoding it: a 500). Call after add_openai_routes: its
    validation handler keeps the OpenAI routes."""
    from fastapi.exception_handlers import http_exception_handler

    before = app.exception_handlers.get(RequestValidationError)

    async def http_error(request: Request, err: StarletteHTTPException) -> Response:
        if is_v2_path(request.url.path):
            return JSONResponse({"error": str(err.detail)}, status_code=err.status_code,
                                headers=err.headers)
        return await http_exception_handler(request, err)

    async def invalid(request: Request, err: RequestValidationError) -> Response:
        from dlforge.serve.openai_api import is_openai_path

        path = request.url.path
        if is_openai_path(path) and before is not None:
            return await before(request, err)
        errors = err.errors()
        if any(e["loc"] == ("body",) and isinstance(e.get("input"), bytes) for e in errors):
            why = ("the request body is not JSON; send a JSON object with Content-Type: "
                   "application/json")
            body = {"error": why} if is_v2_path(path) else {"detail": why}
            return JSONResponse(body, status_code=422)
        if is_v2_path(path):
            return JSONResponse({"error": one_line(errors)}, status_code=422)
        safe = jsonable_encoder(errors, custom_encoder={
            bytes: lambda b: b.decode("utf-8", "backslashreplace")})
        return JSONResponse({"detail": safe}, status_code=422)

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
