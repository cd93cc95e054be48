// Example handler for the node shim (OpenFaaS node18/node20 template style), used by
// functions/templates/tests/test_shims.py and Fjord's end-to-end tests.
//
//   GET|POST /anything  201, X-Fjord-Example: node, JSON echo of the request
//   /text               200, text/plain "hello <text body>" (via context.succeed)
//   /bad                400 via context.status(400).fail(...)
//   /fail               throws: 500 with the error text
//   /sleep?ms=N         waits N ms, then echoes (for concurrency)
'use strict';

module.exports = async (event, context) => {
    if (event.path === '/fail') {
        throw new Error('handler failed on purpose');
    }
    if (event.path === '/bad') {
        return context.status(400).fail('bad input on purpose');
    }
    if (event.path === '/text') {
        const text = typeof event.body === 'string' && event.body ? event.body : 'world';
        return context
            .headers({ 'Content-Type': 'text/plain' })
            .succeed(`hello ${text}`);
    }
    if (event.path === '/sleep') {
        await new Promise((resolve) => setTimeout(resolve, Number(event.query.ms) || 100));
    }

    let body = event.body;
    let bodyType = typeof body;
    if (Buffer.isBuffer(body)) {
        bodyType = 'buffer';
        body = body.toString('base64');
    }
    return context
        .status(201)
        .headers({ 'Content-Type': 'application/json', 'X-Fjord-Example': 'node' })
        .succeed({
            method: event.method,
            path: event.path,
            query: event.query,
            headers: event.headers,
            body,
            bodyType,
        });
};
