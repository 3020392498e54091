//! Watch streams: newline-delimited JSON events from a resourceVersion, with the
//! semantics clients rely on: an unset or `0` version starts with the current objects as
//! ADDED, `sendInitialEvents=true` ends the initial burst with an annotated BOOKMARK,
//! `allowWatchBookmarks` adds periodic BOOKMARKs, a version older than the kept history
//! answers an ERROR event with 410 Expired, and selector transitions turn MODIFIED into
//! ADDED or DELETED for the watcher that sees the object enter or leave its view.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::App;
use super::resources::ResourceDef;
use super::selectors::{FieldSelector, LabelSelector};
use super::store::{Event, EventType, Gone};
use super::table::{self, Presentation};

/// What a watch request asked for.
#[derive(Debug, Clone)]
pub struct WatchRequest {
    /// Resource watched.
    pub rd: Arc<ResourceDef>,
    /// Version the client speaks.
    pub version: String,
    /// Namespace, or all.
    pub namespace: Option<String>,
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// `resourceVersion` (None or "0": start from the current state).
    pub resource_version: Option<String>,
    /// `allowWatchBookmarks`.
    pub bookmarks: bool,
    /// `sendInitialEvents`.
    pub send_initial_events: bool,
    /// `timeoutSeconds`.
    pub timeout: Option<Duration>,
    /// Object, Table or metadata-only events.
    pub presentation: Presentation,
    /// Shape conversion of stored objects for this client (events.k8s.io Events).
    pub convert: Option<fn(Value) -> Value>,
}

impl WatchRequest {
    fn visible(&self, obj: &Value) -> bool {
        let ns_ok = self.namespace.as_deref().is_none_or(|ns| {
            obj.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default()
                == ns
        });
        ns_ok && self.labels.matches(obj.pointer("/metadata/labels")) && self.fields.matches(obj)
    }

    /// Translate a stored change into what this watcher sees, if anything.
    fn translate(&self, ev: &Event) -> Option<(EventType, Value)> {
        if ev.group != self.rd.group || ev.plural != self.rd.plural {
            return None;
        }
        let now = self.visible(&ev.object);
        match ev.kind {
            EventType::Added | EventType::Deleted => now.then(|| (ev.kind, (*ev.object).clone())),
            EventType::Modified => {
                let before = ev.prev.as_deref().is_some_and(|p| self.visible(p));
                match (before, now) {
                    (true, true) => Some((EventType::Modified, (*ev.object).clone())),
                    (false, true) => Some((EventType::Added, (*ev.object).clone())),
                    (true, false) => {
                        let mut last = (**ev.prev.as_ref().expect("visible before")).clone();
                        last["metadata"]["resourceVersion"] = Value::String(ev.rv.to_string());
                        Some((EventType::Deleted, last))
                    }
                    (false, false) => None,
                }
            }
        }
    }

    fn present(&self, mut obj: Value, first: &mut bool) -> Value {
        obj["apiVersion"] = Value::String(self.rd.api_version(&self.version));
        let shaped = |o: Value| match self.convert {
            Some(c) => c(o),
            None => o,
        };
        match self.presentation {
            Presentation::Full => shaped(obj),
            Presentation::Metadata => table::partial_metadata(&shaped(obj)),
            Presentation::Table(inc) => {
                let t = table::table(&self.rd, &self.version, &[obj], json!({}), inc, *first);
                *first = false;
                t
            }
        }
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({ "resourceVersion": rv.to_string() });
        if initial_end {
            meta["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
        }
        let mut obj = json!({ "kind": self.rd.kind, "apiVersion": self.rd.api_version(&self.version), "metadata": meta });
        if let Some(c) = self.convert {
            obj = c(obj);
        }
        line(json!({ "type": "BOOKMARK", "object": obj }))
    }
}

fn line(v: Value) -> Bytes {
    let mut s = v.to_string();
    s.push('\n');
    Bytes::from(s)
}

fn gone(rv: u64, oldest: u64) -> Bytes {
    line(json!({
        "type": "ERROR",
        "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("too old resource version: {rv} ({oldest})"),
            "reason": "Expired", "code": 410,
        },
    }))
}

/// Start streaming `req`; the returned receiver yields the response body chunks.
pub fn start(app: Arc<App>, req: WatchRequest) -> mpsc::Receiver<Result<Bytes, Infallible>> {
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        if let Err(()) = run(app, req, tx).await {
            tracing::trace!("watch ended: client went away");
        }
    });
    rx
}

async fn send(tx: &mpsc::Sender<Result<Bytes, Infallible>>, b: Bytes) -> Result<(), ()> {
    tx.send(Ok(b)).await.map_err(|_| ())
}

/// Stream `req` to `tx`: the initial state (or nothing, resuming from a version), then
/// every visible change, with bookmarks, until the timeout, shutdown or the client
/// leaves (`Err`).
async fn run(
    app: Arc<App>,
    req: WatchRequest,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
) -> Result<(), ()> {
    let mut head = app.head.subscribe();
    let mut shutdown = app.shutdown.subscribe();
    let mut first = true;
    let (initial, mut last_rv) = match starting_point(&app, &req) {
        Ok(s) => s,
        Err((rv, oldest)) => return send(&tx, gone(rv, oldest)).await,
    };
    for obj in initial {
        let ev = json!({"type": "ADDED", "object": req.present(obj, &mut first)});
        send(&tx, line(ev)).await?;
    }
    if req.send_initial_events {
        send(&tx, req.bookmark(last_rv, true)).await?;
    }
    let deadline = req.timeout.map(|t| Instant::now() + t);
    let period = app.config.bookmark_interval;
    let mut next_bookmark = Instant::now() + period;
    loop {
        match changes_since(&app, &req, &mut last_rv) {
            Ok(evs) => {
                for mut e in evs {
                    let obj = e["object"].take();
                    e["object"] = req.present(obj, &mut first);
                    send(&tx, line(e)).await?;
                }
            }
            Err(g) => return send(&tx, gone(last_rv, g.oldest)).await,
        }
        if req.bookmarks && Instant::now() >= next_bookmark {
            send(&tx, req.bookmark(last_rv, false)).await?;
            next_bookmark = Instant::now() + period;
        }
        let wake_at = match (deadline, req.bookmarks) {
            (Some(d), true) => d.min(next_bookmark),
            (Some(d), false) => d,
            (None, true) => next_bookmark,
            (None, false) => Instant::now() + Duration::from_secs(3600),
        };
        tokio::select! {
            changed = head.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
            _ = tokio::time::sleep_until(wake_at) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(());
                }
            }
            _ = shutdown.changed() => return Ok(()),
            _ = tx.closed() => return Err(()),
        }
    }
}

/// Where a watch starts: the visible objects now (from the current state, or with
/// `sendInitialEvents`) and the version they are at, or nothing and the requested
/// version; `Err((requested, oldest kept))` when that version is too old.
fn starting_point(app: &App, req: &WatchRequest) -> Result<(Vec<Value>, u64), (u64, u64)> {
    let from_now = matches!(req.resource_version.as_deref(), None | Some("") | Some("0"));
    let store = app.store.lock().expect("store lock");
    if req.send_initial_events || from_now {
        let objs: Vec<Value> = store
            .list(&req.rd.group, &req.rd.plural, req.namespace.as_deref())
            .into_iter()
            .filter(|o| req.visible(o))
            .map(|o| (*o).clone())
            .collect();
        return Ok((objs, store.current_rv()));
    }
    let rv: u64 = req
        .resource_version
        .as_deref()
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    match store.events_after(rv) {
        Ok(_) => Ok((vec![], rv)),
        Err(g) => Err((rv, g.oldest)),
    }
}

/// The events (`{"type", "object"}`, objects not yet presented) this watcher sees
/// after `last_rv`, which moves to the current version.
fn changes_since(app: &App, req: &WatchRequest, last_rv: &mut u64) -> Result<Vec<Value>, Gone> {
    let store = app.store.lock().expect("store lock");
    let evs = store.events_after(*last_rv)?;
    let out = evs
        .iter()
        .filter_map(|e| req.translate(e))
        .map(|(k, o)| json!({"type": k.as_str(), "object": o}))
        .collect();
    *last_rv = store.current_rv();
    Ok(out)
}
