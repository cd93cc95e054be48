//! `sleep`: waits `?ms=N` milliseconds (default 0, at most a day), then echoes. A malformed
//! `ms` is the caller's error: 400.

use std::time::Duration;

use crate::{BoxFuture, Function, Request, Response, echo::echo};

pub struct Sleep;

const MAX_MS: u64 = 24 * 3600 * 1000;

impl Function for Sleep {
    fn call(&self, request: Request) -> BoxFuture<'_, Response> {
        Box::pin(async move {
            let ms = match request.query_param("ms") {
                None => 0,
                Some(v) => match v.parse::<u64>() {
                    Ok(ms) if ms <= MAX_MS => ms,
                    _ => return Response::bad_request(&format!("ms={v:?} is not 0..={MAX_MS}")),
                },
            };
            tokio::time::sleep(Duration::from_millis(ms)).await;
            echo(&request)
        })
    }
}
