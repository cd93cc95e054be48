//! `PUT /system/packages/{digest}`: uploads a handler package (`.tar.gz`, as `fjord deploy`
//! packs a handler folder) under its SHA-256, before a deployment names it in `package`.
//! Uploading the same package again is harmless; `HEAD` tells whether it is there.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use fjord_common::package::{self, MAX_PACKAGE_BYTES, Packages};

use crate::AppState;
use crate::error::ApiError;

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::InvalidDefinition {
        field: "package".to_owned(),
        message: message.into(),
    }
}

pub async fn put(
    State(state): State<AppState>,
    Path(digest): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    if !package::is_digest(&digest) {
        return Err(invalid(
            "the path must be the package's SHA-256 (64 hex digits)",
        ));
    }
    if body.len() > MAX_PACKAGE_BYTES {
        return Err(ApiError::PayloadTooLarge(MAX_PACKAGE_BYTES));
    }
    if package::digest(&body) != digest {
        return Err(invalid("the body's SHA-256 does not match the path"));
    }
    let created = Packages::open(&state.queue).await?.put(&body).await?;
    Ok(if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    })
}

pub async fn head(
    State(state): State<AppState>,
    Path(digest): Path<String>,
) -> Result<StatusCode, ApiError> {
    let packages = Packages::open(&state.queue).await?;
    if package::is_digest(&digest) && packages.exists(&digest).await? {
        Ok(StatusCode::OK)
    } else {
        Ok(StatusCode::NOT_FOUND)
    }
}
