//! `stack.yml` in OpenFaaS's schema, and the function definition Fjord stores for each
//! function.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Error, FunctionName};

/// The runtimes (`lang`) this build runs.
pub const RUNTIMES: [&str; 6] = [
    "builtin",
    "exec",
    "http",
    "node18",
    "node20",
    "python3-http",
];

/// One deployed function, as the registry stores it and workers read it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunctionSpec {
    pub name: FunctionName,
    /// The runtime: `builtin` (handler names a built-in function).
    pub lang: String,
    pub handler: String,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Names of the secrets (`/system/secrets`) the function may read, as files under its
    /// `secret_mount_path`.
    #[serde(default)]
    pub secrets: Vec<String>,
    #[serde(default)]
    pub limits: Option<Resources>,
    #[serde(default)]
    pub requests: Option<Resources>,
    /// The handler folder, packed by `fjord deploy`: the SHA-256 (hex) of the `.tar.gz` in the
    /// packages object store. `None` for built-ins and for commands that need no files.
    #[serde(default)]
    pub package: Option<String>,
    /// Set when the function is created and kept by updates: a call carries the incarnation it
    /// was accepted for, so calls queued before a removal never run under a later deployment
    /// of the same name. Empty in specs that are not deployed yet.
    #[serde(default)]
    pub incarnation: String,
}

/// A deployment as the management API takes it: OpenFaaS's `FunctionDeployment`
/// (`service`, `envProcess`, `envVars`, ...) plus Fjord's `lang`, `handler` and `package`.
/// The CLI sends it, the gateway reads it: one wire type for both.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    pub service: String,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub env_process: Option<String>,
    #[serde(default)]
    pub env_vars: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub secrets: Option<Vec<String>>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub limits: Option<Resources>,
    #[serde(default)]
    pub requests: Option<Resources>,
    /// Fjord: the runtime. OpenFaaS deploys containers and has no such field.
    #[serde(default)]
    pub lang: Option<String>,
    /// Fjord: the built-in's name for `builtin`; informational for the others.
    #[serde(default)]
    pub handler: Option<String>,
    /// Fjord: digest of the handler package uploaded to `/system/packages/{digest}`.
    #[serde(default)]
    pub package: Option<String>,
}

impl Deployment {
    /// The request that deploys `spec` (`fprocess` travels as `envProcess`).
    pub fn from_spec(spec: &FunctionSpec) -> Self {
        let mut env_vars = spec.environment.clone();
        let env_process = env_vars.remove("fprocess");
        Deployment {
            service: spec.name.to_string(),
            image: spec.image.clone(),
            env_process,
            env_vars: Some(env_vars),
            secrets: Some(spec.secrets.clone()),
            labels: Some(spec.labels.clone()),
            annotations: Some(spec.annotations.clone()),
            limits: spec.limits.clone(),
            requests: spec.requests.clone(),
            lang: Some(spec.lang.clone()),
            handler: Some(spec.handler.clone()),
            package: spec.package.clone(),
        }
    }

    /// The definition it asks for, not yet validated (see [`FunctionSpec::validate`]).
    pub fn into_spec(self) -> Result<FunctionSpec, Error> {
        let name: FunctionName = self
            .service
            .parse()
            .map_err(|e: Error| Error::invalid("service", e.to_string()))?;
        let lang = self.lang.ok_or_else(|| {
            Error::invalid(
                "lang",
                "is required: Fjord runs functions without containers (builtin, exec, http, node18, node20, python3-http)",
            )
        })?;
        let mut environment = self.env_vars.unwrap_or_default();
        if let Some(process) = self.env_process.filter(|p| !p.is_empty()) {
            environment.insert("fprocess".to_owned(), process);
        }
        Ok(FunctionSpec {
            name,
            handler: self.handler.unwrap_or_default(),
            lang,
            image: self.image,
            environment,
            labels: self.labels.unwrap_or_default(),
            annotations: self.annotations.unwrap_or_default(),
            secrets: self.secrets.unwrap_or_default(),
            limits: self.limits,
            requests: self.requests,
            package: self.package.filter(|p| !p.is_empty()),
            incarnation: String::new(),
        })
    }
}

/// `limits` / `requests` as in stack.yml: Kubernetes quantities (`128Mi`, `1Gi`, `0.5`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    #[serde(default)]
    pub memory: Option<String>,
    #[serde(default)]
    pub cpu: Option<String>,
}

/// Bytes in a Kubernetes memory quantity: `134217728`, `128Mi`, `1Gi`, `500M`, `1.5G`.
pub fn parse_memory(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale: f64 = match unit {
        "" => 1.0,
        "k" | "K" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = number * scale;
    (bytes.is_finite() && bytes >= 1.0).then_some(bytes as u64)
}

/// The runtimes that run `fprocess`, a command from the function's environment.
pub const COMMAND_RUNTIMES: [&str; 2] = ["exec", "http"];
/// The OpenFaaS templates run without containers: they need the handler folder (`package`).
pub const TEMPLATE_RUNTIMES: [&str; 3] = ["node18", "node20", "python3-http"];

impl FunctionSpec {
    /// Checks everything a worker will need that can be checked without the built-ins list or
    /// the package store, naming the field at fault.
    pub fn validate(&self) -> Result<(), Error> {
        let lang = self.lang.as_str();
        if !RUNTIMES.contains(&lang) {
            return Err(Error::invalid(
                "lang",
                format!(
                    "{lang:?} is not a supported runtime ({})",
                    RUNTIMES.join(", ")
                ),
            ));
        }
        if self.handler.trim().is_empty() && lang == "builtin" {
            return Err(Error::invalid("handler", "names the built-in function"));
        }
        if COMMAND_RUNTIMES.contains(&lang)
            && self
                .environment
                .get("fprocess")
                .is_none_or(|c| c.trim().is_empty())
        {
            return Err(Error::invalid(
                "environment.fprocess",
                format!("lang {lang} runs the command in fprocess, which is missing"),
            ));
        }
        if let Some(timeout) = self.environment.get("exec_timeout") {
            crate::config::parse_duration(timeout)
                .map_err(|e| Error::invalid("environment.exec_timeout", e.to_string()))?;
        }
        if let Some(path) = self.setting("com.openfaas.health.http.path")
            && !path.starts_with('/')
        {
            return Err(Error::invalid(
                "annotations.com.openfaas.health.http.path",
                format!("{path:?} must start with /"),
            ));
        }
        for (i, secret) in self.secrets.iter().enumerate() {
            secret
                .parse::<crate::secrets::SecretName>()
                .map_err(|e| Error::invalid(format!("secrets[{i}]"), e.to_string()))?;
        }
        if let Some(package) = &self.package
            && !crate::package::is_digest(package)
        {
            return Err(Error::invalid(
                "package",
                "must be the SHA-256 (64 hex digits) of an uploaded package",
            ));
        }
        crate::scale::ScalePolicy::for_spec(self)?;
        self.max_inflight()?;
        self.queue_max()?;
        crate::callback::Policy::for_spec(self)?;
        crate::retry::RetryPolicy::for_spec(self)?;
        self.memory_limit()?;
        Ok(())
    }

    /// `limits.memory` in bytes; a present but unparsable value is an error naming the field.
    pub fn memory_limit(&self) -> Result<Option<u64>, Error> {
        match self.limits.as_ref().and_then(|l| l.memory.as_deref()) {
            None | Some("") => Ok(None),
            Some(v) => parse_memory(v).map(Some).ok_or_else(|| {
                Error::invalid(
                    "limits.memory",
                    format!("{v:?} is not a memory quantity (such as 128Mi or 1Gi)"),
                )
            }),
        }
    }

    /// A label or annotation (labels win), as OpenFaaS reads `com.openfaas.*` settings.
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.labels
            .get(key)
            .or_else(|| self.annotations.get(key))
            .map(String::as_str)
    }

    /// A numeric setting; a present but unparsable value is an error naming the key.
    pub fn setting_u32(&self, key: &str, default: u32) -> Result<u32, Error> {
        match self.setting(key) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| Error::invalid(key, format!("{v:?} is not a whole number"))),
        }
    }

    /// The most calls the function may have queued or running (`com.fjord.queue.max`); beyond
    /// it intake answers 429. `None`: no cap but the stream's.
    pub fn queue_max(&self) -> Result<Option<u64>, Error> {
        match self.setting("com.fjord.queue.max") {
            None => Ok(None),
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if n > 0 => Ok(Some(n)),
                _ => Err(Error::invalid(
                    "com.fjord.queue.max",
                    format!("{v:?} is not a whole number above 0"),
                )),
            },
        }
    }

    /// Calls one worker runs at once: the `max_inflight` environment variable. Defaults by
    /// runtime: 64 for `builtin` (in-process, cheap), 8 for `exec` (each call is a process),
    /// 32 for `http` and the templates (one process serving concurrent requests).
    pub fn max_inflight(&self) -> Result<u32, Error> {
        let default = match self.lang.as_str() {
            "builtin" => 64,
            "exec" => 8,
            _ => 32,
        };
        match self.environment.get("max_inflight") {
            None => Ok(default),
            Some(v) => match v.trim().parse() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(Error::invalid(
                    "environment.max_inflight",
                    format!("{v:?} is not a positive number"),
                )),
            },
        }
    }
}

/// The parts of a `stack.yml` Fjord reads.
#[derive(Debug, Deserialize)]
pub struct Stack {
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub provider: Option<Provider>,
    pub functions: BTreeMap<String, StackFunction>,
}

#[derive(Debug, Deserialize)]
pub struct Provider {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct StackFunction {
    pub lang: String,
    pub handler: String,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub environment: BTreeMap<String, yaml_serde::Value>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// YAML files with an `environment:` map (faas-cli's format), merged under `environment`.
    #[serde(default)]
    pub environment_file: Vec<String>,
    #[serde(default)]
    pub secrets: Vec<String>,
    #[serde(default)]
    pub limits: Option<Resources>,
    #[serde(default)]
    pub requests: Option<Resources>,
}

impl Stack {
    /// Parses a stack file after `${VAR}` / `${VAR:-default}` substitution from `env`.
    pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Stack, Error> {
        let text = substitute(text, env)?;
        yaml_serde::from_str(&text).map_err(|e| Error::invalid("stack.yml", e.to_string()))
    }

    /// The function definitions, validated. `base` is the stack file's folder, against which
    /// `environment_file` paths are read (faas-cli's format: a YAML file with an
    /// `environment:` map; the function's own `environment` wins over the files).
    pub fn specs(&self, base: &Path) -> Result<Vec<FunctionSpec>, Error> {
        self.functions
            .iter()
            .map(|(name, f)| {
                let mut environment = BTreeMap::new();
                for (i, file) in f.environment_file.iter().enumerate() {
                    let field = format!("functions.{name}.environment_file[{i}]");
                    let path = base.join(file);
                    let text = std::fs::read_to_string(&path).map_err(|e| {
                        Error::invalid(&field, format!("reading {}: {e}", path.display()))
                    })?;
                    let parsed: EnvironmentFile = yaml_serde::from_str(&text)
                        .map_err(|e| Error::invalid(&field, e.to_string()))?;
                    for (k, v) in &parsed.environment {
                        environment.insert(k.clone(), scalar(v, &format!("{field}.{k}"))?);
                    }
                }
                for (k, v) in &f.environment {
                    environment.insert(
                        k.clone(),
                        scalar(v, &format!("functions.{name}.environment.{k}"))?,
                    );
                }
                let spec = FunctionSpec {
                    name: name.parse().map_err(|_| {
                        Error::invalid(format!("functions.{name}"), "not a valid function name")
                    })?,
                    lang: f.lang.clone(),
                    handler: f.handler.clone(),
                    image: f.image.clone(),
                    environment,
                    labels: f.labels.clone(),
                    annotations: f.annotations.clone(),
                    secrets: f.secrets.clone(),
                    limits: f.limits.clone(),
                    requests: f.requests.clone(),
                    package: None,
                    incarnation: String::new(),
                };
                spec.validate().map_err(|e| match e {
                    Error::Invalid { field, message } => {
                        Error::invalid(format!("functions.{name}.{field}"), message)
                    }
                    other => other,
                })?;
                Ok(spec)
            })
            .collect()
    }
}

/// An `environment_file` as faas-cli reads it.
#[derive(Deserialize)]
struct EnvironmentFile {
    #[serde(default)]
    environment: BTreeMap<String, yaml_serde::Value>,
}

fn scalar(v: &yaml_serde::Value, field: &str) -> Result<String, Error> {
    match v {
        yaml_serde::Value::String(s) => Ok(s.clone()),
        yaml_serde::Value::Number(n) => Ok(n.to_string()),
        yaml_serde::Value::Bool(b) => Ok(b.to_string()),
        _ => Err(Error::invalid(field, "must be a string, number or boolean")),
    }
}

/// `${VAR}` and `${VAR:-default}` substitution, as faas-cli does it.
fn substitute(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<String, Error> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| Error::invalid("stack.yml", "unclosed ${ in variable substitution"))?;
        let expr = &after[..end];
        let (var, default) = match expr.split_once(":-") {
            Some((v, d)) => (v, Some(d)),
            None => (expr, None),
        };
        let value = env(var)
            .filter(|v| !v.is_empty() || default.is_none())
            .or_else(|| default.map(str::to_owned))
            .unwrap_or_default();
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openfaas_stack_with_substitution() {
        let text = r#"
version: 1.0
provider:
  name: openfaas
  gateway: ${GW:-http://127.0.0.1:8080}
functions:
  echo:
    lang: builtin
    handler: echo
    environment:
      max_inflight: 8
    labels:
      com.openfaas.scale.min: "${MIN}"
"#;
        let stack = Stack::parse(text, |v| (v == "MIN").then(|| "2".to_owned())).unwrap();
        assert_eq!(
            stack.provider.as_ref().unwrap().gateway.as_deref(),
            Some("http://127.0.0.1:8080")
        );
        let specs = stack.specs(Path::new(".")).unwrap();
        assert_eq!(
            crate::scale::ScalePolicy::for_spec(&specs[0]).unwrap().min,
            2
        );
        assert_eq!(specs[0].max_inflight().unwrap(), 8);
    }

    #[test]
    fn bad_settings_name_the_field() {
        let text = "functions:\n  Bad_Name:\n    lang: builtin\n    handler: echo\n";
        let err = Stack::parse(text, |_| None)
            .unwrap()
            .specs(Path::new("."))
            .unwrap_err();
        assert!(err.to_string().contains("functions.Bad_Name"), "{err}");
        let text = "functions:\n  f:\n    lang: builtin\n    handler: echo\n    labels:\n      com.openfaas.scale.min: lots\n";
        let err = Stack::parse(text, |_| None)
            .unwrap()
            .specs(Path::new("."))
            .unwrap_err();
        assert!(err.to_string().contains("com.openfaas.scale.min"), "{err}");
    }
}
