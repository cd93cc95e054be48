//! The OpenFaaS template shims Fjord ships (functions/templates/): small stdlib-only servers
//! that the `http` runtime starts per worker (env `PORT`, `FJORD_HANDLER_DIR`,
//! `FJORD_HEALTH_PATH`) and that load a user's handler written for OpenFaaS's `node18`/`node20`
//! (`handler.js`) or `python3-http` (`handler.py`) template, without a container.

/// (relative path under the templates folder, contents)
pub const FILES: &[(&str, &str)] = &[
    ("node/index.js", include_str!("../templates/node/index.js")),
    (
        "python3-http/index.py",
        include_str!("../templates/python3-http/index.py"),
    ),
];
