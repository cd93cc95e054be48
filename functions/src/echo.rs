//! `echo`: answers with the request body and the request's Content-Type.

use crate::{BoxFuture, Function, Request, Response};

pub struct Echo;

pub(crate) fn echo(request: &Request) -> Response {
    let content_type = request
        .header("Content-Type")
        .unwrap_or("application/octet-stream");
    Response::new(200, content_type, request.body.clone())
}

impl Function for Echo {
    fn call(&self, request: Request) -> BoxFuture<'_, Response> {
        Box::pin(async move { echo(&request) })
    }
}
