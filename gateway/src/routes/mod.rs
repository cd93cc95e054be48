//! The gateway's routes. Invocation routes are open (as in OpenFaaS); `/system/*` is behind
//! basic auth; `/healthz` is open.

mod callbacks;
mod cancel;
mod dashboard;
mod dead_letters;
mod extract;
mod functions;
mod idempotency;
mod invoke;
mod logs;
mod packages;
mod queues;
mod scale;
mod secrets;
mod status;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, Uri};
use axum::routing::{any, get, post, put};

use crate::AppState;
use crate::error::ApiError;

pub use dashboard::RecentCache;
pub(crate) use queues::{Live, live};

pub fn router(state: AppState) -> Router {
    let system = Router::new()
        .route("/system/invocations", get(status::list))
        .route("/system/invocations/{call_id}", get(status::get))
        .route("/system/invocations/{call_id}/result", get(status::result))
        .route(
            "/system/invocations/{call_id}/callbacks",
            get(callbacks::log),
        )
        .route(
            "/system/invocations/{call_id}/callbacks/redeliver",
            post(callbacks::redeliver),
        )
        .route("/system/dead-letters", get(dead_letters::list))
        .route(
            "/system/dead-letters/redrive",
            post(dead_letters::redrive_all),
        )
        .route(
            "/system/dead-letters/{call_id}/redrive",
            post(dead_letters::redrive_one),
        )
        .route("/system/queues", get(queues::list))
        .route("/metrics", get(crate::metrics::serve))
        .route("/system/logs", get(logs::read))
        .route("/system/dashboard", get(dashboard::figures))
        .route("/system/dashboard/history", get(dashboard::history))
        .route("/ui/", get(dashboard::page))
        .route(
            "/ui",
            get(|| async { axum::response::Redirect::permanent("/ui/") }),
        )
        .route(
            "/system/functions",
            get(functions::list)
                .post(functions::create)
                .put(functions::update)
                .delete(functions::remove),
        )
        .route("/system/function/{name}", get(functions::get))
        .route("/system/info", get(functions::info))
        .route("/system/scale-function/{name}", post(scale::scale_function))
        .route(
            "/system/secrets",
            get(secrets::list)
                .post(secrets::create)
                .put(secrets::update)
                .delete(secrets::remove),
        )
        .route(
            "/system/packages/{digest}",
            put(packages::put)
                .head(packages::head)
                .layer(DefaultBodyLimit::max(
                    fjord_common::package::MAX_PACKAGE_BYTES,
                )),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::require,
        ));
    Router::new()
        .route("/async-function/{name}", any(invoke::asynchronous))
        .route("/async-function/{name}/", any(invoke::asynchronous))
        .route("/async-function/{name}/{*path}", any(invoke::asynchronous))
        .route("/function/{name}", any(invoke::synchronous))
        .route("/function/{name}/", any(invoke::synchronous))
        .route("/function/{name}/{*path}", any(invoke::synchronous))
        .route("/healthz", get(healthz))
        .merge(system)
        .fallback(|uri: Uri| async move { ApiError::RouteNotFound(uri.path().to_owned()) })
        .layer(DefaultBodyLimit::max(state.settings.max_body))
        .with_state(state)
}

async fn healthz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    match state.queue.client.connection_state() {
        async_nats::connection::State::Connected => (StatusCode::OK, "OK"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "NATS disconnected"),
    }
}
