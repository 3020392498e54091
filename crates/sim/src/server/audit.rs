//! Who called what: bearer-token (and impersonation) identities, and an in-memory audit
//! log of every request, so tests can check the calls each component made against the
//! RBAC rules it ships with.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::HeaderMap;
use serde::Serialize;

use super::error::ApiError;

/// One request as the API server saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
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
    /// The `labelSelector` query parameter (list, watch, deletecollection), or empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub label_selector: String,
    /// The `fieldSelector` query parameter, or empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub field_selector: String,
    /// HTTP status code of the response (200 for a watch that started).
    pub code: u16,
    /// The node a pod-bound service account token was issued for (the
    /// `authentication.kubernetes.io/node-name` extra of its user info), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
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
    /// Token → (user, node the token is bound to).
    tokens: Mutex<HashMap<String, (String, Option<String>)>>,
    log: Mutex<Vec<AuditEntry>>,
}

/// The caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Effective user.
    pub user: String,
    /// Real user when impersonating.
    pub impersonator: Option<String>,
    /// Node a pod-bound token was issued for.
    pub node_name: Option<String>,
}

impl Auth {
    /// A fresh token for `user`.
    pub fn issue(&self, user: &str) -> String {
        self.issue_bound(user, None)
    }

    /// A fresh token for `user`, bound to a pod on `node` like a projected service
    /// account token (its user info then carries the node name).
    pub fn issue_bound(&self, user: &str, node: Option<&str>) -> String {
        let token = format!("osroll-sim-{}", super::write::new_uid().replace('-', ""));
        self.tokens
            .lock()
            .expect("tokens lock")
            .insert(token.clone(), (user.to_string(), node.map(String::from)));
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
        let (real, node_name) = match bearer {
            Some(t) => self
                .tokens
                .lock()
                .expect("tokens lock")
                .get(t)
                .cloned()
                .ok_or_else(ApiError::unauthorized)?,
            None => ("system:anonymous".to_string(), None),
        };
        match headers
            .get("impersonate-user")
            .and_then(|v| v.to_str().ok())
        {
            Some(as_user) if !as_user.is_empty() => Ok(Identity {
                user: as_user.to_string(),
                impersonator: Some(real),
                node_name: None,
            }),
            _ => Ok(Identity {
                user: real,
                impersonator: None,
                node_name,
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
        let bound = a.issue_bound("system:serviceaccount:ns:agent", Some("node-1"));
        let mut hb = HeaderMap::new();
        hb.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {bound}")).unwrap(),
        );
        assert_eq!(
            a.identify(&hb).unwrap().node_name.as_deref(),
            Some("node-1")
        );
        assert_eq!(a.identify(&h).unwrap().node_name, None);
        h.insert("authorization", HeaderValue::from_static("Bearer nope"));
        assert_eq!(a.identify(&h).unwrap_err().code, 401);
    }
}
