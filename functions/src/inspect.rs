//! `inspect`: answers with what it received (method, sub-path, query, headers, body length),
//! as JSON written by hand so this crate needs no serializer. For debugging routing and for
//! the end-to-end tests.

use std::fmt::Write;

use crate::{BoxFuture, Function, Request, Response};

pub struct Inspect;

fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn describe(request: &Request) -> String {
    let mut out = String::from("{\"method\":");
    json_string(&mut out, &request.method);
    out.push_str(",\"path\":");
    json_string(&mut out, &request.path);
    out.push_str(",\"query\":");
    json_string(&mut out, &request.query);
    out.push_str(",\"headers\":[");
    for (i, (k, v)) in request.headers.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('[');
        json_string(&mut out, k);
        out.push(',');
        json_string(&mut out, v);
        out.push(']');
    }
    let _ = write!(out, "],\"body_len\":{}}}", request.body.len());
    out
}

impl Function for Inspect {
    fn call(&self, request: Request) -> BoxFuture<'_, Response> {
        Box::pin(async move { Response::new(200, "application/json", describe(&request)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        let r = Request {
            method: "POST".into(),
            path: "/a\"b".into(),
            headers: vec![("x".into(), "\n".into())],
            ..Default::default()
        };
        assert_eq!(
            describe(&r),
            r#"{"method":"POST","path":"/a\"b","query":"","headers":[["x","\u000a"]],"body_len":0}"#
        );
    }
}
