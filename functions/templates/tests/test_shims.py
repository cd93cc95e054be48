#!/usr/bin/env python3
"""Standalone tests of Fjord's OpenFaaS template shims (functions/templates/): each shim is
started as the `http` runtime starts it (PORT, FJORD_HANDLER_DIR, FJORD_HEALTH_PATH) with the
example handlers next to this file, and called over HTTP. No cargo, no network, stdlib only:

    python3 functions/templates/tests/test_shims.py [-v]

The node shim's tests are skipped when `node` is not on PATH.
"""

import concurrent.futures
import http.client
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

# Leave no __pycache__ behind in the shim and handler folders (this process and the shims).
sys.dont_write_bytecode = True
os.environ["PYTHONDONTWRITEBYTECODE"] = "1"

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATES = os.path.dirname(HERE)
NODE_SHIM = os.path.join(TEMPLATES, "node", "index.js")
PYTHON_SHIM = os.path.join(TEMPLATES, "python3-http", "index.py")
NODE_HANDLER = os.path.join(HERE, "node-handler")
PYTHON_HANDLER = os.path.join(HERE, "python-handler")
NODE = shutil.which("node")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Shim:
    """One running shim process."""

    def __init__(self, argv, handler_dir, env=None):
        self.port = free_port()
        full_env = dict(os.environ)
        full_env.update(
            PORT=str(self.port),
            FJORD_HANDLER_DIR=handler_dir,
            FJORD_HEALTH_PATH="/custom-health",
            secret_mount_path=os.path.join(handler_dir, ".secrets"),
            HOSTNAME="fjord-test-host",
        )
        full_env.update(env or {})
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            argv, env=full_env, stdout=subprocess.DEVNULL, stderr=self.stderr
        )
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"shim exited with {self.proc.returncode}: {self.errors()}")
            try:
                status, _, _ = self.request("GET", "/_/health")
                if status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"shim not healthy within 15s: {self.errors()}")
            time.sleep(0.05)

    def errors(self):
        self.stderr.seek(0)
        return self.stderr.read().decode("utf-8", "replace")

    def connection(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def request(self, method, path, body=None, headers=None, conn=None):
        own = conn is None
        conn = conn or self.connection()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            if own:
                conn.close()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()


def run_to_exit(argv, handler_dir, timeout=15):
    """Start a shim expected to fail at startup: (exit code, stderr)."""
    env = dict(os.environ, PORT=str(free_port()), FJORD_HANDLER_DIR=handler_dir)
    p = subprocess.run(argv, env=env, capture_output=True, timeout=timeout)
    return p.returncode, p.stderr.decode("utf-8", "replace")


class CommonShimTests:
    """Behaviour both shims share; subclasses set ARGV, HANDLER and NAME."""

    ARGV = None
    HANDLER = None
    NAME = None
    shim = None

    @classmethod
    def setUpClass(cls):
        cls.shim = Shim(cls.ARGV, cls.HANDLER)

    @classmethod
    def tearDownClass(cls):
        cls.shim.stop()

    def json_of(self, data):
        return json.loads(data.decode("utf-8"))

    def test_health(self):
        for path in ("/_/health", "/custom-health"):
            status, _, body = self.shim.request("GET", path)
            self.assertEqual(status, 200, path)
            self.assertEqual(body, b"OK\n")

    def test_json_echo_custom_status_and_header(self):
        payload = {"amount": 12.5, "currency": "EUR", "items": [1, 2]}
        status, headers, body = self.shim.request(
            "POST",
            "/orders/42?a=1&b=two",
            body=json.dumps(payload),
            headers={"Content-Type": "application/json", "X-Custom": "yes"},
        )
        self.assertEqual(status, 201, body)
        self.assertEqual(headers.get("x-fjord-example"), self.NAME)
        self.assertTrue(headers["content-type"].startswith("application/json"), headers)
        self.assertEqual(int(headers["content-length"]), len(body))
        echo = self.json_of(body)
        self.assertEqual(echo["method"], "POST")
        self.assertEqual(echo["path"], "/orders/42")
        self.assertEqual(echo["query"], {"a": "1", "b": "two"})
        self.assertEqual(echo["body"], payload)
        lower = {k.lower(): v for k, v in echo["headers"].items()}
        self.assertEqual(lower["x-custom"], "yes")
        return echo

    def test_text_body(self):
        status, headers, body = self.shim.request(
            "POST", "/text", body="fjord", headers={"Content-Type": "text/plain"}
        )
        self.assertEqual(status, 200, body)
        self.assertEqual(body, b"hello fjord")
        self.assertTrue(headers["content-type"].startswith("text/plain"), headers)

    def test_thrown_error_is_500(self):
        status, _, body = self.shim.request("GET", "/fail")
        self.assertEqual(status, 500)
        self.assertIn(b"handler failed on purpose", body)
        # ... logged to stderr, and the shim keeps serving.
        deadline = time.monotonic() + 5
        while "handler failed on purpose" not in self.shim.errors() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertIn("handler failed on purpose", self.shim.errors())
        status, _, _ = self.shim.request("GET", "/_/health")
        self.assertEqual(status, 200)

    def test_keep_alive(self):
        conn = self.shim.connection()
        try:
            for i in range(5):
                status, _, body = self.shim.request(
                    "POST", f"/ka/{i}", body=json.dumps({"i": i}),
                    headers={"Content-Type": "application/json"}, conn=conn,
                )
                self.assertEqual(status, 201)
                self.assertEqual(self.json_of(body)["body"], {"i": i})
        finally:
            conn.close()

    def test_concurrent_requests(self):
        n, ms = 6, 500
        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(n) as pool:
            results = list(pool.map(lambda i: self.shim.request("GET", f"/sleep?ms={ms}&i={i}"), range(n)))
        elapsed = time.monotonic() - start
        self.assertEqual([r[0] for r in results], [201] * n)
        self.assertEqual(sorted(self.json_of(r[2])["query"]["i"] for r in results),
                         [str(i) for i in range(n)])
        self.assertLess(elapsed, n * ms / 1000 / 2, "calls ran one after another")

    def test_head(self):
        status, headers, body = self.shim.request("HEAD", "/head")
        self.assertEqual(status, 201)
        self.assertEqual(body, b"")


@unittest.skipUnless(NODE, "node is not on PATH")
class NodeShimTests(CommonShimTests, unittest.TestCase):
    ARGV = [NODE or "node", NODE_SHIM]
    HANDLER = NODE_HANDLER
    NAME = "node"

    def test_json_echo_custom_status_and_header(self):
        echo = super().test_json_echo_custom_status_and_header()
        self.assertEqual(echo["headers"]["x-custom"], "yes")  # Node lower-cases names
        self.assertEqual(echo["bodyType"], "object")

    def test_query_object(self):
        status, _, body = self.shim.request("GET", "/q?a=1&a=2&b[c]=3&d[]=x&e=hello%20world&f+g=h+i&flag")
        self.assertEqual(status, 201)
        self.assertEqual(
            self.json_of(body)["query"],
            {"a": ["1", "2"], "b": {"c": "3"}, "d": ["x"], "e": "hello world", "f g": "h i", "flag": ""},
        )

    def test_invalid_json_is_400(self):
        status, _, body = self.shim.request(
            "POST", "/x", body="{not json", headers={"Content-Type": "application/json"}
        )
        self.assertEqual(status, 400, body)
        status, _, body = self.shim.request(
            "POST", "/x", body='"a string"', headers={"Content-Type": "application/json"}
        )
        self.assertEqual(status, 400, body)  # body-parser's strict mode

    def test_no_content_type_is_text(self):
        status, _, body = self.shim.request("POST", "/x", body="plain", headers={})
        echo = self.json_of(body)
        self.assertEqual((echo["body"], echo["bodyType"]), ("plain", "string"))
        self.assertEqual(echo["headers"]["content-type"], "text/plain")

    def test_no_body_is_empty_object(self):
        status, _, body = self.shim.request("GET", "/x")
        echo = self.json_of(body)
        self.assertEqual((echo["body"], echo["bodyType"]), ({}, "object"))

    def test_other_types_are_buffers(self):
        status, _, body = self.shim.request(
            "POST", "/x", body=b"\x00\x01\xff", headers={"Content-Type": "application/octet-stream"}
        )
        echo = self.json_of(body)
        self.assertEqual((echo["body"], echo["bodyType"]), ("AAH/", "buffer"))

    def test_urlencoded_form(self):
        status, _, body = self.shim.request(
            "POST", "/x", body="name=Ada+L&tags[]=a&tags[]=b",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        self.assertEqual(self.json_of(body)["body"], {"name": "Ada L", "tags": ["a", "b"]})

    def test_context_fail_with_status(self):
        status, headers, body = self.shim.request("GET", "/bad")
        self.assertEqual(status, 400)
        self.assertEqual(body, b"bad input on purpose")

    def test_json_limit(self):
        big = json.dumps({"x": "a" * (101 * 1024)})
        status, _, _ = self.shim.request("POST", "/x", body=big, headers={"Content-Type": "application/json"})
        self.assertEqual(status, 413)

    def test_gzip_json(self):
        import gzip
        status, _, body = self.shim.request(
            "POST", "/x", body=gzip.compress(b'{"z": 1}'),
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
        self.assertEqual(self.json_of(body)["body"], {"z": 1})

    def test_etag_and_304(self):
        status, headers, _ = self.shim.request("GET", "/text")  # same body every time
        etag = headers["etag"]
        self.assertTrue(etag.startswith('W/"'))
        status, _, body = self.shim.request("GET", "/text", headers={"If-None-Match": etag})
        self.assertEqual((status, body), (304, b""))


class PythonShimTests(CommonShimTests, unittest.TestCase):
    ARGV = [sys.executable, PYTHON_SHIM]
    HANDLER = PYTHON_HANDLER
    NAME = "python"

    def test_json_echo_custom_status_and_header(self):
        echo = super().test_json_echo_custom_status_and_header()
        self.assertEqual(echo["headers"]["X-Custom"], "yes")  # werkzeug Title-Cases names
        self.assertEqual(echo["hostname"], "fjord-test-host")

    def test_query_first_value(self):
        status, _, body = self.shim.request("GET", "/q?a=1&a=2&e=hello%20world&f+g=h+i&flag")
        self.assertEqual(self.json_of(body)["query"], {"a": "1", "e": "hello world", "f g": "h i", "flag": ""})

    def test_path_is_decoded(self):
        status, _, body = self.shim.request("GET", "/a%20b/c")
        self.assertEqual(self.json_of(body)["path"], "/a b/c")

    def test_chunked_body(self):
        conn = self.shim.connection()
        try:
            conn.putrequest("POST", "/chunked")
            conn.putheader("Transfer-Encoding", "chunked")
            conn.putheader("Content-Type", "text/plain")
            conn.endheaders()
            for part in (b"hello ", b"chunked ", b"world"):
                conn.send(b"%x\r\n%s\r\n" % (len(part), part))
            conn.send(b"0\r\n\r\n")
            resp = conn.getresponse()
            self.assertEqual(resp.status, 201)
            self.assertEqual(self.json_of(resp.read())["body"], "hello chunked world")
        finally:
            conn.close()


def load_python_shim():
    spec = importlib.util.spec_from_file_location("fjord_python_shim", PYTHON_SHIM)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class PythonFormatResponseTests(unittest.TestCase):
    """format_response without a server."""

    @classmethod
    def setUpClass(cls):
        cls.shim = load_python_shim()

    def test_shapes(self):
        fr = self.shim.format_response
        self.assertEqual(fr(None), (200, [("Content-Type", "text/html; charset=utf-8")], b""))
        self.assertEqual(fr("hi"), (200, [("Content-Type", "text/html; charset=utf-8")], b"hi"))
        self.assertEqual(fr(b"\x00"), (200, [("Content-Type", "text/html; charset=utf-8")], b"\x00"))
        self.assertEqual(fr({"body": {"b": 1, "a": 2}}),
                         (200, [("Content-Type", "application/json")], b'{"a":2,"b":1}\n'))
        self.assertEqual(fr({"statusCode": 202, "body": [1, 2]})[::2], (202, b"[1,2]\n"))
        code, headers, _ = fr({"statusCode": "404", "body": "x",
                               "headers": {"content-type": "text/csv", "X-A": ["1", "2"]}})
        self.assertEqual(code, 404)
        self.assertEqual(headers, [("content-type", "text/csv"), ("X-A", "1"), ("X-A", "2")])
        self.assertEqual(fr(("made", 201))[::2], (201, b"made"))
        self.assertEqual(fr({"statusCode": 204})[0], 204)
        with self.assertRaises(TypeError):
            fr({"statusCode": "nope"})

    def test_headers(self):
        h = self.shim.Headers([("content-type", "a"), ("x-many", "1"), ("X-Many", "2")])
        self.assertEqual(h["Content-Type"], "a")
        self.assertEqual(h.get("CONTENT-TYPE"), "a")
        self.assertEqual(h.get("missing", "d"), "d")
        self.assertIn("x-MANY", h)
        self.assertEqual(dict(h), {"Content-Type": "a", "X-Many": "1, 2"})


class StartupTests(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="fjord-shim-test-")

    def tearDown(self):
        shutil.rmtree(self.dir)

    def write(self, rel, text):
        path = os.path.join(self.dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)

    def test_python_missing_handler(self):
        code, err = run_to_exit([sys.executable, PYTHON_SHIM], self.dir)
        self.assertNotEqual(code, 0)
        self.assertIn("no handler.py", err)

    def test_python_handler_raises_at_import(self):
        self.write("handler.py", "raise ImportError('no such thing on purpose')\n")
        code, err = run_to_exit([sys.executable, PYTHON_SHIM], self.dir)
        self.assertNotEqual(code, 0)
        self.assertIn("no such thing on purpose", err)

    def test_python_deps_and_relative_imports(self):
        self.write(".python/fjorddep/__init__.py", "VALUE = 'from .python'\n")
        self.write("helper.py", "NAME = 'helper'\n")
        self.write(
            "handler.py",
            "import fjorddep\nfrom . import helper\nimport helper as plain_helper\n"
            "def handle(event, context):\n"
            "    return {'body': {'dep': fjorddep.VALUE, 'rel': helper.NAME, 'abs': plain_helper.NAME}}\n",
        )
        shim = Shim([sys.executable, PYTHON_SHIM], self.dir)
        try:
            status, _, body = shim.request("GET", "/")
            self.assertEqual(status, 200, shim.errors())
            self.assertEqual(json.loads(body), {"dep": "from .python", "rel": "helper", "abs": "helper"})
        finally:
            shim.stop()

    @unittest.skipUnless(NODE, "node is not on PATH")
    def test_node_missing_handler(self):
        code, err = run_to_exit([NODE, NODE_SHIM], self.dir)
        self.assertNotEqual(code, 0)
        self.assertIn("no handler.js", err)

    @unittest.skipUnless(NODE, "node is not on PATH")
    def test_node_handler_throws_at_load(self):
        self.write("handler.js", "throw new Error('broken on purpose');\n")
        code, err = run_to_exit([NODE, NODE_SHIM], self.dir)
        self.assertNotEqual(code, 0)
        self.assertIn("broken on purpose", err)

    @unittest.skipUnless(NODE, "node is not on PATH")
    def test_node_not_a_function(self):
        self.write("handler.js", "module.exports = { nope: 1 };\n")
        code, err = run_to_exit([NODE, NODE_SHIM], self.dir)
        self.assertNotEqual(code, 0)
        self.assertIn("must export a function", err)

    @unittest.skipUnless(NODE, "node is not on PATH")
    def test_node_modules_and_plain_return(self):
        self.write("node_modules/fjorddep/index.js", "module.exports = 'from node_modules';\n")
        self.write(
            "handler.js",
            "const dep = require('fjorddep');\n"
            "module.exports = async (event, context) => ({ dep, status: context.status() });\n",
        )
        shim = Shim([NODE, NODE_SHIM], self.dir)
        try:
            status, headers, body = shim.request("GET", "/")
            self.assertEqual(status, 200, shim.errors())
            self.assertEqual(json.loads(body), {"dep": "from node_modules", "status": 200})
            self.assertTrue(headers["content-type"].startswith("application/json"))
        finally:
            shim.stop()

    @unittest.skipUnless(NODE, "node is not on PATH")
    def test_node_sync_throw_and_string_fail(self):
        self.write(
            "handler.js",
            "module.exports = (event, context) => {\n"
            "  if (event.path === '/sync') throw new Error('sync boom');\n"
            "  if (event.path === '/reject') return Promise.reject('plain rejection');\n"
            "  return 'a string';\n"
            "};\n",
        )
        shim = Shim([NODE, NODE_SHIM], self.dir)
        try:
            self.assertEqual(shim.request("GET", "/sync")[::2], (500, b"Error: sync boom"))
            self.assertEqual(shim.request("GET", "/reject")[::2], (500, b"plain rejection"))
            status, headers, body = shim.request("GET", "/")
            self.assertEqual((status, body), (200, b"a string"))
            self.assertEqual(headers["content-type"], "text/html; charset=utf-8")  # express
        finally:
            shim.stop()


EXAMPLES = os.path.join(os.path.dirname(TEMPLATES), "examples")


class ExampleTests(unittest.TestCase):
    """The README's example functions (functions/examples/) run under the shims."""

    @unittest.skipUnless(NODE, "node is not on PATH")
    def test_payment_processor(self):
        shim = Shim([NODE, NODE_SHIM], os.path.join(EXAMPLES, "payment-processor"))
        try:
            status, headers, body = shim.request(
                "POST", "/", body='{"amount": 12.5, "currency": "eur"}',
                headers={"Content-Type": "application/json"},
            )
            self.assertEqual(status, 201, body)
            self.assertTrue(headers["content-type"].startswith("application/json"))
            receipt = json.loads(body)
            self.assertEqual((receipt["amount"], receipt["currency"], receipt["status"]), (12.5, "EUR", "accepted"))
            self.assertTrue(receipt["id"].startswith("rcpt_"))
            for bad in ('{"amount": -1, "currency": "EUR"}', '{"amount": 1, "currency": "XXX"}', "[]"):
                status, _, body = shim.request("POST", "/", body=bad, headers={"Content-Type": "application/json"})
                self.assertEqual(status, 400, bad)
                self.assertIn("error", json.loads(body))
            status, _, _ = shim.request("POST", "/", body="12 EUR", headers={"Content-Type": "text/plain"})
            self.assertEqual(status, 400)
        finally:
            shim.stop()

    def test_thumbnail_webhook(self):
        shim = Shim([sys.executable, PYTHON_SHIM], os.path.join(EXAMPLES, "thumbnail-webhook"))
        try:
            status, headers, body = shim.request(
                "POST", "/uploads?bucket=photos", body='{"key": "cat.jpg", "size": 3}',
                headers={"Content-Type": "application/json"},
            )
            self.assertEqual(status, 200, body)
            self.assertEqual(headers["content-type"], "application/json")
            summary = json.loads(body)
            self.assertEqual(summary["object"], "cat.jpg")
            self.assertEqual(summary["query"], {"bucket": "photos"})
            self.assertEqual(summary["fields"], ["key", "size"])
            self.assertEqual(summary["bytes"], len('{"key": "cat.jpg", "size": 3}'))
        finally:
            shim.stop()

    def test_wordcount(self):
        p = subprocess.run([os.path.join(EXAMPLES, "wordcount", "handler.sh")],
                           input=b"the quick brown fox\njumps\n", capture_output=True, timeout=10)
        self.assertEqual((p.returncode, p.stdout.strip()), (0, b"5"))


if __name__ == "__main__":
    unittest.main()
