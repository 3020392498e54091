//! Catalog loading, resolution and caching.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use k8s_openapi::jiff::Timestamp;
use osroll_api::freshness;

use super::*;
use crate::fake::FakeCluster;

const SUM: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

fn catalog_text(url: &str) -> String {
    format!(
        "stable: \"2.0\"\nblocked: [\"1.9\"]\nimages:\n  - version: \"2.0\"\n    url: {url}\n    checksum: {SUM}\n    size: 10\n  - version: \"1.9\"\n    url: https://img/1.9\n    checksum: {SUM}\n  - version: \"1.8\"\n    url: https://img/1.8\n    checksum: nope\n"
    )
}

struct MapFetcher(HashMap<String, String>);

impl UrlFetcher for MapFetcher {
    fn get<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<Option<String>, FetchError>> {
        Box::pin(async move {
            if url.contains("down") {
                return Err(FetchError::Request {
                    url: url.into(),
                    source: Box::new(std::io::Error::new(
                        std::io::ErrorKind::ConnectionRefused,
                        "connection refused",
                    )),
                });
            }
            Ok(self.0.get(url).cloned())
        })
    }
}

fn spec(version: &str) -> OSUpgradeSpec {
    OSUpgradeSpec {
        version: version.into(),
        ..Default::default()
    }
}

fn inline(text: String) -> CatalogSource {
    CatalogSource {
        inline: Some(text),
        ..Default::default()
    }
}

#[tokio::test]
async fn exactly_one_source_is_required() {
    let c = FakeCluster::default();
    let f = MapFetcher(HashMap::new());
    let both = CatalogSource {
        inline: Some("x".into()),
        url: Some("https://a".into()),
        ..Default::default()
    };
    let e = load(&both, "ns", &c, &f).await.unwrap_err();
    assert_eq!(e.reason, RejectionReason::CatalogInvalid);
    assert!(e.message.contains("inline, url"), "{}", e.message);
    let e = load(&CatalogSource::default(), "ns", &c, &f)
        .await
        .unwrap_err();
    assert!(e.message.contains("sets none"), "{}", e.message);
    let d = load(&inline("images: []".into()), "ns", &c, &f)
        .await
        .unwrap();
    assert_eq!(
        (d.text.as_str(), d.origin.as_str(), d.signature),
        ("images: []", "inline", None)
    );
    assert!(c.calls().is_empty(), "inline catalogs need no API call");
}

#[tokio::test]
async fn url_catalogs_come_with_their_signature_file() {
    let c = FakeCluster::default();
    let f = MapFetcher(
        [
            ("https://cat/c.yaml".to_string(), "images: []".to_string()),
            ("https://cat/c.yaml.minisig".to_string(), "sig".to_string()),
            ("https://cat/u.yaml".to_string(), "images: []".to_string()),
        ]
        .into(),
    );
    let src = |u: &str| CatalogSource {
        url: Some(u.into()),
        ..Default::default()
    };
    let d = load(&src("https://cat/c.yaml"), "ns", &c, &f)
        .await
        .unwrap();
    assert_eq!(
        (d.text.as_str(), d.signature.as_deref()),
        ("images: []", Some("sig"))
    );
    let d = load(&src("https://cat/u.yaml"), "ns", &c, &f)
        .await
        .unwrap();
    assert_eq!(d.signature, None, "no .minisig is an unsigned catalog");
    let e = load(&src("https://cat/missing.yaml"), "ns", &c, &f)
        .await
        .unwrap_err();
    assert_eq!(e.reason, RejectionReason::CatalogUnavailable);
    assert!(
        e.message.contains("https://cat/missing.yaml") && e.message.contains("404"),
        "{}",
        e.message
    );
    let e = load(&src("https://down/c.yaml"), "ns", &c, &f)
        .await
        .unwrap_err();
    assert!(e.message.contains("connection refused"), "{}", e.message);
}

#[tokio::test]
async fn config_map_catalogs_are_read_from_the_controller_namespace() {
    let cm = |data: &[(&str, &str)]| ConfigMap {
        metadata: ObjectMeta::default(),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    };
    let c = FakeCluster {
        config_maps: [
            (
                "osroll-system/cat".to_string(),
                cm(&[
                    (CONFIG_MAP_KEY, "images: []"),
                    (CONFIG_MAP_SIGNATURE_KEY, "s"),
                ]),
            ),
            ("osroll-system/empty".to_string(), cm(&[("other", "x")])),
        ]
        .into(),
        ..Default::default()
    };
    let f = MapFetcher(HashMap::new());
    let src = |n: &str| CatalogSource {
        config_map: Some(n.into()),
        ..Default::default()
    };
    let d = load(&src("cat"), "osroll-system", &c, &f).await.unwrap();
    assert_eq!(
        (d.text.as_str(), d.signature.as_deref()),
        ("images: []", Some("s"))
    );
    assert_eq!(d.origin, "configmap osroll-system/cat");
    let e = load(&src("empty"), "osroll-system", &c, &f)
        .await
        .unwrap_err();
    assert!(
        e.message
            .contains("osroll-system/empty has no key catalog.yaml"),
        "{}",
        e.message
    );
    let e = load(&src("nope"), "osroll-system", &c, &f)
        .await
        .unwrap_err();
    assert_eq!(e.reason, RejectionReason::CatalogUnavailable);
    assert!(
        e.message.contains("osroll-system/nope does not exist"),
        "{}",
        e.message
    );
}

/// The time and newest accepted serial the catalog is resolved at.
fn now() -> (Timestamp, Option<u64>) {
    ("2026-12-05T00:00:00Z".parse().unwrap(), Some(5))
}

/// A trusted comment with `serial`, expiring a day after [`now`].
fn fresh(serial: u64) -> String {
    freshness::comment(&freshness::Freshness {
        serial,
        expires: "2026-12-06T00:00:00Z".parse().unwrap(),
    })
}

fn doc(text: String, signature: Option<String>) -> CatalogDoc {
    CatalogDoc {
        text,
        signature,
        origin: "inline".into(),
    }
}

#[test]
fn resolution_accepts_with_warnings_and_rejects_with_reasons() {
    let t = TrustPolicy::default();
    let d = doc(catalog_text("https://img/2.0"), None);
    let r = resolve(&d, &spec("stable"), &[], &t, now()).unwrap();
    assert_eq!(r.image.version, "2.0");
    assert_eq!(
        r.warnings.len(),
        1,
        "the malformed 1.8 checksum: {:?}",
        r.warnings
    );
    assert_eq!(r.digest, osroll_api::catalog::digest(d.text.as_bytes()));
    assert_eq!(r.signed, None);
    assert_eq!(
        resolve(&d, &spec("1.9"), &[], &t, now())
            .unwrap_err()
            .reason,
        RejectionReason::VersionBlocked
    );
    assert_eq!(
        resolve(&d, &spec("3.0"), &[], &t, now())
            .unwrap_err()
            .reason,
        RejectionReason::VersionNotInCatalog
    );
    let newer = [NodeVersion {
        node: "n1".into(),
        version: Some("2.1".into()),
    }];
    let e = resolve(&d, &spec("2.0"), &newer, &t, now()).unwrap_err();
    assert_eq!(e.reason, RejectionReason::Downgrade);
    assert!(e.message.contains("n1"));
    let mut allow = spec("2.0");
    allow.allow_downgrade = true;
    assert!(resolve(&d, &allow, &newer, &t, now()).is_ok());
}

#[test]
fn image_source_policy_applies_to_the_resolved_url() {
    let t = TrustPolicy::default();
    let d = doc(catalog_text("http://mirror.local/2.0"), None);
    let e = resolve(&d, &spec("2.0"), &[], &t, now()).unwrap_err();
    assert_eq!(e.reason, RejectionReason::ImageSourceNotAllowed);
    assert!(
        e.message.contains("http://mirror.local/2.0"),
        "{}",
        e.message
    );
    let mut s = spec("2.0");
    s.allow_http_images = true;
    assert!(resolve(&d, &s, &[], &t, now()).is_ok());
}

#[test]
fn signatures_are_checked_and_the_signed_catalog_is_kept() {
    let (pk, sk) = osroll_api::signing::keygen().unwrap();
    let keys = osroll_api::signing::parse_public_keys(&pk).unwrap();
    let text = catalog_text("https://img/2.0");
    let sig = osroll_api::signing::sign(text.as_bytes(), &sk, None, Some(&fresh(5))).unwrap();
    let strict = TrustPolicy {
        keys,
        require_signed: true,
    };
    let r = resolve(
        &doc(text.clone(), Some(sig.clone())),
        &spec("2.0"),
        &[],
        &strict,
        now(),
    )
    .unwrap();
    assert_eq!(
        r.signed,
        Some(SignedCatalog {
            content: text.clone(),
            signature: sig.clone()
        })
    );
    let e = resolve(&doc(text.clone(), None), &spec("2.0"), &[], &strict, now()).unwrap_err();
    assert_eq!(e.reason, RejectionReason::SignatureMissing);
    assert_eq!(r.serial, Some(5));
    let tampered = text.replace("size: 10", "size: 11");
    let e = resolve(&doc(tampered, Some(sig)), &spec("2.0"), &[], &strict, now()).unwrap_err();
    assert_eq!(e.reason, RejectionReason::SignatureInvalid);
}

#[test]
fn cache_keeps_acceptance_per_generation_and_retries_rejections() {
    let cache = ResolutionCache::new(Duration::from_secs(30));
    let t0 = Instant::now();
    let ok = resolve(
        &doc(catalog_text("https://img/2.0"), None),
        &spec("2.0"),
        &[],
        &TrustPolicy::default(),
        now(),
    );
    cache.put("u1", 1, t0, ok.clone());
    assert_eq!(cache.get("u1", 1, t0 + Duration::from_secs(3600)), Some(ok));
    assert_eq!(
        cache.get("u1", 2, t0),
        None,
        "a new generation resolves again"
    );
    let rej: Result<Resolved, Rejection> = Err(unavailable("down".into()));
    cache.put("u2", 1, t0, rej.clone());
    assert_eq!(cache.get("u2", 1, t0 + Duration::from_secs(10)), Some(rej));
    assert_eq!(cache.get("u2", 1, t0 + Duration::from_secs(31)), None);
    cache.forget("u1");
    assert_eq!(cache.get("u1", 1, t0), None);
}

#[tokio::test]
async fn http_fetcher_reads_bodies_and_refuses_plain_http_by_default() {
    let app = axum::Router::new()
        .route("/c.yaml", axum::routing::get(|| async { "images: []" }))
        .route(
            "/big",
            axum::routing::get(|| async { vec![b'a'; MAX_CATALOG_BYTES + 10] }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let lax = HttpFetcher::new(true, None).unwrap();
    assert_eq!(
        lax.get(&format!("http://{addr}/c.yaml")).await.unwrap(),
        Some("images: []".into())
    );
    assert_eq!(
        lax.get(&format!("http://{addr}/missing")).await.unwrap(),
        None
    );
    let e = lax.get(&format!("http://{addr}/big")).await.unwrap_err();
    assert!(e.to_string().contains("larger than"), "{e}");
    let strict = HttpFetcher::new(false, None).unwrap();
    assert!(
        strict.get(&format!("http://{addr}/c.yaml")).await.is_err(),
        "https only"
    );
    server.abort();
}

#[test]
fn expired_older_and_unmarked_signed_catalogs_are_refused() {
    let (pk, sk) = osroll_api::signing::keygen().unwrap();
    let strict = TrustPolicy {
        keys: osroll_api::signing::parse_public_keys(&pk).unwrap(),
        require_signed: true,
    };
    let text = catalog_text("https://img/2.0");
    let signed = |comment: &str| {
        let sig = osroll_api::signing::sign(text.as_bytes(), &sk, None, Some(comment)).unwrap();
        doc(text.clone(), Some(sig))
    };
    let old = resolve(&signed(&fresh(4)), &spec("2.0"), &[], &strict, now()).unwrap_err();
    assert_eq!(old.reason, RejectionReason::CatalogRolledBack, "{old}");
    assert!(
        old.message.contains("serial 4 is older than serial 5"),
        "{old}"
    );
    let later = ("2026-12-07T00:00:00Z".parse().unwrap(), None);
    let expired = resolve(&signed(&fresh(6)), &spec("2.0"), &[], &strict, later).unwrap_err();
    assert_eq!(expired.reason, RejectionReason::CatalogExpired, "{expired}");
    let bare = resolve(&signed("release 1"), &spec("2.0"), &[], &strict, now()).unwrap_err();
    assert_eq!(bare.reason, RejectionReason::CatalogFreshnessMissing);
    // Not required: a signature without freshness is still accepted.
    let lax = TrustPolicy {
        require_signed: false,
        ..strict
    };
    assert!(resolve(&signed("release 1"), &spec("2.0"), &[], &lax, now()).is_ok());
}

#[test]
fn oversized_catalogs_are_refused_naming_the_limit() {
    let mut text = String::from("images:\n");
    let mut n = 0;
    while text.len() <= osroll_api::catalog::MAX_CATALOG_BYTES {
        text += &format!(
            "  - version: \"1.{n}\"\n    url: https://img/{n}\n    checksum: sha256:{}\n",
            "a".repeat(64)
        );
        n += 1;
    }
    let e = resolve(
        &doc(text, None),
        &spec("1.0"),
        &[],
        &TrustPolicy::default(),
        now(),
    )
    .unwrap_err();
    assert_eq!(e.reason, RejectionReason::CatalogTooLarge);
    assert!(e.message.contains("limit of 1048576 bytes"), "{e}");
}

/// The entry's `rebootRequired` is part of the resolved image, so it reaches every
/// progress inside `spec.image`, covered by the signature the agent checks again.
#[test]
fn the_entrys_reboot_required_travels_in_the_resolved_image() {
    let t = TrustPolicy::default();
    let live = catalog_text("https://img/2.0").replace(
        "    size: 10\n",
        "    size: 10\n    rebootRequired: false\n",
    );
    let r = resolve(&doc(live.clone(), None), &spec("2.0"), &[], &t, now()).unwrap();
    assert_eq!(r.image.reboot_required, Some(false));
    let progress = crate::act::new_progress(
        &osroll_api::OSUpgrade::new("fleet", spec("2.0")),
        "n1",
        &crate::act::ProgressTemplate {
            image: r.image.clone(),
            ..Default::default()
        },
    );
    let json = serde_json::to_value(&progress.spec).unwrap();
    assert_eq!(json["image"]["rebootRequired"], serde_json::json!(false));
    let plain = resolve(
        &doc(catalog_text("https://img/2.0"), None),
        &spec("2.0"),
        &[],
        &t,
        now(),
    )
    .unwrap();
    assert_eq!(plain.image.reboot_required, None);
    let bad = live.replace("rebootRequired: false", "rebootRequired: sometimes");
    let e = resolve(&doc(bad, None), &spec("2.0"), &[], &t, now()).unwrap_err();
    assert_eq!(e.reason, RejectionReason::InvalidImageEntry);
    assert!(
        e.message.contains("images[0].rebootRequired"),
        "{}",
        e.message
    );
}
