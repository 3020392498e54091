//! The one loop every controller task inside the test API server runs (namespace
//! controller, garbage collector, node lifecycle controller), so none of them polls or
//! sleeps blindly: the task waits until its oldest queued work is due or a write wakes
//! it, does what is due under the store lock, runs the follow-up hooks and tells
//! watchers.

use std::sync::Arc;
use std::time::Instant;

use super::App;
use super::store::Store;

/// Run a controller: `due` says when its oldest queued work is due (None: nothing
/// queued), `work` does what is due at the given time and says whether it did anything.
/// Returns when the server shuts down.
pub async fn run<D, W>(app: Arc<App>, due: D, mut work: W)
where
    D: Fn(&Store) -> Option<Instant>,
    W: FnMut(&mut Store, Instant) -> bool,
{
    let mut head = app.head.subscribe();
    loop {
        let next = due(&app.store.lock().expect("store lock"));
        let woken = match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at.into()) => true,
                    changed = head.changed() => changed.is_ok(),
                }
            }
            None => head.changed().await.is_ok(),
        };
        if !woken {
            return;
        }
        let rv = {
            let mut store = app.store.lock().expect("store lock");
            if !work(&mut store, Instant::now()) {
                continue;
            }
            store.run_hooks();
            store.current_rv()
        };
        app.publish(rv);
    }
}
