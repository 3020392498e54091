use super::*;
use osroll_api::OSUpgradeProgressSpec;

fn progress(name: &str, node: &str) -> OSUpgradeProgress {
    OSUpgradeProgress::new(
        name,
        OSUpgradeProgressSpec {
            node_name: node.into(),
            ..Default::default()
        },
    )
}

#[tokio::test]
async fn lists_this_nodes_objects_with_their_status_and_notices_changes() {
    let dir = tempfile::tempdir().unwrap();
    let src = FileSource::new(dir.path(), "n1", Duration::from_millis(5));
    FileSource::write_progress(dir.path(), &progress("p1", "n1")).unwrap();
    FileSource::write_progress(dir.path(), &progress("p2", "n2")).unwrap();
    let l = src.list().await.unwrap();
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].metadata.name.as_deref(), Some("p1"));
    assert_eq!(l[0].status, None);

    let st = OSUpgradeProgressStatus {
        retry_count: 3,
        ..Default::default()
    };
    src.patch_status("p1", &st).await.unwrap();
    assert_eq!(src.list().await.unwrap()[0].status, Some(st));

    // Nothing changed: returns at the deadline. A new spec file: returns early.
    let t = Instant::now();
    src.changed(Duration::from_millis(30)).await;
    assert!(t.elapsed() >= Duration::from_millis(30));
    FileSource::write_progress(dir.path(), &progress("p3", "n1")).unwrap();
    let t = Instant::now();
    src.changed(Duration::from_secs(30)).await;
    assert!(t.elapsed() < Duration::from_secs(30));
    assert_eq!(src.list().await.unwrap().len(), 2);
}

#[tokio::test]
async fn node_labels_merge() {
    let dir = tempfile::tempdir().unwrap();
    let src = FileSource::new(dir.path(), "n1", Duration::from_millis(5));
    src.label_node(&BTreeMap::from([
        ("a".into(), "1".into()),
        ("b".into(), "1".into()),
    ]))
    .await
    .unwrap();
    src.label_node(&BTreeMap::from([("b".into(), "2".into())]))
        .await
        .unwrap();
    let got: BTreeMap<String, String> =
        serde_json::from_slice(&std::fs::read(FileSource::labels_path(dir.path())).unwrap())
            .unwrap();
    assert_eq!(
        got,
        BTreeMap::from([("a".into(), "1".into()), ("b".into(), "2".into())])
    );
}
