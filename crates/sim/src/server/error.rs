//! API errors in the shape clients expect: a `meta/v1 Status` body with the HTTP code,
//! `reason` and, for validation errors, `details.causes` naming each offending field.
//! kubectl and kube-rs both decode this body, so the wording follows the real API server.

use std::fmt;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// What kind of problem a [`FieldError`] reports (Kubernetes `field.ErrorType`).
#[derive(Debug, Clone, PartialEq)]
pub enum FieldErrorKind {
    /// A required field is missing.
    Required,
    /// The value is malformed or out of range.
    Invalid(Value),
    /// The value is not one of the allowed ones.
    NotSupported(Value, Vec<String>),
    /// The field may not be set or changed.
    Forbidden,
    /// A list holds the same key twice.
    Duplicate(Value),
    /// The field is not part of the schema (strict field validation).
    Unknown,
}

/// One problem with one field, e.g. `spec.version: Invalid value: "x": ...`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// Dotted path, e.g. `spec.strategy.maxFailures` or `spec.images[0].url`.
    pub field: String,
    /// The problem.
    pub kind: FieldErrorKind,
    /// Extra explanation.
    pub detail: String,
}

impl FieldError {
    /// Missing required field.
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Required,
            detail: detail.into(),
        }
    }
    /// Bad value.
    pub fn invalid(field: impl Into<String>, value: Value, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Invalid(value),
            detail: detail.into(),
        }
    }
    /// Forbidden change.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Forbidden,
            detail: detail.into(),
        }
    }

    fn reason(&self) -> &'static str {
        match self.kind {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid(_) => "FieldValueInvalid",
            FieldErrorKind::NotSupported(..) => "FieldValueNotSupported",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::Duplicate(_) => "FieldValueDuplicate",
            FieldErrorKind::Unknown => "FieldValueInvalid",
        }
    }

    fn body(&self) -> String {
        let with_detail = |s: String| {
            if self.detail.is_empty() {
                s
            } else {
                format!("{s}: {}", self.detail)
            }
        };
        match &self.kind {
            FieldErrorKind::Required => with_detail("Required value".into()),
            FieldErrorKind::Forbidden => with_detail("Forbidden".into()),
            FieldErrorKind::Unknown => with_detail("field not declared in schema".into()),
            FieldErrorKind::Invalid(v) => with_detail(format!("Invalid value: {}", show(v))),
            FieldErrorKind::Duplicate(v) => with_detail(format!("Duplicate value: {}", show(v))),
            FieldErrorKind::NotSupported(v, allowed) => {
                let allowed: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
                with_detail(format!(
                    "Unsupported value: {}: supported values: {}",
                    show(v),
                    allowed.join(", ")
                ))
            }
        }
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Object(_) => "\"object\"".into(),
        Value::Array(_) => "\"array\"".into(),
        other => other.to_string(),
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// An error answered with a `Status` object.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `Status.reason`, e.g. `NotFound`.
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
    /// `Status.details` (name, group, kind, causes).
    pub details: Option<Value>,
}

/// Result of an API operation.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }
    fn with_details(mut self, group: &str, kind: &str, name: &str) -> Self {
        self.details = Some(json!({ "name": name, "group": group, "kind": kind }));
        self
    }

    /// 404 for an object; `gr` is `plural` or `plural.group`.
    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", gr(group, plural)),
        )
        .with_details(group, plural, name)
    }
    /// 404 for a path that names no resource.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }
    /// 409 on create of an existing name.
    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", gr(group, plural)),
        )
        .with_details(group, plural, name)
    }
    /// 409 on a stale resourceVersion.
    pub fn conflict(group: &str, plural: &str, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                gr(group, plural)
            ),
        )
        .with_details(group, plural, name)
    }
    /// 422 with one cause per field error.
    pub fn invalid(group: &str, kind: &str, name: &str, errors: &[FieldError]) -> Self {
        let joined = if errors.len() == 1 {
            errors[0].to_string()
        } else {
            format!(
                "[{}]",
                errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let qualified = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| json!({ "reason": e.reason(), "message": e.body(), "field": e.field }))
            .collect();
        ApiError {
            code: 422,
            reason: "Invalid",
            message: format!("{qualified} \"{name}\" is invalid: {joined}"),
            details: Some(json!({ "name": name, "group": group, "kind": kind, "causes": causes })),
        }
    }
    /// 422 without field causes (e.g. a JSON patch whose `test` failed).
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(422, "Invalid", message)
    }
    /// An admission denial with the `code` and `reason` its policy gave.
    pub fn denied(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(code, reason, message)
    }
    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }
    /// 401.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }
    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }
    /// 405.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }
    /// 406.
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message)
    }
    /// 410 for a resourceVersion older than the event history.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }
    /// 415.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }
    /// 429 (an eviction a disruption budget forbids).
    pub fn too_many_requests(message: impl Into<String>, causes: Vec<Value>) -> Self {
        let mut e = Self::new(429, "TooManyRequests", message);
        e.details = Some(json!({ "causes": causes }));
        e
    }
    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (code, axum::Json(self.to_status())).into_response()
    }
}

/// `plural` or `plural.group`, the way the API server names a resource in messages.
pub fn gr(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_message_names_each_field() {
        let e = ApiError::invalid(
            "osroll.io",
            "OSUpgrade",
            "bad",
            &[
                FieldError::invalid(
                    "spec.version",
                    json!("x y"),
                    "spec.version in body should match '^v'",
                ),
                FieldError::required("spec.catalog", ""),
            ],
        );
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            "OSUpgrade.osroll.io \"bad\" is invalid: [spec.version: Invalid value: \"x y\": \
             spec.version in body should match '^v', spec.catalog: Required value]"
        );
        let st = e.to_status();
        assert_eq!(st["details"]["causes"][1]["field"], "spec.catalog");
        assert_eq!(st["details"]["causes"][1]["reason"], "FieldValueRequired");
    }

    #[test]
    fn not_found_uses_group_resource() {
        assert_eq!(
            ApiError::not_found("", "pods", "p").message,
            "pods \"p\" not found"
        );
        assert_eq!(
            ApiError::not_found("osroll.io", "osupgrades", "u").message,
            "osupgrades.osroll.io \"u\" not found"
        );
    }
}
