#!/usr/bin/env python3
"""Fjord's shim for OpenFaaS's python3-http template (of-watchdog + Flask + waitress), without
a container and without dependencies of its own: the Python 3.11 standard library only.

Fjord's `http` runtime starts one of these per worker with

    PORT               listen on 127.0.0.1:$PORT
    FJORD_HANDLER_DIR  the user's handler folder (handler.py, maybe .python/ of pip deps)
    FJORD_HEALTH_PATH  an extra health path (optional); GET /_/health always answers

and forwards each call to it as plain HTTP/1.1.

It imports handler.py the way the template does (`from function import handler`: the folder
is loaded as the package `function`, so relative imports work, and is also on sys.path, so
plain `import sibling` works) and calls `handler.handle(event, context)` with the template's
Event (body bytes, Flask-like headers and args, method, path) and Context (hostname). It
answers as the template's format_response does through Flask. Where it departs from the
template it says so below ("Fjord:").
"""

import dataclasses
import datetime
import decimal
import email.utils
import importlib
import importlib.machinery
import importlib.util
import json
import os
import signal
import site
import socketserver
import sys
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote

SHIM = "fjord python3-http shim"


def die(message):
    sys.stderr.write(f"{SHIM}: {message}\n")
    sys.stderr.flush()
    sys.exit(1)


# ----------------------------------------------------------------------------------------------
# The request as the handler sees it


class Headers:
    """Request headers like werkzeug's EnvironHeaders (what Flask's request.headers is):
    case-insensitive `[]`/`get`/`in`, Title-Cased names, repeated headers joined with ", ",
    and, as in werkzeug, iterating yields (name, value) pairs; dict(headers) works."""

    def __init__(self, pairs):
        merged = {}
        for name, value in pairs:
            key = name.lower()
            if key in merged:
                merged[key] = (merged[key][0], merged[key][1] + ", " + value)
            else:
                merged[key] = (name.title(), value)
        self._items = list(merged.values())
        self._index = {k: i for i, k in enumerate(merged)}

    def __getitem__(self, key):
        if not isinstance(key, str):
            raise KeyError(key)
        i = self._index.get(key.lower())
        if i is None:
            raise KeyError(key)
        return self._items[i][1]

    def get(self, key, default=None, type=None):
        try:
            value = self[key]
        except KeyError:
            return default
        if type is None:
            return value
        try:
            return type(value)
        except ValueError:
            return default

    def getlist(self, key, type=None):
        value = self.get(key, type=type)
        return [] if value is None else [value]

    def __contains__(self, key):
        return isinstance(key, str) and key.lower() in self._index

    def __iter__(self):
        return iter(self._items)

    def __len__(self):
        return len(self._items)

    def keys(self):
        return [k for k, _ in self._items]

    def values(self):
        return [v for _, v in self._items]

    def items(self):
        return list(self._items)

    def to_dict(self):
        return dict(self._items)

    def __repr__(self):
        return f"Headers({self._items!r})"


class Args(dict):
    """The query string like Flask's request.args (a werkzeug MultiDict): a dict of the first
    value of each name, with getlist() for all of them."""

    def __init__(self, pairs):
        super().__init__()
        self._lists = {}
        for key, value in pairs:
            self._lists.setdefault(key, []).append(value)
            if key not in self:
                dict.__setitem__(self, key, value)

    def get(self, key, default=None, type=None):
        if key not in self:
            return default
        value = self[key]
        if type is None:
            return value
        try:
            return type(value)
        except ValueError:
            return default

    def getlist(self, key, type=None):
        values = self._lists.get(key, [])
        if type is None:
            return list(values)
        out = []
        for v in values:
            try:
                out.append(type(v))
            except ValueError:
                pass
        return out

    def to_dict(self, flat=True):
        return dict(self) if flat else {k: list(v) for k, v in self._lists.items()}


class Event:
    def __init__(self, method, path, query, headers, body):
        self.body = body
        self.headers = headers
        self.method = method
        self.query = query
        self.path = path


class Context:
    def __init__(self):
        self.hostname = os.getenv("HOSTNAME", "localhost")


# ----------------------------------------------------------------------------------------------
# The answer, as the template's format_response + Flask make it


def _json_default(o):
    # Flask's DefaultJSONProvider.default
    if isinstance(o, datetime.date):
        if isinstance(o, datetime.datetime):
            if o.tzinfo is not None:
                o = o.astimezone(datetime.timezone.utc)
            return email.utils.format_datetime(o.replace(tzinfo=datetime.timezone.utc), usegmt=True)
        return email.utils.format_datetime(
            datetime.datetime(o.year, o.month, o.day, tzinfo=datetime.timezone.utc), usegmt=True
        )
    if isinstance(o, (decimal.Decimal, uuid.UUID)):
        return str(o)
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    if hasattr(o, "__html__"):
        return str(o.__html__())
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


def jsonify(value):
    # flask.jsonify: sorted keys, compact, a trailing newline, application/json.
    text = json.dumps(value, default=_json_default, sort_keys=True, separators=(",", ":"))
    return (text + "\n").encode("utf-8"), "application/json"


HTML = "text/html; charset=utf-8"  # Flask's default mimetype for str / bytes answers


def to_body(value):
    """(bytes, default content type) for a body value."""
    if isinstance(value, (dict, list)):
        # Fjord: the template jsonifies only dicts and sends str(list) (a Python repr).
        return jsonify(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        # Fjord: the template sends str(bytes), i.e. "b'...'"; the shim sends the bytes.
        return bytes(value), HTML
    if value is None:
        return b"", HTML
    return str(value).encode("utf-8"), HTML


def header_pairs(headers):
    if headers is None:
        return []
    if isinstance(headers, dict):
        items = headers.items()
    elif isinstance(headers, Headers):
        items = headers.items()
    else:
        items = headers
    pairs = []
    for name, value in items:
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            pairs.append((str(name), str(v)))
    return pairs


def parse_status(status):
    if isinstance(status, bool):
        raise TypeError(f"statusCode must be an int, got {status!r}")
    if isinstance(status, int):
        code = status
    elif isinstance(status, str) and status.strip()[:3].isdigit():
        code = int(status.strip()[:3])  # "201" or "201 CREATED", as Flask takes them
    else:
        raise TypeError(f"statusCode must be an int, got {status!r}")
    if not 100 <= code <= 999:
        raise ValueError(f"statusCode out of range: {code}")
    return code


def format_response(resp):
    """(status, [(name, value)], body bytes) for what handle() returned."""
    status, headers, body = 200, None, None
    if resp is None:
        body = ""
    elif isinstance(resp, dict):
        if "statusCode" in resp:
            status = resp["statusCode"]
        body = resp.get("body", "")
        headers = resp.get("headers")
    elif isinstance(resp, tuple):
        # Flask's (body, status), (body, headers) and (body, status, headers).
        if len(resp) == 3:
            body, status, headers = resp
        elif len(resp) == 2:
            body = resp[0]
            if isinstance(resp[1], (dict, list, Headers)):
                headers = resp[1]
            else:
                status = resp[1]
        else:
            raise TypeError(f"handle() returned a tuple of {len(resp)}, Flask takes 2 or 3")
    else:
        body = resp
    code = parse_status(status)
    data, content_type = to_body(body)

    # werkzeug's Headers.update: a name the handler gives replaces the default.
    out = [("Content-Type", content_type)]
    replaced = set()
    for name, value in header_pairs(headers):
        if "\n" in name or "\r" in name or "\n" in value or "\r" in value:
            raise ValueError(f"header {name!r} holds a newline")
        key = name.lower()
        if key in ("content-length", "transfer-encoding", "connection"):
            continue
        if key not in replaced:
            out = [(n, v) for n, v in out if n.lower() != key]
            replaced.add(key)
        out.append((name, value))
    return code, out, data


# ----------------------------------------------------------------------------------------------
# The server


class BadRequest(Exception):
    pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fjord-python3-http"

    def version_string(self):
        return self.server_version

    handler_module = None
    health_path = ""

    def log_message(self, format, *args):
        pass  # the worker logs calls; stderr is for the function

    def __getattr__(self, name):
        # Every method goes to the handler (do_GET, do_POST, ... do_ANYTHING).
        if name.startswith("do_"):
            return self.dispatch
        raise AttributeError(name)

    def read_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        if te:
            if te.strip().lower() != "chunked":
                raise BadRequest(f"unsupported Transfer-Encoding {te!r}")
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise BadRequest("malformed chunked body") from None
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                chunk = self.rfile.read(size)
                if len(chunk) < size:
                    raise BadRequest("request body ended early")
                chunks.append(chunk)
                self.rfile.readline(65537)
            return b"".join(chunks)
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        if not length.strip().isdigit():
            raise BadRequest(f"invalid Content-Length {length!r}")
        n = int(length)
        body = self.rfile.read(n)
        if len(body) < n:
            raise BadRequest("request body ended early")
        return body

    def answer(self, code, headers, body):
        self.send_response(code)
        for name, value in headers:
            self.send_header(name, value)
        no_body = code in (204, 304) or 100 <= code < 200
        if not no_body:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not no_body and self.command != "HEAD":
            self.wfile.write(body)

    def plain(self, code, text):
        self.answer(code, [("Content-Type", "text/plain; charset=utf-8")], text.encode("utf-8"))

    def dispatch(self):
        target = self.path
        raw_path, _, raw_query = target.partition("?")
        raw_path = raw_path.split("#", 1)[0]
        if raw_path.startswith(("http://", "https://")):  # absolute-form target
            raw_path = "/" + raw_path.split("/", 3)[3] if raw_path.count("/") >= 3 else "/"
        path = unquote(raw_path, errors="replace")

        if self.command in ("GET", "HEAD") and (
            raw_path == "/_/health" or (self.health_path and raw_path == self.health_path)
        ):
            self.read_body()
            self.plain(200, "OK\n")
            return

        try:
            body = self.read_body()
        except BadRequest as e:
            self.close_connection = True
            self.plain(400, f"{e}\n")
            return

        event = Event(
            method=self.command,
            path=path,
            query=Args(parse_qsl(raw_query, keep_blank_values=True, errors="replace")),
            headers=Headers(self.headers.items()),
            body=body,
        )
        try:
            resp = self.handler_module.handle(event, Context())
            code, headers, data = format_response(resp)
        except Exception as e:  # noqa: BLE001 - anything the handler raises is a 500
            # Flask logs the traceback and answers 500; the shim also says why.
            sys.stderr.write(f"{SHIM}: {self.command} {target} failed:\n")
            traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()
            self.plain(500, "".join(traceback.format_exception_only(type(e), e)))
            return
        self.answer(code, headers, data)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def server_bind(self):
        # HTTPServer.server_bind looks up the FQDN of the address, which can stall on DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = host
        self.server_port = port


def setup_path(handler_dir):
    """FJORD_HANDLER_DIR and its .python (pip --target) folder first on sys.path, with .pth
    files in .python processed as site-packages' are; the shim's own folder off it."""
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or ".") != here]
    sys.path[:] = rest
    front = [handler_dir]
    deps = os.path.join(handler_dir, ".python")
    if os.path.isdir(deps):
        # `pip install --target .python` puts packages straight in; `--prefix .python` puts
        # them in lib/pythonX.Y/site-packages.
        prefixed = os.path.join(
            deps, "lib", f"python{sys.version_info.major}.{sys.version_info.minor}", "site-packages"
        )
        for d in (deps, prefixed):
            if os.path.isdir(d):
                before = list(sys.path)
                site.addsitedir(d)
                front += [p for p in sys.path if p not in before]
    sys.path[:] = front + [p for p in sys.path if p not in front]


def load_handler(handler_dir):
    file = os.path.join(handler_dir, "handler.py")
    if not os.path.isfile(file):
        die(f"no handler.py in {handler_dir} (the python3-http template imports function/handler.py)")
    setup_path(handler_dir)
    try:
        init = os.path.join(handler_dir, "__init__.py")
        if os.path.isfile(init):
            spec = importlib.util.spec_from_file_location(
                "function", init, submodule_search_locations=[handler_dir]
            )
        else:
            spec = importlib.machinery.ModuleSpec("function", None, is_package=True)
            spec.submodule_search_locations = [handler_dir]
        package = importlib.util.module_from_spec(spec)
        sys.modules["function"] = package
        if spec.loader is not None:
            spec.loader.exec_module(package)
        module = importlib.import_module("function.handler")
    except BaseException:  # noqa: BLE001 - SystemExit at import time is a load failure too
        sys.stderr.write(f"{SHIM}: handler.py failed to load:\n")
        traceback.print_exc(file=sys.stderr)
        die("giving up")
    sys.modules.setdefault("handler", module)
    if not callable(getattr(module, "handle", None)):
        die("handler.py must define handle(event, context)")
    return module


def main():
    # print() from a handler should reach the worker's log as it happens, not when a pipe
    # buffer fills (the template's container runs python unbuffered under the watchdog).
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True)
        except (AttributeError, ValueError):
            pass
    handler_dir = os.environ.get("FJORD_HANDLER_DIR")
    if not handler_dir:
        die("FJORD_HANDLER_DIR is not set (the folder holding handler.py)")
    handler_dir = os.path.abspath(handler_dir)
    port_text = os.environ.get("PORT", "")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        die(f"PORT must be a TCP port number, got {port_text!r}")
    port = int(port_text)

    Handler.handler_module = load_handler(handler_dir)
    Handler.health_path = os.environ.get("FJORD_HEALTH_PATH", "")

    try:
        server = Server(("127.0.0.1", port), Handler)
    except OSError as e:
        die(f"cannot listen on 127.0.0.1:{port}: {e}")

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    sys.stderr.write(f"{SHIM}: {os.path.join(handler_dir, 'handler.py')} listening on 127.0.0.1:{port}\n")
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
