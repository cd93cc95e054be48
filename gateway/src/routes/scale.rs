//! `POST /system/scale-function/{name}` (OpenFaaS's body `{"serviceName","replicas"}`): asks the
//! control process's autoscaler to run that many workers. The count holds until backlog needs
//! more workers or the function has been idle long enough to scale to zero; it must lie within
//! 0..=`com.openfaas.scale.max`. Without an autoscaler (on Kubernetes, KEDA scales the worker
//! Deployments) the answer is 503.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use fjord_common::FunctionName;
use fjord_common::scale::{self, ScalePolicy, ScaleRequest, ScaleStatus};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::json_body;
use crate::AppState;
use crate::error::ApiError;

/// How long the autoscaler may take to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScaleBody {
    #[serde(default)]
    service_name: Option<String>,
    replicas: u32,
}

pub async fn scale_function(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let asked: ScaleBody = json_body(&body)?;
    if let Some(service) = &asked.service_name
        && !service.is_empty()
        && *service != name
    {
        return Err(ApiError::InvalidDefinition {
            field: "serviceName".into(),
            message: format!("{service:?} is not the function in the path ({name:?})"),
        });
    }
    let spec = match name.parse::<FunctionName>() {
        Ok(n) => state.functions.get(&n).await?,
        Err(_) => None,
    }
    .ok_or_else(|| ApiError::FunctionNotFound(name.clone()))?;
    let policy = ScalePolicy::for_spec(&spec)?;
    if asked.replicas > policy.max {
        return Err(ApiError::InvalidDefinition {
            field: "replicas".into(),
            message: format!(
                "{} is above com.openfaas.scale.max ({})",
                asked.replicas, policy.max
            ),
        });
    }
    let request = ScaleRequest {
        replicas: Some(asked.replicas),
    };
    match scale::ask(&state.queue, &spec.name, &request, ASK_TIMEOUT).await? {
        Some(status) => Ok((StatusCode::ACCEPTED, Json(json!(status)))),
        None => Err(ApiError::AutoscalerUnavailable),
    }
}

/// What the autoscaler says about a function, `None` if no autoscaler answers quickly.
pub(crate) async fn autoscaler_status(
    state: &AppState,
    function: &FunctionName,
) -> Option<ScaleStatus> {
    let request = ScaleRequest::default();
    scale::ask(&state.queue, function, &request, Duration::from_millis(500))
        .await
        .ok()
        .flatten()
}
