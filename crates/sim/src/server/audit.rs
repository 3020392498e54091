//! Who called what: bearer-token (and impersonation) identities, and an in-memory audit
//! log of every request, so tests can check the calls each component made against the
//! RBAC rules it ships with.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::HeaderMap;
use serde::Serialize;

use super::error::ApiError;

/// One request as the API server saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// Order of arrival, from 1.
    pub seq: u64,
    /// Authenticated (or impersonated) user name.
    pub user: String,
    /// The user who impersonated `user`, if any.
    pub impersonator: Option<String>,
    /// Kubernetes verb: get, list, watch, create, update, patch, delete, deletecollection;
    /// for non-resource URLs the lower-case HTTP method.
    pub verb: String,
    /// API group ("" for core).
    pub group: String,
    /// API version.
    pub version: String,
    /// Resource (plural), empty for non-resource URLs.
    pub resource: String,
    /// Subresource (`status`, `eviction`), or empty.
    pub subresource: String,
    /// Namespace, or empty.
    pub namespace: String,
    /// Object name, or empty.
    pub name: String,
    /// Request path (what non-resource rules match).
    pub path: String,
    /// HTTP status code of the response (200 for a watch that started).
    pub code: u16,
}

impl AuditEntry {
    /// Whether this was a request for a resource (as opposed to discovery, /version, ...).
    pub fn is_resource_request(&self) -> bool {
        !self.resource.is_empty()
    }
}

/// Token → user table and the audit log.
#[derive(Default)]
pub struct Auth {
    tokens: Mutex<HashMap<String, String>>,
    log: Mutex<Vec<AuditEntry>>,
}

/// The caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Effective user.
    pub user: String,
    /// Real user when impersonating.
    pub impersonator: Option<String>,
}

impl Auth {
    /// A fresh token for `user`.
    pub fn issue(&self, user: &str) -> String {
        let token = format!("osroll-sim-{}", super::write::new_uid().replace('-', ""));
        self.tokens
            .lock()
            .expect("tokens lock")
            .insert(token.clone(), user.to_string());
        token
    }

    /// Identify the caller: a known bearer token, or anonymous without one; an unknown
    /// token is refused (401). `Impersonate-User` switches the effective user.
    pub fn identify(&self, headers: &HeaderMap) -> Result<Identity, ApiError> {
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let real = match bearer {
            Some(t) => self
                .tokens
                .lock()
                .expect("tokens lock")
                .get(t)
                .cloned()
                .ok_or_else(ApiError::unauthorized)?,
            None => "system:anonymous".to_string(),
        };
        match headers
            .get("impersonate-user")
            .and_then(|v| v.to_str().ok())
        {
            Some(as_user) if !as_user.is_empty() => Ok(Identity {
                user: as_user.to_string(),
                impersonator: Some(real),
            }),
            _ => Ok(Identity {
                user: real,
                impersonator: None,
            }),
        }
    }

    /// Append an entry (its `seq` is assigned here).
    pub fn record(&self, mut e: AuditEntry) {
        let mut log = self.log.lock().expect("audit lock");
        e.seq = log.len() as u64 + 1;
        log.push(e);
    }

    /// A copy of the log.
    pub fn entries(&self) -> Vec<AuditEntry> {
        self.log.lock().expect("audit lock").clone()
    }

    /// Forget all entries.
    pub fn clear(&self) {
        self.log.lock().expect("audit lock").clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn tokens_identify_users_and_impersonation_switches() {
        let a = Auth::default();
        let t = a.issue("system:serviceaccount:osroll-system:osroll-controller");
        let mut h = HeaderMap::new();
        assert_eq!(a.identify(&h).unwrap().user, "system:anonymous");
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
        );
        assert_eq!(
            a.identify(&h).unwrap().user,
            "system:serviceaccount:osroll-system:osroll-controller"
        );
        h.insert("impersonate-user", HeaderValue::from_static("bob"));
        let id = a.identify(&h).unwrap();
        assert_eq!((id.user.as_str(), id.impersonator.is_some()), ("bob", true));
        h.insert("authorization", HeaderValue::from_static("Bearer nope"));
        assert_eq!(a.identify(&h).unwrap_err().code, 401);
    }
}
