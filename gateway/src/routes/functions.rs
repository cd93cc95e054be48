//! The OpenFaaS management API for functions: `GET/POST/PUT/DELETE /system/functions`,
//! `GET /system/function/{name}` and `GET /system/info`, with OpenFaaS's field names
//! (`service`, `envProcess`, `envVars`, `availableReplicas`, ...) plus Fjord's `lang`,
//! `handler` and `package`.
//!
//! Deploying validates the whole definition first (400 naming the field), creates the
//! function's queue, then writes the registry; workers pick changes up from the registry.
//! Removing answers 202: new calls get 404 at once, and the control process ends the calls
//! still queued as `cancelled`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use fjord_common::FunctionName;
use fjord_common::package::Packages;
use fjord_common::queue::ConsumerSettings;
use fjord_common::secrets::{SecretName, Secrets};
use fjord_common::stack::{Deployment, FunctionSpec, TEMPLATE_RUNTIMES};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::json_body;
use super::queues::count_workers;
use super::scale::autoscaler_status;
use crate::AppState;
use crate::error::ApiError;

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
    ApiError::InvalidDefinition {
        field: field.into(),
        message: message.into(),
    }
}

/// Parses and validates a deployment into the definition to store.
async fn definition(state: &AppState, body: &[u8]) -> Result<FunctionSpec, ApiError> {
    let spec = json_body::<Deployment>(body)?.into_spec()?;
    spec.validate()?;
    if spec.lang == "builtin"
        && let Err(why) = fjord_functions::check_builtin(&spec.handler)
    {
        return Err(invalid("handler", why));
    }
    match &spec.package {
        Some(digest) if !Packages::open(&state.queue).await?.exists(digest).await? => {
            return Err(invalid(
                "package",
                format!("no package {digest}: upload it to /system/packages/{digest} first"),
            ));
        }
        None if TEMPLATE_RUNTIMES.contains(&spec.lang.as_str()) => {
            return Err(invalid(
                "package",
                format!(
                    "lang {} runs a handler folder: upload it as a package",
                    spec.lang
                ),
            ));
        }
        _ => {}
    }
    if !spec.secrets.is_empty() {
        let secrets = Secrets::open(&state.queue).await?;
        for (i, secret) in spec.secrets.iter().enumerate() {
            let name: SecretName = secret.parse()?;
            if secrets.get(&name).await?.is_none() {
                return Err(invalid(
                    format!("secrets[{i}]"),
                    format!("no secret named {secret:?}; create it with POST /system/secrets"),
                ));
            }
        }
    }
    if let Some(limit) = spec.memory_limit()?
        && spec.lang != "builtin"
        && let Err(why) = fjord_common::cgroup::memory_controller()
    {
        return Err(invalid(
            "limits.memory",
            format!("cannot enforce {limit} bytes on this host: {why}"),
        ));
    }
    Ok(spec)
}

/// `POST /system/functions`: deploys a new function (409 if the name is taken).
pub async fn create(State(state): State<AppState>, body: Bytes) -> Result<StatusCode, ApiError> {
    let spec = definition(&state, &body).await?;
    let uid = spec.name.user_id();
    if let Some(other) = state
        .functions
        .registry()
        .list()
        .await?
        .into_iter()
        .find(|other| other.name != spec.name && other.name.user_id() == uid)
    {
        return Err(invalid(
            "service",
            format!(
                "{} would run as the same user ({uid}) as the deployed function {}; choose another name",
                spec.name, other.name
            ),
        ));
    }
    let settings = ConsumerSettings::for_spec(&spec, state.settings.ack_wait)?;
    match state
        .functions
        .registry()
        .create(&state.queue, &spec, &settings)
        .await?
    {
        Some(_) => Ok(StatusCode::ACCEPTED),
        None => Err(ApiError::FunctionExists(spec.name.to_string())),
    }
}

/// `PUT /system/functions`: updates a deployed function (404 if there is none, so clients fall
/// back to POST). Calls that start after the update run the new definition.
pub async fn update(State(state): State<AppState>, body: Bytes) -> Result<StatusCode, ApiError> {
    let spec = definition(&state, &body).await?;
    let settings = ConsumerSettings::for_spec(&spec, state.settings.ack_wait)?;
    match state
        .functions
        .registry()
        .update(&state.queue, &spec, &settings)
        .await?
    {
        Some(_) => Ok(StatusCode::ACCEPTED),
        None => Err(ApiError::FunctionNotFound(spec.name.to_string())),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Removal {
    function_name: String,
}

/// `DELETE /system/functions` with `{"functionName": ...}`.
pub async fn remove(State(state): State<AppState>, body: Bytes) -> Result<StatusCode, ApiError> {
    let removal: Removal = json_body(&body)?;
    let name: FunctionName = removal
        .function_name
        .parse()
        .map_err(|_| ApiError::FunctionNotFound(removal.function_name.clone()))?;
    if state.functions.registry().remove(&name).await? {
        Ok(StatusCode::ACCEPTED)
    } else {
        Err(ApiError::FunctionNotFound(name.to_string()))
    }
}

/// `GET /system/functions`.
pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let specs = state.functions.registry().list().await?;
    Ok(Json(Value::Array(describe(&state, &specs).await?)))
}

/// `GET /system/function/{name}`.
pub async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let spec = match name.parse::<FunctionName>() {
        Ok(n) => state.functions.get(&n).await?,
        Err(_) => None,
    }
    .ok_or_else(|| ApiError::FunctionNotFound(name.clone()))?;
    let mut described = describe(&state, std::slice::from_ref(&spec)).await?;
    Ok(Json(described.remove(0)))
}

/// Definitions as OpenFaaS's `FunctionStatus`, with live replica and invocation counts.
async fn describe(state: &AppState, specs: &[FunctionSpec]) -> Result<Vec<Value>, ApiError> {
    let names: Vec<String> = specs.iter().map(|s| s.name.to_string()).collect();
    let counts = state.store.invocation_counts(&names).await?;
    let live = futures::future::join_all(specs.iter().map(|s| async {
        let (available, scaling) = tokio::join!(
            count_workers(state, &s.name),
            autoscaler_status(state, &s.name)
        );
        (available, scaling)
    }))
    .await;
    specs
        .iter()
        .zip(live)
        .map(|(spec, (available, scaling))| {
            let available = available?;
            // Without an autoscaler (KEDA scales the workers) the workers that answer are the
            // replicas.
            let replicas = scaling.as_ref().map_or(available as u32, |s| s.replicas);
            let mut env_vars = spec.environment.clone();
            let env_process = env_vars.remove("fprocess").unwrap_or_default();
            Ok(json!({
                "name": spec.name,
                "image": spec.image.clone().unwrap_or_default(),
                "namespace": "fjord",
                "envProcess": env_process,
                "envVars": env_vars,
                "labels": spec.labels,
                "annotations": spec.annotations,
                "secrets": spec.secrets,
                "limits": spec.limits,
                "requests": spec.requests,
                "readOnlyRootFilesystem": false,
                "invocationCount": counts.get(spec.name.as_str()).copied().unwrap_or(0),
                "replicas": replicas,
                "availableReplicas": available,
                "scaling": scaling,
                "lang": spec.lang,
                "handler": spec.handler,
                "package": spec.package,
            }))
        })
        .collect()
}

/// `GET /system/info`, in OpenFaaS's shape.
pub async fn info() -> Json<Value> {
    let version = env!("CARGO_PKG_VERSION");
    Json(json!({
        "provider": {
            "provider": "fjord",
            "orchestration": "processes",
            "version": {"release": version, "sha": option_env!("FJORD_GIT_SHA").unwrap_or("")},
        },
        "version": {"release": version, "sha": option_env!("FJORD_GIT_SHA").unwrap_or(""), "commit_message": ""},
        "arch": std::env::consts::ARCH,
        "runtimes": fjord_common::stack::RUNTIMES,
        "builtins": fjord_functions::BUILTINS,
    }))
}
