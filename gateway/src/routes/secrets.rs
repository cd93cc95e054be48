//! `/system/secrets` as in OpenFaaS: create (`POST`, 201), update (`PUT`), list names (`GET`),
//! delete (`DELETE`). Bodies are `{"name", "value"}` or `{"name", "rawValue"}` (base64).
//! Values are never returned.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine;
use fjord_common::secrets::{MAX_SECRET_BYTES, SecretName, Secrets};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::json_body;
use crate::AppState;
use crate::error::ApiError;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SecretBody {
    name: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    raw_value: Option<String>,
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidDefinition {
        field: field.to_owned(),
        message: message.into(),
    }
}

fn parse(body: &[u8], need_value: bool) -> Result<(SecretName, Bytes), ApiError> {
    let secret: SecretBody = json_body(body)?;
    let name: SecretName = secret.name.parse()?;
    let value = match (secret.value, secret.raw_value) {
        (Some(v), None) => Bytes::from(v),
        (None, Some(raw)) => base64::engine::general_purpose::STANDARD
            .decode(raw.trim())
            .map(Bytes::from)
            .map_err(|e| invalid("rawValue", format!("not base64: {e}")))?,
        (None, None) if !need_value => Bytes::new(),
        (None, None) => return Err(invalid("value", "is required (or rawValue, base64)")),
        (Some(_), Some(_)) => return Err(invalid("value", "give value or rawValue, not both")),
    };
    if value.len() > MAX_SECRET_BYTES {
        return Err(invalid(
            "value",
            format!("is larger than {MAX_SECRET_BYTES} bytes"),
        ));
    }
    Ok((name, value))
}

pub async fn create(State(state): State<AppState>, body: Bytes) -> Result<StatusCode, ApiError> {
    let (name, value) = parse(&body, true)?;
    if Secrets::open(&state.queue)
        .await?
        .create(&name, value)
        .await?
    {
        Ok(StatusCode::CREATED)
    } else {
        Err(ApiError::SecretExists(name.to_string()))
    }
}

/// Running workers of the functions that name the secret rewrite its file when it changes.
pub async fn update(State(state): State<AppState>, body: Bytes) -> Result<StatusCode, ApiError> {
    let (name, value) = parse(&body, true)?;
    if Secrets::open(&state.queue)
        .await?
        .update(&name, value)
        .await?
    {
        Ok(StatusCode::OK)
    } else {
        Err(ApiError::SecretNotFound(name.to_string()))
    }
}

pub async fn remove(State(state): State<AppState>, body: Bytes) -> Result<StatusCode, ApiError> {
    let (name, _) = parse(&body, false)?;
    if Secrets::open(&state.queue).await?.delete(&name).await? {
        Ok(StatusCode::OK)
    } else {
        Err(ApiError::SecretNotFound(name.to_string()))
    }
}

pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let names = Secrets::open(&state.queue).await?.names().await?;
    Ok(Json(Value::Array(
        names.iter().map(|n| json!({"name": n.as_str()})).collect(),
    )))
}
