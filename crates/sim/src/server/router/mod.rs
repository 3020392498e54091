//! HTTP front: authenticate, turn the URL into a request description (group, version,
//! resource, namespace, name, subresource, verb), dispatch it to the store under one
//! lock, run follow-up work, wake watchers, record the audit entry and encode the answer.

use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::App;
use super::audit::AuditEntry;
use super::error::{ApiError, ApiResult};
use super::resources::{ResourceDef, ResourceTable};
use super::{discovery, events, openapi};
use resource::{ResourceRequest, resource};

/// A parsed request path.
#[derive(Debug, Clone, PartialEq)]
enum Route {
    Version,
    Health,
    CoreVersions,
    Groups,
    Group(String),
    ResourceList(String, String),
    OpenApiV3Root,
    OpenApiV3(String, String),
    Resource {
        group: String,
        version: String,
        plural: String,
        ns: Option<String>,
        name: Option<String>,
        sub: Option<String>,
    },
    Unknown,
}

fn parse_path(path: &str) -> Route {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segs.as_slice() {
        ["version"] => Route::Version,
        ["healthz" | "livez" | "readyz", ..] => Route::Health,
        ["api"] => Route::CoreVersions,
        ["apis"] => Route::Groups,
        ["apis", g] => Route::Group(g.to_string()),
        ["api", v] => Route::ResourceList(String::new(), v.to_string()),
        ["apis", g, v] => Route::ResourceList(g.to_string(), v.to_string()),
        ["openapi", "v3"] => Route::OpenApiV3Root,
        ["openapi", "v3", "api", v] => Route::OpenApiV3(String::new(), v.to_string()),
        ["openapi", "v3", "apis", g, v] => Route::OpenApiV3(g.to_string(), v.to_string()),
        ["api", v, rest @ ..] => resource_route("", v, rest),
        ["apis", g, v, rest @ ..] => resource_route(g, v, rest),
        _ => Route::Unknown,
    }
}

fn resource_route(group: &str, version: &str, rest: &[&str]) -> Route {
    let (ns, rest) = if rest.len() >= 3
        && rest[0] == "namespaces"
        && !(rest.len() == 3 && matches!(rest[2], "status" | "finalize"))
    {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    if rest.is_empty() || rest.len() > 3 {
        return Route::Unknown;
    }
    Route::Resource {
        group: group.into(),
        version: version.into(),
        plural: rest[0].into(),
        ns,
        name: rest.get(1).map(|s| s.to_string()),
        sub: rest.get(2).map(|s| s.to_string()),
    }
}

struct Query(Vec<(String, String)>);

impl Query {
    fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }
}

fn parse_query(q: Option<&str>) -> Query {
    let Some(q) = q else { return Query(vec![]) };
    let pairs = q
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect();
    Query(pairs)
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn json_response(code: StatusCode, v: &Value, warnings: &[String]) -> Response {
    let mut resp = Response::new(Body::from(v.to_string()));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for w in warnings {
        if let Ok(h) = HeaderValue::from_str(&format!("299 - {:?}", w)) {
            resp.headers_mut().append("Warning", h);
        }
    }
    resp
}

/// Entry point for every request.
pub async fn handle(State(app): State<Arc<App>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let method = parts.method.clone();
    let query = parse_query(parts.uri.query());
    let mut entry = AuditEntry {
        seq: 0,
        user: String::new(),
        impersonator: None,
        verb: method.as_str().to_ascii_lowercase(),
        group: String::new(),
        version: String::new(),
        resource: String::new(),
        subresource: String::new(),
        namespace: String::new(),
        name: String::new(),
        path: path.clone(),
        label_selector: query.get("labelSelector").unwrap_or_default().to_string(),
        field_selector: query.get("fieldSelector").unwrap_or_default().to_string(),
        code: 0,
        node_name: None,
    };
    let id = match app.auth.identify(&parts.headers) {
        Ok(id) => id,
        Err(e) => {
            entry.code = e.code;
            app.auth.record(entry);
            return e.into_response();
        }
    };
    entry.user = id.user.clone();
    entry.impersonator = id.impersonator.clone();
    entry.node_name = id.node_name.clone();
    let body = match to_bytes(body, 64 << 20).await {
        Ok(b) => b,
        Err(e) => return ApiError::bad_request(format!("reading body: {e}")).into_response(),
    };
    let resp = route(
        &app,
        &parts.headers,
        &method,
        &path,
        &query,
        &body,
        &mut entry,
    );
    let resp = match resp {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    entry.code = resp.status().as_u16();
    app.auth.record(entry);
    resp
}

#[allow(clippy::too_many_arguments)]
fn route(
    app: &Arc<App>,
    headers: &HeaderMap,
    method: &Method,
    path: &str,
    query: &Query,
    body: &[u8],
    entry: &mut AuditEntry,
) -> ApiResult<Response> {
    let r = parse_path(path);
    let ok = |v: Value| Ok(json_response(StatusCode::OK, &v, &[]));
    let not_found = || ApiError::no_route(path);
    if !matches!(r, Route::Resource { .. }) && method != Method::GET {
        return Err(ApiError::method_not_allowed(format!(
            "{method} is not supported on {path}"
        )));
    }
    let store = || app.store.lock().expect("store lock");
    match r {
        Route::Version => ok(discovery::version()),
        Route::Health => Ok((StatusCode::OK, "ok").into_response()),
        Route::CoreVersions => ok(discovery::core_versions(&app.addr.to_string())),
        Route::Groups => ok(discovery::groups(&store().table)),
        Route::Group(g) => {
            discovery::group(&store().table, &g).map_or_else(|| Err(not_found()), ok)
        }
        Route::ResourceList(g, v) => {
            discovery::resource_list(&store().table, &g, &v).map_or_else(|| Err(not_found()), ok)
        }
        Route::OpenApiV3Root => ok(openapi::root(&store().table)),
        Route::OpenApiV3(g, v) => {
            openapi::group_version_doc(&store().table, &g, &v).map_or_else(|| Err(not_found()), ok)
        }
        Route::Unknown => Err(not_found()),
        Route::Resource {
            group,
            version,
            plural,
            ns,
            name,
            sub,
        } => {
            entry.group = group.clone();
            entry.version = version.clone();
            entry.resource = plural.clone();
            entry.namespace = ns.clone().unwrap_or_default();
            entry.name = name.clone().unwrap_or_default();
            entry.subresource = sub.clone().unwrap_or_default();
            let (rd, events_v1, version) = {
                let store = store();
                served_as(&store.table, &group, version, &plural).ok_or_else(not_found)?
            };
            let req = ResourceRequest {
                rd,
                events_v1,
                version,
                ns,
                name,
                sub,
                headers,
                query,
                body,
            };
            resource(app, method, req, entry)
        }
    }
}

/// The resource definition that serves `group/version/plural` and the version it is
/// served at: events.k8s.io Events live in the core Events store (see `events`).
fn served_as(
    table: &ResourceTable,
    group: &str,
    version: String,
    plural: &str,
) -> Option<(Arc<ResourceDef>, bool, String)> {
    let rd = table.lookup(group, &version, plural)?;
    if events::is_events_v1(group, plural) {
        Some((table.lookup("", "v1", "events")?, true, "v1".to_string()))
    } else {
        Some((rd, false, version))
    }
}

mod resource;

#[cfg(test)]
mod tests;
