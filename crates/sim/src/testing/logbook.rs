//! What each in-process agent and controller logged, kept per source so that a failed
//! cluster test can print the last lines of each (see `Cluster::diagnosis`). A source is
//! a span made by [`span`] around the component's future; every event inside it (at
//! INFO and above) is kept, up to [`KEPT`] lines per source. [`install`] sets the
//! process's tracing subscriber: this capture, plus the usual test output filtered by
//! `RUST_LOG`.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// Lines kept per source.
pub const KEPT: usize = 200;

/// The name of the spans that mark a source.
const SPAN: &str = "osroll_log";

fn book() -> &'static Mutex<BTreeMap<String, VecDeque<String>>> {
    static BOOK: OnceLock<Mutex<BTreeMap<String, VecDeque<String>>>> = OnceLock::new();
    BOOK.get_or_init(Default::default)
}

/// A span whose events are kept under `source` (e.g. `agent node-3`).
pub fn span(source: &str) -> tracing::Span {
    tracing::info_span!(SPAN, source = source)
}

/// Set the process's subscriber (once; later calls, or a subscriber set by someone
/// else first, leave it as it is, and then nothing is captured).
pub fn install() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let fmt = tracing_subscriber::fmt::layer()
            .with_test_writer()
            .with_filter(tracing_subscriber::EnvFilter::from_default_env());
        let _ = tracing_subscriber::registry()
            .with(fmt)
            .with(Capture.with_filter(LevelFilter::INFO))
            .try_init();
    });
}

/// The last `n` lines of every source whose name contains `pattern`, by source.
pub fn tail(pattern: &str, n: usize) -> BTreeMap<String, Vec<String>> {
    let book = book().lock().expect("logbook lock");
    book.iter()
        .filter(|(source, _)| source.contains(pattern))
        .map(|(source, lines)| {
            let skip = lines.len().saturating_sub(n);
            (source.clone(), lines.iter().skip(skip).cloned().collect())
        })
        .collect()
}

/// The source recorded on a span.
struct Source(String);

/// Collects an event's or span's fields as text.
#[derive(Default)]
struct Text {
    message: String,
    fields: String,
    source: Option<String>,
}

impl Visit for Text {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "source" => self.source = Some(value.to_string()),
            "message" => self.message = value.to_string(),
            name => {
                let _ = write!(self.fields, " {name}={value}");
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            name => {
                let _ = write!(self.fields, " {name}={value:?}");
            }
        }
    }
}

/// The layer that keeps events by source.
struct Capture;

impl<S> Layer<S> for Capture
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        if attrs.metadata().name() != SPAN {
            return;
        }
        let mut text = Text::default();
        attrs.record(&mut text);
        if let (Some(source), Some(span)) = (text.source, ctx.span(id)) {
            span.extensions_mut().insert(Source(source));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        let Some(source) = scope
            .into_iter()
            .find_map(|s| s.extensions().get::<Source>().map(|x| x.0.clone()))
        else {
            return;
        };
        let mut text = Text::default();
        event.record(&mut text);
        let meta = event.metadata();
        let line = format!(
            "{} {}: {}{}",
            meta.level(),
            meta.target(),
            text.message,
            text.fields
        );
        let mut book = book().lock().expect("logbook lock");
        let lines = book.entry(source).or_default();
        if lines.len() == KEPT {
            lines.pop_front();
        }
        lines.push_back(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Instrument;

    #[tokio::test]
    async fn events_in_a_source_span_are_kept_by_source() {
        install();
        async {
            tracing::warn!(code = 403, "patching node: Forbidden");
            tracing::debug!("not kept");
        }
        .instrument(span("agent logbook-test-node"))
        .await;
        tracing::warn!("outside any source");
        let tail = tail("logbook-test-node", 10);
        let lines = &tail["agent logbook-test-node"];
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("WARN"), "{lines:?}");
        assert!(
            lines[0].contains("patching node: Forbidden code=403"),
            "{lines:?}"
        );
    }
}
