//! HTTP front: authenticate, turn the URL into a request description (group, version,
//! resource, namespace, name, subresource, verb), dispatch it to the store under one
//! lock, run follow-up work, wake watchers, record the audit entry and encode the answer.

use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{Value, json};

use super::App;
use super::audit::AuditEntry;
use super::delete::DeleteOpts;
use super::error::{ApiError, ApiResult};
use super::patch::PatchType;
use super::resources::{ResourceDef, ResourceTable};
use super::selectors::{FieldSelector, LabelSelector};
use super::store::{Store, meta_str};
use super::table::{self, Presentation};
use super::watch::{self, WatchRequest};
use super::write::{Ctx, FieldValidation, Target};
use super::{discovery, events, openapi};

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

struct ResourceRequest<'a> {
    rd: Arc<ResourceDef>,
    events_v1: bool,
    version: String,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
    headers: &'a HeaderMap,
    query: &'a Query,
    body: &'a [u8],
}

fn header_str(h: &HeaderMap, k: header::HeaderName) -> &str {
    h.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

fn decode_raw(req: &ResourceRequest<'_>) -> ApiResult<Value> {
    let ct = header_str(req.headers, header::CONTENT_TYPE);
    if ct.contains("yaml") {
        serde_yaml::from_slice(req.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML body: {e}")))
    } else if ct.contains("protobuf") || ct.contains("cbor") {
        Err(ApiError::unsupported_media_type(format!(
            "only JSON and YAML bodies are supported, got {ct:?}"
        )))
    } else {
        serde_json::from_slice(req.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding JSON body: {e}")))
    }
}

fn decode_body(req: &ResourceRequest<'_>) -> ApiResult<Value> {
    let v = decode_raw(req)?;
    Ok(if req.events_v1 { events::to_core(v) } else { v })
}

impl ResourceRequest<'_> {
    /// apiVersion the client speaks.
    fn api_version(&self) -> String {
        if self.events_v1 {
            "events.k8s.io/v1".into()
        } else {
            self.rd.api_version(&self.version)
        }
    }
    /// Stored object in the client's shape.
    fn out(&self, mut obj: Value) -> Value {
        obj["apiVersion"] = Value::String(self.rd.api_version(&self.version));
        if self.events_v1 {
            events::from_core(obj)
        } else {
            obj
        }
    }
    /// The object the request addresses, in namespace `ns` under `name`.
    fn target<'t>(&'t self, ns: &'t str, name: &'t str, status: bool) -> Target<'t> {
        Target {
            rd: &self.rd,
            version: &self.version,
            ns,
            name,
            status,
        }
    }
    /// The request's label selector.
    fn labels(&self) -> ApiResult<LabelSelector> {
        LabelSelector::parse(self.query.get("labelSelector").unwrap_or_default())
    }
    /// The request's field selector, in the stored shape.
    fn fields(&self) -> ApiResult<FieldSelector> {
        let f = FieldSelector::parse(self.query.get("fieldSelector").unwrap_or_default())?;
        Ok(if self.events_v1 {
            f.map_paths(events::core_path)
        } else {
            f
        })
    }
}

fn ctx_for(req: &ResourceRequest<'_>) -> ApiResult<Ctx> {
    let manager = match req.query.get("fieldManager") {
        Some(m) => m.to_string(),
        None => {
            let ua = header_str(req.headers, header::USER_AGENT);
            let m = ua.split('/').next().unwrap_or_default();
            if m.is_empty() {
                "unknown".to_string()
            } else {
                m.chars().take(128).collect()
            }
        }
    };
    let validation = match req.query.get("fieldValidation") {
        Some("Strict") => FieldValidation::Strict,
        Some("Ignore") => FieldValidation::Ignore,
        Some("Warn") | None => FieldValidation::Warn,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "fieldValidation: invalid value {other:?}: must be Ignore, Warn or Strict"
            )));
        }
    };
    let dry_run = match req.query.get("dryRun") {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "dryRun: unsupported value {other:?}: supported values: \"All\""
            )));
        }
    };
    Ok(Ctx {
        manager,
        dry_run,
        validation,
        warnings: vec![],
        now: Utc::now(),
    })
}

fn present(req: &ResourceRequest<'_>, mut obj: Value, pres: Presentation) -> Value {
    obj["apiVersion"] = Value::String(req.rd.api_version(&req.version));
    match pres {
        Presentation::Full => req.out(obj),
        Presentation::Metadata => table::partial_metadata(&req.out(obj)),
        Presentation::Table(inc) => {
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or(Value::Null);
            table::table(
                &req.rd,
                &req.version,
                &[obj],
                json!({"resourceVersion": rv}),
                inc,
                true,
            )
        }
    }
}

/// The verb of a resource request, as RBAC and the audit log name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Get,
    List,
    Watch,
    Create,
    /// POST pods/{name}/eviction (RBAC: `create` on `pods/eviction`).
    Evict,
    Update,
    Patch,
    Delete,
    DeleteCollection,
}

impl Verb {
    fn of(method: &Method, req: &ResourceRequest<'_>) -> ApiResult<Verb> {
        Ok(match (method.as_str(), req.name.is_some()) {
            ("GET", true) => Verb::Get,
            ("GET", false) if req.query.flag("watch") => Verb::Watch,
            ("GET", false) => Verb::List,
            ("POST", false) => Verb::Create,
            ("POST", true) if req.sub.as_deref() == Some("eviction") => Verb::Evict,
            ("PUT", true) => Verb::Update,
            ("PATCH", true) => Verb::Patch,
            ("DELETE", true) => Verb::Delete,
            ("DELETE", false) => Verb::DeleteCollection,
            _ => {
                return Err(ApiError::method_not_allowed(format!(
                    "{method} is not supported here"
                )));
            }
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create | Verb::Evict => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
        }
    }
}

/// A namespaced resource needs a namespace (except to list or watch across all of
/// them); a cluster-scoped one must not have one.
fn check_scope(req: &ResourceRequest<'_>, method: &Method) -> ApiResult<()> {
    let rd = &req.rd;
    if rd.namespaced == req.ns.is_some()
        || (rd.namespaced && req.name.is_none() && *method == Method::GET)
    {
        return Ok(());
    }
    Err(ApiError::no_route(&format!(
        "{} {}",
        rd.group_resource(),
        if rd.namespaced {
            "needs a namespace"
        } else {
            "is cluster-scoped"
        }
    )))
}

/// Whether the request addresses the status subresource; unknown subresources are 404.
fn is_status_request(req: &ResourceRequest<'_>) -> ApiResult<bool> {
    let rd = &req.rd;
    match req.sub.as_deref() {
        None => Ok(false),
        Some("status") if rd.has_status(&req.version) => Ok(true),
        Some("eviction") if rd.extra_subresources.contains(&"eviction") => Ok(false),
        Some(other) => Err(ApiError::no_route(&format!(
            "{}/{other}",
            rd.group_resource()
        ))),
    }
}

/// Serve a request for a resource: check it, authorize it, run it against the store
/// under one lock, run follow-up work and wake watchers.
fn resource(
    app: &Arc<App>,
    method: &Method,
    req: ResourceRequest<'_>,
    entry: &mut AuditEntry,
) -> ApiResult<Response> {
    check_scope(&req, method)?;
    let is_status = is_status_request(&req)?;
    let pres = Presentation::from_accept(
        header_str(req.headers, header::ACCEPT),
        req.query.get("includeObject"),
    );
    let verb = Verb::of(method, &req)?;
    entry.verb = verb.as_str().to_string();
    authorize(app, entry)?;
    if verb == Verb::Watch {
        return watch_response(app, &req, pres);
    }
    let mut ctx = ctx_for(&req)?;
    let mut store = app.store.lock().expect("store lock");
    let result = run_verb(&mut store, &mut ctx, &req, verb, is_status, pres);
    store.run_hooks();
    let rv = store.current_rv();
    drop(store);
    app.publish(rv);
    let (code, v) = result?;
    Ok(json_response(code, &v, &ctx.warnings))
}

/// Run one (non-watch) verb against the store; the answer's status code and body.
fn run_verb(
    store: &mut Store,
    ctx: &mut Ctx,
    req: &ResourceRequest<'_>,
    verb: Verb,
    is_status: bool,
    pres: Presentation,
) -> ApiResult<(StatusCode, Value)> {
    let rd = &req.rd;
    let ns = req.ns.clone().unwrap_or_default();
    let name = req.name.clone().unwrap_or_default();
    let shown = |code: StatusCode| move |o: Value| (code, present(req, o, pres));
    match verb {
        Verb::Get => store
            .get(&rd.group, &rd.plural, &ns, &name)
            .map(|o| (StatusCode::OK, present(req, (*o).clone(), pres)))
            .ok_or_else(|| ApiError::not_found(&rd.group, &rd.plural, &name)),
        Verb::List => list(store, req, pres).map(|v| (StatusCode::OK, v)),
        Verb::Evict => store
            .evict(ctx, &ns, &name, &decode_body(req)?)
            .map(|v| (StatusCode::CREATED, v)),
        Verb::Create => store
            .create(ctx, rd, &req.version, &ns, decode_body(req)?)
            .map(shown(StatusCode::CREATED)),
        Verb::Update => store
            .replace(ctx, req.target(&ns, &name, is_status), decode_body(req)?)
            .map(shown(StatusCode::OK)),
        Verb::Patch => patch(store, ctx, req, is_status).map(shown(StatusCode::OK)),
        Verb::Delete => {
            let o = store.delete(ctx, rd, &ns, &name, &delete_opts(req)?)?;
            let still_there = store.get(&rd.group, &rd.plural, &ns, &name).is_some();
            let code = if still_there && !ctx.dry_run {
                StatusCode::ACCEPTED
            } else {
                StatusCode::OK
            };
            Ok((code, present(req, o, pres)))
        }
        Verb::DeleteCollection => delete_collection(store, ctx, req).map(|v| (StatusCode::OK, v)),
        Verb::Watch => Err(ApiError::method_not_allowed("watch".to_string())),
    }
}

fn patch(
    store: &mut Store,
    ctx: &mut Ctx,
    req: &ResourceRequest<'_>,
    is_status: bool,
) -> ApiResult<Value> {
    let kind = PatchType::from_content_type(header_str(req.headers, header::CONTENT_TYPE))?;
    let force = req.query.flag("force");
    if force && kind != PatchType::Apply {
        return Err(ApiError::bad_request(
            "force is only allowed for apply patches",
        ));
    }
    let view = req.events_v1.then_some((
        events::from_core as fn(Value) -> Value,
        events::to_core as fn(Value) -> Value,
    ));
    let ns = req.ns.clone().unwrap_or_default();
    let name = req.name.clone().unwrap_or_default();
    store.patch(
        ctx,
        req.target(&ns, &name, is_status),
        kind,
        req.body,
        force,
        view,
    )
}

/// DELETE on a collection: delete every selected object; a list of what was deleted.
fn delete_collection(
    store: &mut Store,
    ctx: &mut Ctx,
    req: &ResourceRequest<'_>,
) -> ApiResult<Value> {
    let rd = &req.rd;
    let ns = req.ns.clone().unwrap_or_default();
    let opts = delete_opts(req)?;
    let labels = req.labels()?;
    let fields = req.fields()?;
    let targets: Vec<String> = store
        .list(&rd.group, &rd.plural, req.ns.as_deref())
        .into_iter()
        .filter(|o| labels.matches(o.pointer("/metadata/labels")) && fields.matches(o))
        .map(|o| meta_str(&o, "name"))
        .collect();
    let mut items = Vec::new();
    for n in targets {
        let deleted = store.delete(ctx, rd, &ns, &n, &opts)?;
        items.push(present(req, deleted, Presentation::Full));
    }
    Ok(
        json!({"kind": format!("{}List", rd.kind), "apiVersion": req.api_version(), "metadata": {}, "items": items}),
    )
}

/// Under `enforce_rbac`, refuse what the stored RBAC objects do not allow.
fn authorize(app: &Arc<App>, entry: &AuditEntry) -> ApiResult<()> {
    // Nodes are authorized by the Node authorizer on a real cluster, not modelled here.
    if !app.config.enforce_rbac
        || entry.user == super::ADMIN
        || entry.user.starts_with("system:node:")
    {
        return Ok(());
    }
    let authz = {
        let store = app.store.lock().expect("store lock");
        let objs: Vec<Value> = [
            "clusterroles",
            "clusterrolebindings",
            "roles",
            "rolebindings",
        ]
        .iter()
        .flat_map(|p| store.list("rbac.authorization.k8s.io", p, None))
        .map(|o| (*o).clone())
        .collect();
        crate::rbac::Authorizer::from_objects(&objs)
    };
    if authz.allows(entry) {
        return Ok(());
    }
    let resource = if entry.subresource.is_empty() {
        entry.resource.clone()
    } else {
        format!("{}/{}", entry.resource, entry.subresource)
    };
    let scope = if entry.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace \"{}\"", entry.namespace)
    };
    let what = if entry.name.is_empty() {
        super::error::gr(&entry.group, &entry.resource)
    } else {
        format!(
            "{} \"{}\"",
            super::error::gr(&entry.group, &entry.resource),
            entry.name
        )
    };
    Err(ApiError::forbidden(format!(
        "{what} is forbidden: User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
        entry.user, entry.verb, entry.group
    )))
}

fn delete_opts(req: &ResourceRequest<'_>) -> ApiResult<DeleteOpts> {
    let mut opts = DeleteOpts {
        grace: req
            .query
            .get("gracePeriodSeconds")
            .and_then(|g| g.parse().ok()),
        propagation: req.query.get("propagationPolicy").map(String::from),
        ..Default::default()
    };
    if !req.body.is_empty() {
        let body: Value = serde_json::from_slice(req.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?;
        opts.merge_body(&body);
    }
    Ok(opts)
}

fn list(store: &Store, req: &ResourceRequest<'_>, pres: Presentation) -> ApiResult<Value> {
    let labels = req.labels()?;
    let fields = req.fields()?;
    let limit: Option<usize> = req
        .query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0);
    let after = match req.query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => Some(continue_after(token)?),
        None => None,
    };
    let key = |o: &Value| (meta_str(o, "namespace"), meta_str(o, "name"));
    let mut items: Vec<Value> = store
        .list(&req.rd.group, &req.rd.plural, req.ns.as_deref())
        .into_iter()
        .filter(|o| after.as_ref().is_none_or(|a| key(o) > *a))
        .filter(|o| labels.matches(o.pointer("/metadata/labels")) && fields.matches(o))
        .map(|o| {
            let mut v = (*o).clone();
            v["apiVersion"] = Value::String(req.rd.api_version(&req.version));
            v
        })
        .collect();
    let mut meta = json!({ "resourceVersion": store.current_rv().to_string() });
    if let Some(l) = limit
        && items.len() > l
    {
        items.truncate(l);
        let (ns, name) = key(items.last().expect("limit > 0"));
        meta["continue"] = Value::String(continue_token(&ns, &name));
        meta["remainingItemCount"] = Value::Null;
    }
    if !matches!(pres, Presentation::Table(_)) {
        items = items.into_iter().map(|o| req.out(o)).collect();
    }
    Ok(match pres {
        Presentation::Full => json!({
            "kind": format!("{}List", req.rd.kind),
            "apiVersion": req.api_version(),
            "metadata": meta,
            "items": items,
        }),
        Presentation::Metadata => table::partial_metadata_list(&items, meta),
        Presentation::Table(inc) => table::table(&req.rd, &req.version, &items, meta, inc, true),
    })
}

/// The continue token of a list page that ended at `ns`/`name`.
fn continue_token(ns: &str, name: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{ns}\n{name}"))
}

/// The (namespace, name) a continue token says the previous page ended at.
fn continue_after(token: &str) -> ApiResult<(String, String)> {
    use base64::Engine;
    let invalid = || ApiError::bad_request("invalid continue token");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| invalid())?;
    let s = String::from_utf8_lossy(&raw).into_owned();
    let (ns, name) = s.split_once('\n').ok_or_else(invalid)?;
    Ok((ns.to_string(), name.to_string()))
}

fn watch_response(
    app: &Arc<App>,
    req: &ResourceRequest<'_>,
    pres: Presentation,
) -> ApiResult<Response> {
    let w = WatchRequest {
        rd: req.rd.clone(),
        version: req.version.clone(),
        namespace: req.ns.clone(),
        labels: req.labels()?,
        fields: req.fields()?,
        resource_version: req.query.get("resourceVersion").map(String::from),
        bookmarks: req.query.flag("allowWatchBookmarks"),
        send_initial_events: req.query.flag("sendInitialEvents"),
        timeout: req
            .query
            .get("timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .map(std::time::Duration::from_secs),
        presentation: pres,
        convert: req
            .events_v1
            .then_some(events::from_core as fn(Value) -> Value),
    };
    let rx = watch::start(app.clone(), w);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_like_the_api_server() {
        let res =
            |g: &str, v: &str, p: &str, ns: Option<&str>, n: Option<&str>, s: Option<&str>| {
                Route::Resource {
                    group: g.into(),
                    version: v.into(),
                    plural: p.into(),
                    ns: ns.map(String::from),
                    name: n.map(String::from),
                    sub: s.map(String::from),
                }
            };
        assert_eq!(
            parse_path("/api/v1/namespaces"),
            res("", "v1", "namespaces", None, None, None)
        );
        assert_eq!(
            parse_path("/api/v1/namespaces/default"),
            res("", "v1", "namespaces", None, Some("default"), None)
        );
        assert_eq!(
            parse_path("/api/v1/namespaces/x/status"),
            res("", "v1", "namespaces", None, Some("x"), Some("status"))
        );
        assert_eq!(
            parse_path("/api/v1/namespaces/d/pods"),
            res("", "v1", "pods", Some("d"), None, None)
        );
        assert_eq!(
            parse_path("/api/v1/namespaces/d/pods/p/eviction"),
            res("", "v1", "pods", Some("d"), Some("p"), Some("eviction"))
        );
        assert_eq!(
            parse_path("/api/v1/pods"),
            res("", "v1", "pods", None, None, None)
        );
        assert_eq!(
            parse_path("/apis/osroll.io/v1alpha1/osupgrades/u/status"),
            res(
                "osroll.io",
                "v1alpha1",
                "osupgrades",
                None,
                Some("u"),
                Some("status")
            )
        );
        assert_eq!(parse_path("/apis/apps"), Route::Group("apps".into()));
        assert_eq!(
            parse_path("/openapi/v3/apis/osroll.io/v1alpha1"),
            Route::OpenApiV3("osroll.io".into(), "v1alpha1".into())
        );
    }

    #[test]
    fn query_strings_decode() {
        let q = parse_query(Some(
            "labelSelector=osroll.io%2Fnode%3Dn1&fieldSelector=metadata.name%3Dx&watch=1&a+b=c",
        ));
        assert_eq!(q.get("labelSelector"), Some("osroll.io/node=n1"));
        assert_eq!(q.get("fieldSelector"), Some("metadata.name=x"));
        assert!(q.flag("watch"));
        assert_eq!(q.get("a b"), Some("c"));
    }
}
