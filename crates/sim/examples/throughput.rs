//! Measure the test API server: creates per second through kube-rs over HTTPS (with 4
//! concurrent clients), list latency, and the delay from a write to its watch event.
//! Prints figures; asserts nothing. `cargo run -p osroll-sim --example throughput`.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = osroll_sim::TestServer::start()?;
    let client = server.client().await?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let per_task = 500;
    let tasks = 4;
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let api = api.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..per_task {
                let cm: ConfigMap = serde_json::from_value(
                    json!({"metadata": {"name": format!("cm-{t}-{i}")}, "data": {"k": "v"}}),
                )
                .unwrap();
                api.create(&PostParams::default(), &cm).await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await?;
    }
    let n = per_task * tasks;
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "creates: {n} in {secs:.2}s = {:.0}/s ({tasks} concurrent clients)",
        n as f64 / secs
    );
    let t1 = Instant::now();
    let list = api.list(&ListParams::default()).await?;
    println!(
        "list of {} objects: {:.1} ms",
        list.items.len(),
        t1.elapsed().as_secs_f64() * 1000.0
    );
    let rv = list.metadata.resource_version.unwrap_or_default();
    let mut w = api
        .watch(&WatchParams::default().disable_bookmarks(), &rv)
        .await?
        .boxed();
    let mut delays = Vec::new();
    for i in 0..200 {
        let t = Instant::now();
        api.patch(
            "cm-0-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": i.to_string()}})),
        )
        .await?;
        loop {
            match tokio::time::timeout(Duration::from_secs(5), w.next()).await? {
                Some(Ok(WatchEvent::Modified(_))) => break,
                Some(Ok(_)) => continue,
                other => anyhow::bail!("watch ended: {other:?}"),
            }
        }
        delays.push(t.elapsed());
    }
    delays.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "write -> watch event (200 patches): median {:.2} ms, p95 {:.2} ms, max {:.2} ms",
        ms(delays[delays.len() / 2]),
        ms(delays[delays.len() * 95 / 100]),
        ms(delays[delays.len() - 1])
    );
    Ok(())
}
