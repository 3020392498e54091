//! One request for a resource: decode it, check its scope and subresource, authorize
//! it, run its verb against the store under one lock and present the result (a list
//! page, a Table, metadata only, or a watch stream).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use chrono::Utc;
use serde_json::{Value, json};

use super::{Query, json_response};
use crate::server::App;
use crate::server::audit::AuditEntry;
use crate::server::delete::DeleteOpts;
use crate::server::error::{ApiError, ApiResult};
use crate::server::events;
use crate::server::patch::PatchType;
use crate::server::resources::ResourceDef;
use crate::server::selectors::{FieldSelector, LabelSelector};
use crate::server::store::{Store, meta_str};
use crate::server::table::{self, Presentation};
use crate::server::watch::{self, WatchRequest};
use crate::server::write::{Ctx, FieldValidation, Requester, Target};

/// A request for a resource, with its route resolved.
pub(super) struct ResourceRequest<'a> {
    pub(super) rd: Arc<ResourceDef>,
    pub(super) events_v1: bool,
    pub(super) version: String,
    pub(super) ns: Option<String>,
    pub(super) name: Option<String>,
    pub(super) sub: Option<String>,
    pub(super) headers: &'a HeaderMap,
    pub(super) query: &'a Query,
    pub(super) body: &'a [u8],
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
        if let Some(custom) = &self.rd.custom {
            let selectable = custom
                .versions
                .get(&self.version)
                .map(|v| v.selectable.as_slice())
                .unwrap_or_default();
            // A CRD answers only metadata.name, metadata.namespace and its selectableFields.
            if let Some(p) = f.paths().find(|p| {
                !matches!(*p, "metadata.name" | "metadata.namespace")
                    && !selectable.iter().any(|s| s == p)
            }) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {p}"
                )));
            }
        }
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
        requester: None,
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
pub(super) fn resource(
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
    ctx.requester = Some(Requester {
        user: entry.user.clone(),
        node_name: entry.node_name.clone(),
    });
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

/// Under `enforce_rbac`, refuse what neither the Node authorizer's stand-in nor the
/// stored RBAC objects allow.
fn authorize(app: &Arc<App>, entry: &AuditEntry) -> ApiResult<()> {
    if !app.config.enforce_rbac
        || entry.user == crate::server::ADMIN
        || crate::rbac::node_allows(entry)
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
        crate::server::error::gr(&entry.group, &entry.resource)
    } else {
        format!(
            "{} \"{}\"",
            crate::server::error::gr(&entry.group, &entry.resource),
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
