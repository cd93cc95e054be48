// Fjord's shim for OpenFaaS's node18 / node20 templates (of-watchdog + express), without a
// container and without npm dependencies of its own: Node's standard library only.
//
// Fjord's `http` runtime starts one of these per worker with
//   PORT               listen on 127.0.0.1:$PORT
//   FJORD_HANDLER_DIR  the user's handler folder (handler.js, maybe node_modules/)
//   FJORD_HEALTH_PATH  an extra health path (optional); GET /_/health always answers
// and forwards each call to it as plain HTTP.
//
// It loads `handler.js`, which exports `async (event, context) => ...`, and reproduces what
// the template's express app does: the same FunctionEvent / FunctionContext, body parsing as
// its body-parser setup (text/* -> string, application/json -> object, urlencoded -> object,
// RAW_BODY=true -> Buffer, MAX_JSON_SIZE / MAX_RAW_SIZE limits), express's query parser, and
// express's res.set / res.status / res.send for the answer. Where it departs from the
// template it says so below ("Fjord:").

'use strict';

const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const path = require('path');
const zlib = require('zlib');
const { pathToFileURL } = require('url');

const SHIM = 'fjord node shim';

function die(message) {
    process.stderr.write(`${SHIM}: ${message}\n`);
    process.exit(1);
}

// ---------------------------------------------------------------------------------------------
// Configuration

const handlerDir = process.env.FJORD_HANDLER_DIR;
if (!handlerDir) {
    die('FJORD_HANDLER_DIR is not set (the folder holding handler.js)');
}
const port = Number(process.env.PORT);
if (!process.env.PORT || !Number.isInteger(port) || port < 1 || port > 65535) {
    die(`PORT must be a TCP port number, got ${JSON.stringify(process.env.PORT)}`);
}
const healthPath = process.env.FJORD_HEALTH_PATH || '';

const DEFAULT_MAX_SIZE = '100kb'; // body-parser's default, as in the template
const rawBody = process.env.RAW_BODY === 'true';
const rawLimit = parseBytes(process.env.MAX_RAW_SIZE || DEFAULT_MAX_SIZE, 'MAX_RAW_SIZE');
const jsonLimit = parseBytes(process.env.MAX_JSON_SIZE || DEFAULT_MAX_SIZE, 'MAX_JSON_SIZE');
const textLimit = parseBytes(DEFAULT_MAX_SIZE);
const formLimit = parseBytes(DEFAULT_MAX_SIZE);

// `bytes.parse` as body-parser uses it: a number of bytes, or "100kb", "1.5mb", ... (1024-based).
function parseBytes(value, name) {
    const m = /^\s*((?:-|\+)?(?:\d+(?:\.\d*)?|\.\d+))\s*(b|kb|mb|gb|tb|pb)?\s*$/i.exec(String(value));
    if (!m) {
        die(`${name}: cannot read ${JSON.stringify(value)} as a size (like 100kb, 5mb)`);
    }
    const unit = { b: 0, kb: 1, mb: 2, gb: 3, tb: 4, pb: 5 }[(m[2] || 'b').toLowerCase()];
    return Math.floor(parseFloat(m[1]) * Math.pow(1024, unit));
}

// ---------------------------------------------------------------------------------------------
// Loading the handler (before listening: health answers only once it loaded)

async function loadHandler() {
    const file = path.join(handlerDir, 'handler.js');
    if (!fs.existsSync(file)) {
        die(`no handler.js in ${handlerDir} (the node18/node20 templates load function/handler.js)`);
    }
    let exported;
    try {
        exported = require(file);
    } catch (err) {
        if (err && err.code === 'ERR_REQUIRE_ESM') {
            // Fjord: a handler written as an ES module ("type": "module") loads too.
            try {
                const ns = await import(pathToFileURL(file).href);
                exported = ns.default !== undefined ? ns.default : ns;
            } catch (err2) {
                die(`handler.js failed to load:\n${(err2 && err2.stack) || err2}`);
            }
        } else {
            die(`handler.js failed to load:\n${(err && err.stack) || err}`);
        }
    }
    if (typeof exported !== 'function' && exported && typeof exported.default === 'function') {
        exported = exported.default; // transpiled `export default`
    }
    if (typeof exported !== 'function') {
        die(`handler.js must export a function (module.exports = async (event, context) => ...), ` +
            `it exports ${exported === null ? 'null' : typeof exported}`);
    }
    return exported;
}

// ---------------------------------------------------------------------------------------------
// The template's classes, unchanged in behaviour

const isArray = (a) => (!!a) && (a.constructor === Array);
const isObject = (a) => (!!a) && (a.constructor === Object);

class FunctionEvent {
    constructor(req) {
        this.body = req.body;
        this.headers = req.headers;
        this.method = req.method;
        this.query = req.query;
        this.path = req.path;
    }
}

class FunctionContext {
    constructor(cb) {
        this.statusCode = 200;
        this.cb = cb;
        this.headerValues = {};
        this.cbCalled = 0;
    }

    status(statusCode) {
        if (!statusCode) {
            return this.statusCode;
        }
        this.statusCode = statusCode;
        return this;
    }

    headers(value) {
        if (!value) {
            return this.headerValues;
        }
        this.headerValues = value;
        return this;
    }

    succeed(value) {
        let err;
        this.cbCalled++;
        this.cb(err, value);
    }

    fail(value) {
        let message;
        if (this.status() == '200') {
            this.status(500);
        }
        this.cbCalled++;
        this.cb(value, message);
    }
}

// ---------------------------------------------------------------------------------------------
// Query strings: the `qs` parser express uses for req.query (and body-parser for extended
// urlencoded bodies): a=1&a=2 -> ['1','2'], a[]=1 -> ['1'], a[b]=1 -> {b:'1'}, a[0]=x -> ['x'].

function qsDecode(s) {
    const plain = s.replace(/\+/g, ' ');
    try {
        return decodeURIComponent(plain);
    } catch (_) {
        return plain;
    }
}

function qsParseKey(givenKey, value, depth, arrayLimit) {
    if (!givenKey) {
        return undefined;
    }
    const brackets = /(\[[^[\]]*])/;
    const child = /(\[[^[\]]*])/g;
    let segment = depth > 0 && brackets.exec(givenKey);
    const parent = segment ? givenKey.slice(0, segment.index) : givenKey;
    const keys = [];
    if (parent) {
        keys.push(parent);
    }
    let i = 0;
    while (depth > 0 && (segment = child.exec(givenKey)) !== null && i < depth) {
        i += 1;
        keys.push(segment[1]);
    }
    if (segment) {
        keys.push('[' + givenKey.slice(segment.index) + ']');
    }

    let leaf = value;
    for (let j = keys.length - 1; j >= 0; --j) {
        const root = keys[j];
        let obj;
        if (root === '[]') {
            obj = [].concat(leaf);
        } else {
            obj = {};
            const clean = root.charAt(0) === '[' && root.charAt(root.length - 1) === ']' ? root.slice(1, -1) : root;
            const index = parseInt(clean, 10);
            if (!isNaN(index) && root !== clean && String(index) === clean && index >= 0 && index <= arrayLimit) {
                obj = [];
                obj[index] = leaf;
            } else if (clean !== '__proto__') {
                obj[clean] = leaf;
            }
        }
        leaf = obj;
    }
    return leaf;
}

function qsMerge(target, source) {
    if (source === undefined) {
        return target;
    }
    if (typeof source !== 'object' || source === null) {
        if (Array.isArray(target)) {
            target.push(source);
        } else if (target && typeof target === 'object') {
            if (source !== '__proto__') {
                target[source] = true;
            }
        } else {
            return [target, source];
        }
        return target;
    }
    if (!target || typeof target !== 'object') {
        return [target].concat(source);
    }
    let mergeTarget = target;
    if (Array.isArray(target) && !Array.isArray(source)) {
        mergeTarget = {};
        target.forEach((v, i) => { if (v !== undefined) mergeTarget[i] = v; });
    }
    if (Array.isArray(target) && Array.isArray(source)) {
        source.forEach((item, i) => {
            if (Object.prototype.hasOwnProperty.call(target, i)) {
                const existing = target[i];
                if (existing && typeof existing === 'object' && item && typeof item === 'object') {
                    target[i] = qsMerge(existing, item);
                } else {
                    target.push(item);
                }
            } else {
                target[i] = item;
            }
        });
        return target;
    }
    for (const key of Object.keys(source)) {
        if (key === '__proto__') continue;
        mergeTarget[key] = Object.prototype.hasOwnProperty.call(mergeTarget, key)
            ? qsMerge(mergeTarget[key], source[key])
            : source[key];
    }
    return mergeTarget;
}

function qsCompact(value) {
    if (Array.isArray(value)) {
        return value.filter((v) => v !== undefined).map(qsCompact);
    }
    if (value && typeof value === 'object') {
        for (const key of Object.keys(value)) {
            value[key] = qsCompact(value[key]);
        }
    }
    return value;
}

// Throws a 413 when `tooMany` and there are more than parameterLimit pairs (body-parser's
// behaviour for forms); otherwise drops the extra pairs (qs's behaviour for req.query).
function parseQs(str, { depth = 5, arrayLimit = 20, parameterLimit = 1000, tooMany = false } = {}) {
    const out = {};
    if (!str) {
        return out;
    }
    let parts = str.split('&');
    if (parts.length > parameterLimit) {
        if (tooMany) {
            throw httpError(413, 'too many parameters');
        }
        parts = parts.slice(0, parameterLimit);
    }
    const flat = new Map();
    for (const part of parts) {
        if (!part) continue;
        const bracketEquals = part.indexOf(']=');
        const pos = bracketEquals === -1 ? part.indexOf('=') : bracketEquals + 1;
        const key = qsDecode(pos === -1 ? part : part.slice(0, pos));
        const val = pos === -1 ? '' : qsDecode(part.slice(pos + 1));
        flat.set(key, flat.has(key) ? [].concat(flat.get(key), val) : val);
    }
    let result = out;
    for (const [key, val] of flat) {
        result = qsMerge(result, qsParseKey(key, val, depth, arrayLimit));
    }
    return qsCompact(result);
}

// ---------------------------------------------------------------------------------------------
// Request bodies, as the template's body-parser middleware reads them

function httpError(status, message) {
    const err = new Error(message);
    err.status = status;
    return err;
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+\/[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

// {type, charset} of a Content-Type header, or null when it cannot be read.
function parseContentType(header) {
    if (typeof header !== 'string') {
        return null;
    }
    const [type, ...params] = header.split(';');
    const t = type.trim().toLowerCase();
    if (!TOKEN.test(t)) {
        return null;
    }
    let charset;
    for (const p of params) {
        const eq = p.indexOf('=');
        if (eq !== -1 && p.slice(0, eq).trim().toLowerCase() === 'charset') {
            charset = p.slice(eq + 1).trim().replace(/^"(.*)"$/, '$1').toLowerCase();
        }
    }
    return { type: t, charset };
}

function readAll(req, limit, declared) {
    return new Promise((resolve, reject) => {
        if (limit !== Infinity && declared !== null && declared > limit) {
            req.resume();
            reject(httpError(413, 'request entity too large'));
            return;
        }
        const chunks = [];
        let size = 0;
        let failed = false;
        req.on('data', (chunk) => {
            if (failed) return;
            size += chunk.length;
            if (size > limit) {
                failed = true;
                chunks.length = 0;
                reject(httpError(413, 'request entity too large'));
                return;
            }
            chunks.push(chunk);
        });
        req.on('end', () => { if (!failed) resolve(Buffer.concat(chunks)); });
        req.on('aborted', () => { failed = true; reject(httpError(400, 'request aborted')); });
        req.on('error', (err) => { failed = true; reject(httpError(400, String(err.message || err))); });
    });
}

function inflate(buf, encoding, limit) {
    const fn = encoding === 'gzip' ? zlib.gunzip : zlib.inflate;
    const opts = limit === Infinity ? {} : { maxOutputLength: limit + 1 };
    return new Promise((resolve, reject) => {
        fn(buf, opts, (err, out) => {
            if (err) {
                reject(err.code === 'ERR_BUFFER_TOO_LARGE'
                    ? httpError(413, 'request entity too large')
                    : httpError(400, `invalid ${encoding} body: ${err.message}`));
            } else if (out.length > limit) {
                reject(httpError(413, 'request entity too large'));
            } else {
                resolve(out);
            }
        });
    });
}

// The body bytes of a request that body-parser would read, decompressed as it does.
async function readParsedBody(req, limit) {
    const encoding = String(req.headers['content-encoding'] || 'identity').toLowerCase();
    if (encoding !== 'identity' && encoding !== 'gzip' && encoding !== 'deflate') {
        req.resume();
        throw httpError(415, `unsupported content encoding "${encoding}"`);
    }
    const length = req.headers['content-length'];
    const declared = length !== undefined && /^\d+$/.test(length) ? Number(length) : null;
    const buf = await readAll(req, limit, encoding === 'identity' ? declared : null);
    return encoding === 'identity' ? buf : inflate(buf, encoding, limit);
}

function decodeText(buf, charset) {
    let decoder;
    try {
        decoder = new TextDecoder(charset || 'utf-8');
    } catch (_) {
        throw httpError(415, `unsupported charset "${String(charset).toUpperCase()}"`);
    }
    return decoder.decode(buf);
}

async function readBody(req) {
    // body-parser leaves `{}` when a request has no body at all (no Content-Length, no
    // Transfer-Encoding), whatever its type.
    const hasBody = req.headers['transfer-encoding'] !== undefined || !isNaN(req.headers['content-length']);
    if (!hasBody) {
        req.resume();
        return {};
    }
    const ct = parseContentType(req.headers['content-type']);

    if (rawBody) {
        return readParsedBody(req, rawLimit);
    }
    if (ct && ct.type.startsWith('text/')) {
        return decodeText(await readParsedBody(req, textLimit), ct.charset);
    }
    if (ct && ct.type === 'application/json') {
        const charset = ct.charset || 'utf-8';
        if (!charset.startsWith('utf-')) {
            req.resume();
            throw httpError(415, `unsupported charset "${charset.toUpperCase()}"`);
        }
        const text = decodeText(await readParsedBody(req, jsonLimit), charset);
        if (text.length === 0) {
            return {};
        }
        // body-parser's `strict` mode: only objects and arrays.
        const first = /^[\x20\x09\x0a\x0d]*([^\x20\x09\x0a\x0d])/.exec(text);
        if (first && first[1] !== '{' && first[1] !== '[') {
            throw httpError(400, `Unexpected token ${first[1]} in JSON at position ${first.index + first[0].length - 1}`);
        }
        try {
            return JSON.parse(text);
        } catch (err) {
            throw httpError(400, err.message);
        }
    }
    if (ct && ct.type === 'application/x-www-form-urlencoded') {
        const charset = ct.charset || 'utf-8';
        if (charset !== 'utf-8') {
            req.resume();
            throw httpError(415, `unsupported charset "${charset.toUpperCase()}"`);
        }
        const text = decodeText(await readParsedBody(req, formLimit), charset);
        return parseQs(text, { depth: 32, arrayLimit: 100, parameterLimit: 1000, tooMany: true });
    }
    // Fjord: the template leaves `{}` for any other type (body-parser did not read it); the
    // shim hands over the bytes as a Buffer, exactly as received (no limit, no inflating).
    return readAll(req, Infinity, null);
}

// ---------------------------------------------------------------------------------------------
// Answers, as express's res.set(obj).status(code).send(value) writes them

function charsetFor(type) {
    // mime.charsets.lookup, which res.set uses for Content-Type.
    return /^text\/|^application\/(javascript|json)/i.test(type) ? 'utf-8' : null;
}

function setCharset(type, charset) {
    if (/;\s*charset\s*=/i.test(type)) {
        return type.replace(/;\s*charset\s*=\s*("[^"]*"|[^;]*)/i, `; charset=${charset}`);
    }
    return `${type}; charset=${charset}`;
}

// express res.set(field, value)
function setHeader(res, field, val) {
    let value = Array.isArray(val) ? val.map(String) : String(val);
    if (field.toLowerCase() === 'content-type') {
        if (Array.isArray(value)) {
            throw new TypeError('Content-Type cannot be set to an Array');
        }
        if (!/;\s*charset\s*=/i.test(value)) {
            const charset = charsetFor(value.split(';')[0]);
            if (charset) value += `; charset=${charset}`;
        }
    }
    res.setHeader(field, value);
}

function weakEtag(buf) {
    if (buf.length === 0) {
        return 'W/"0-2jmj7l5rSw0yVb/vlWAYkK/YBwk"';
    }
    const hash = crypto.createHash('sha1').update(buf).digest('base64').substring(0, 27);
    return `W/"${buf.length.toString(16)}-${hash}"`;
}

// express's req.fresh (the `fresh` module) for GET/HEAD answers with a 2xx or 304.
function isFresh(req, res) {
    if (req.method !== 'GET' && req.method !== 'HEAD') return false;
    if (!((res.statusCode >= 200 && res.statusCode < 300) || res.statusCode === 304)) return false;
    const modifiedSince = req.headers['if-modified-since'];
    const noneMatch = req.headers['if-none-match'];
    if (!modifiedSince && !noneMatch) return false;
    const cc = req.headers['cache-control'];
    if (cc && /(?:^|,)\s*?no-cache\s*?(?:,|$)/.test(cc)) return false;
    if (noneMatch && noneMatch !== '*') {
        const etag = res.getHeader('etag');
        if (!etag) return false;
        const match = noneMatch.split(',').map((s) => s.trim())
            .some((m) => m === etag || m === `W/${etag}` || `W/${m}` === etag);
        if (!match) return false;
    }
    if (modifiedSince) {
        const lastModified = res.getHeader('last-modified');
        if (!lastModified || !(Date.parse(lastModified) <= Date.parse(modifiedSince))) return false;
    }
    return true;
}

// express res.status(code).send(chunk), after res.set(headers). `json` marks a value the
// template JSON.stringify'd itself.
function send(req, res, status, headers, chunk, json) {
    for (const key in headers) {
        setHeader(res, key, headers[key]);
    }
    const code = Number(status) | 0;
    if (code < 100 || code > 999) {
        throw new RangeError(`Invalid status code: ${status}`);
    }
    res.statusCode = code;

    let body;
    const type = res.getHeader('content-type');
    if (typeof chunk === 'string') {
        if (type === undefined) {
            // Fjord: the template sends its JSON.stringify'd objects as text/html (express's
            // default for strings); the shim calls them what they are.
            res.setHeader('Content-Type', json ? 'application/json; charset=utf-8' : 'text/html; charset=utf-8');
        } else {
            res.setHeader('Content-Type', setCharset(String(type), 'utf-8'));
        }
        body = Buffer.from(chunk, 'utf8');
    } else if (chunk === null) {
        body = Buffer.alloc(0);
    } else if (chunk === undefined) {
        body = undefined;
    } else if (Buffer.isBuffer(chunk) || chunk instanceof Uint8Array) {
        if (type === undefined) {
            res.setHeader('Content-Type', 'application/octet-stream');
        }
        body = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    } else {
        // express res.json for anything else (class instances, numbers, booleans).
        // Fjord: express 4 would take a lone number as a status code (deprecated).
        if (type === undefined) {
            res.setHeader('Content-Type', 'application/json; charset=utf-8');
        }
        const text = JSON.stringify(chunk);
        body = Buffer.from(text === undefined ? '' : text, 'utf8');
    }

    if (body !== undefined) {
        res.setHeader('Content-Length', body.length);
        if (!res.hasHeader('etag')) {
            res.setHeader('ETag', weakEtag(body));
        }
    }
    if (isFresh(req, res)) {
        res.statusCode = 304;
    }
    if (res.statusCode === 204 || res.statusCode === 304) {
        res.removeHeader('Content-Type');
        res.removeHeader('Content-Length');
        res.removeHeader('Transfer-Encoding');
        body = undefined;
    } else if (res.statusCode === 205) {
        res.setHeader('Content-Length', '0');
        res.removeHeader('Transfer-Encoding');
        body = undefined;
    }
    if (body === undefined && !res.hasHeader('content-length') && res.statusCode !== 204 && res.statusCode !== 304) {
        res.setHeader('Content-Length', '0');
    }
    if (req.method === 'HEAD' || body === undefined) {
        res.end();
    } else {
        res.end(body);
    }
}

// A plain-text answer from the shim itself (bad request bodies, internal failures).
function sendPlain(res, status, text) {
    if (res.headersSent) {
        res.destroy();
        return;
    }
    for (const name of res.getHeaderNames()) {
        res.removeHeader(name);
    }
    const body = Buffer.from(text.endsWith('\n') ? text : `${text}\n`, 'utf8');
    res.writeHead(status, {
        'Content-Type': 'text/plain; charset=utf-8',
        'Content-Length': body.length,
    });
    res.end(body);
}

// ---------------------------------------------------------------------------------------------
// One call

async function serve(handler, req, res) {
    const url = req.url || '/';
    const q = url.indexOf('?');
    const pathname = q === -1 ? url : url.slice(0, q);
    const search = q === -1 ? '' : url.slice(q + 1);

    if ((req.method === 'GET' || req.method === 'HEAD') &&
        (pathname === '/_/health' || (healthPath && pathname === healthPath))) {
        req.resume();
        res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': 3 });
        res.end(req.method === 'HEAD' ? undefined : 'OK\n');
        return;
    }

    // The template's addDefaultContentType middleware.
    if (!req.headers['content-type']) {
        req.headers['content-type'] = 'text/plain';
    }
    req.path = pathname;
    req.query = parseQs(search);
    try {
        req.body = await readBody(req);
    } catch (err) {
        if (err && err.status) {
            // express's error handler for body-parser's errors (as text, not an HTML page).
            res.setHeader('Connection', 'close');
            sendPlain(res, err.status, err.message);
            return;
        }
        throw err;
    }

    let answered = false;
    const cb = (err, functionResult) => {
        if (answered) {
            return; // Fjord: a second answer is ignored (express would throw "headers sent").
        }
        answered = true;
        try {
            if (err) {
                console.error(err);
                send(req, res, fnContext.status(), {}, err.toString ? err.toString() : err, false);
            } else if (isArray(functionResult) || isObject(functionResult)) {
                send(req, res, fnContext.status(), fnContext.headers(), JSON.stringify(functionResult), true);
            } else {
                send(req, res, fnContext.status(), fnContext.headers(), functionResult, false);
            }
        } catch (e) {
            console.error(e);
            sendPlain(res, 500, String((e && e.message) || e));
        }
    };

    const fnEvent = new FunctionEvent(req);
    const fnContext = new FunctionContext(cb);

    // Fjord: the template answers a rejected promise with context.status() (so 200 unless the
    // handler set one) and crashes on a synchronous throw; the shim answers both as fail()
    // does: 500 unless the handler set another status.
    const failed = (e) => {
        if (fnContext.status() == '200') {
            fnContext.status(500);
        }
        cb(e || new Error(`handler failed with ${String(e)}`));
    };
    let result;
    try {
        result = handler(fnEvent, fnContext, cb);
    } catch (e) {
        failed(e);
        return;
    }
    Promise.resolve(result).then((value) => {
        if (!fnContext.cbCalled) {
            fnContext.succeed(value);
        }
    }, failed);
}

// ---------------------------------------------------------------------------------------------

async function main() {
    const handler = await loadHandler();

    const server = http.createServer((req, res) => {
        serve(handler, req, res).catch((err) => {
            console.error(err);
            sendPlain(res, 500, String((err && err.message) || err));
        });
    });
    // One local client (the worker) that keeps connections pooled: don't close idle ones
    // under it after Node's default 5s.
    server.keepAliveTimeout = 10 * 60 * 1000;
    server.headersTimeout = 10 * 60 * 1000 + 1000;
    server.requestTimeout = 0;

    server.on('error', (err) => die(`cannot listen on 127.0.0.1:${port}: ${err.message}`));
    server.listen(port, '127.0.0.1', () => {
        process.stderr.write(`${SHIM}: ${path.join(handlerDir, 'handler.js')} listening on 127.0.0.1:${port}\n`);
    });

    // Fjord: a stray rejected promise in one call must not take the other calls down with it.
    process.on('unhandledRejection', (reason) => {
        console.error(`${SHIM}: unhandled promise rejection:`, reason);
    });

    const stop = () => {
        server.close(() => process.exit(0));
        server.closeIdleConnections();
        setTimeout(() => process.exit(0), 10000).unref();
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
}

main().catch((err) => die((err && err.stack) || String(err)));
