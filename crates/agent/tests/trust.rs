//! Trust at the agent, end to end through the real agent loop and its HTTP fetcher:
//!
//! * with `requireSignedCatalog`, an image must equal an entry of the catalog the
//!   controller stamped into `spec.signedCatalog`, signed by a key the agent trusts: a
//!   progress edited by hand to another URL, an unsigned one, and one signed by an
//!   unknown key are Failed with the reason, before a single byte is requested;
//! * an image URL must be https, or http when the progress carries `allowHttpImages`;
//! * redirects stay on https and are bounded, over a local HTTPS server whose CA is
//!   made in the test;
//! * a private CA is trusted through the agent's CA bundle, and without it the failure
//!   is a TLS error naming the URL.

mod common;
#[path = "common/tls.rs"]
mod tls;

use std::sync::Arc;
use std::time::Duration;

use common::server::ImageServer;
use common::*;
use osroll_agent::Slot;
use osroll_agent::simhost::image_bytes;
use osroll_agent::trust::TrustConfig;
use osroll_api::signing::{keygen, parse_public_keys, sign};
use osroll_api::{OSUpgradeProgressSpec, OSUpgradeProgressStatus, ProgressPhase, SignedCatalog};
use tls::{Answer, HttpsServer};

const SLOT: u64 = 2 << 20;
const T: Duration = Duration::from_secs(20);

/// Stage `spec` with `cfg` changed by `tune`, until Staged or Failed.
async fn stage(
    spec: OSUpgradeProgressSpec,
    tune: impl FnOnce(&mut osroll_agent::AgentConfig),
) -> (Node, OSUpgradeProgressStatus) {
    let node = Node::new(SLOT, "v1");
    node.put(spec);
    let mut cfg = node.config();
    tune(&mut cfg);
    let agent = node.spawn_agent_with(cfg);
    let status = node
        .wait_phase(&[ProgressPhase::Staged, ProgressPhase::Failed], T)
        .await;
    agent.abort();
    (node, status)
}

fn assert_failed(s: &OSUpgradeProgressStatus, reason: &str, words: &[&str]) {
    assert_eq!(s.phase, Some(ProgressPhase::Failed), "{s:#?}");
    assert_eq!(s.failure_reason.as_deref(), Some(reason), "{s:#?}");
    let msg = s.message.clone().unwrap_or_default();
    for w in words {
        assert!(msg.contains(w), "message {msg:?} should mention {w:?}");
    }
}

/// An image, a catalog listing it at `url`, signed by a fresh key.
struct Signed {
    image: Vec<u8>,
    spec: OSUpgradeProgressSpec,
    public_key: String,
}

fn signed_spec(url: &str) -> Signed {
    let image = zstd(&image_bytes("v2", 256 * 1024));
    let catalog = format!(
        "stable: v2\nimages:\n  - version: v2\n    url: {url}\n    checksum: {}\n",
        checksum(&image)
    );
    let (pk, sk) = keygen().unwrap();
    let signature = sign(catalog.as_bytes(), &sk, None, Some(&fresh(1))).unwrap();
    let mut s = spec("v2", url, &checksum(&image), None);
    s.catalog_digest = Some(osroll_api::catalog::digest(catalog.as_bytes()));
    s.signed_catalog = Some(SignedCatalog {
        content: catalog,
        signature,
    });
    s.allow_http_images = true;
    Signed {
        image,
        spec: s,
        public_key: pk,
    }
}

/// A trusted comment with `serial`, valid for a day.
fn fresh(serial: u64) -> String {
    let expires =
        k8s_openapi::jiff::Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_hours(24);
    osroll_api::freshness::comment(&osroll_api::freshness::Freshness { serial, expires })
}

fn require(pk: &str) -> impl FnOnce(&mut osroll_agent::AgentConfig) {
    let keys = parse_public_keys(pk).unwrap();
    move |cfg| {
        cfg.trust = TrustConfig {
            keys,
            require_signed_catalog: true,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correctly_stamped_progress_is_staged() {
    let srv = ImageServer::start(Vec::new()).await;
    let s = signed_spec(&srv.url());
    srv.with(|sc| sc.body = Arc::new(s.image.clone()));
    let (node, st) = stage(s.spec, require(&s.public_key)).await;
    assert_eq!(st.phase, Some(ProgressPhase::Staged), "{st:#?}");
    let raw = image_bytes("v2", 256 * 1024);
    assert!(node.slot_bytes(Slot::B).starts_with(&raw));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_serves_the_signed_url_and_the_check_still_holds() {
    let mirror = ImageServer::start(Vec::new()).await;
    // The catalog (and so the progress) names the upstream URL, which does not resolve.
    let s = signed_spec("https://images.invalid/os/v2.img.zst");
    mirror.with(|sc| sc.body = Arc::new(s.image.clone()));
    let rule: osroll_api::policy::Rewrite =
        format!("https://images.invalid/os/=http://{}/mirror/", mirror.addr)
            .parse()
            .unwrap();
    let pk = s.public_key.clone();
    let (node, st) = stage(s.spec, move |cfg| {
        require(&pk)(cfg);
        cfg.mirrors = vec![rule];
    })
    .await;
    assert_eq!(st.phase, Some(ProgressPhase::Staged), "{st:#?}");
    assert!(!mirror.requests().is_empty(), "the mirror served the image");
    assert!(
        node.slot_bytes(Slot::B)
            .starts_with(&image_bytes("v2", 256 * 1024))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_without_the_opt_in_and_other_schemes_are_refused_before_downloading() {
    let srv = ImageServer::start(zstd(&image_bytes("v2", 64 * 1024))).await;
    let mut plain = spec("v2", &srv.url(), &"0".repeat(64), None);
    plain.image.as_mut().unwrap().checksum = format!("sha256:{}", "0".repeat(64));
    plain.allow_http_images = false;
    let (_, st) = stage(plain.clone(), |_| {}).await;
    assert_failed(
        &st,
        "ImageSourceNotAllowed",
        &[&srv.url(), "allowHttpImages"],
    );
    let mut file = plain;
    file.image.as_mut().unwrap().url = "file:///etc/shadow".into();
    let (_, st) = stage(file, |_| {}).await;
    // Caught earlier, by the decision's own spec validation.
    assert_failed(
        &st,
        "InvalidSpec",
        &["file:///etc/shadow", "only http and https"],
    );
    assert!(srv.requests().is_empty(), "nothing was fetched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_progress_edited_to_another_url_is_refused_before_downloading() {
    let good = ImageServer::start(Vec::new()).await;
    let evil = ImageServer::start(Vec::new()).await;
    let mut s = signed_spec(&good.url());
    // Same bytes elsewhere (so the checksum still matches): only the URL was edited.
    evil.with(|sc| sc.body = Arc::new(s.image.clone()));
    let evil_url = format!("http://{}/other", evil.addr);
    s.spec.image.as_mut().unwrap().url = evil_url.clone();
    let (_, st) = stage(s.spec, require(&s.public_key)).await;
    assert_failed(
        &st,
        "ImageNotInCatalog",
        &["differs from the signed catalog", &evil_url, &good.url()],
    );
    assert!(evil.requests().is_empty() && good.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_and_unknown_key_are_refused_under_the_requirement() {
    let srv = ImageServer::start(Vec::new()).await;
    let s = signed_spec(&srv.url());
    srv.with(|sc| sc.body = Arc::new(s.image.clone()));

    let mut unsigned = s.spec.clone();
    unsigned.signed_catalog = None;
    let (_, st) = stage(unsigned, require(&s.public_key)).await;
    assert_failed(&st, "CatalogNotSigned", &["spec.signedCatalog is missing"]);

    let (stranger, _) = keygen().unwrap();
    let (_, st) = stage(s.spec.clone(), require(&stranger)).await;
    assert_failed(
        &st,
        "UnknownSigningKey",
        &["spec.signedCatalog", "not trusted"],
    );
    assert!(srv.requests().is_empty(), "{:?}", srv.requests());

    // Without the requirement (and without keys) the same unsigned spec installs.
    let mut unsigned = s.spec;
    unsigned.signed_catalog = None;
    let (_, st) = stage(unsigned, |_| {}).await;
    assert_eq!(st.phase, Some(ProgressPhase::Staged), "{st:#?}");
}

fn with_ca(pem: &str, builtin_roots: bool) -> impl FnOnce(&mut osroll_agent::AgentConfig) {
    let pem = Arc::new(pem.as_bytes().to_vec());
    move |cfg| {
        cfg.install.extra_ca_pem = Some(pem);
        cfg.install.builtin_roots = builtin_roots;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_from_https_to_http_is_refused() {
    let plain = ImageServer::start(zstd(&image_bytes("v2", 64 * 1024))).await;
    let target = plain.url();
    let to = target.clone();
    let https = HttpsServer::start(move |_| Answer::redirect(&to)).await;
    let z = plain.with(|s| s.body.clone());
    let mut sp = spec("v2", &https.url("/image"), &checksum(&z), None);
    sp.allow_http_images = true;
    let (_, st) = stage(sp, with_ca(&https.ca_pem, true)).await;
    assert_failed(
        &st,
        "RedirectRefused",
        &["redirect", &target, "downgrade", &https.url("/image")],
    );
    assert!(plain.requests().is_empty(), "the http hop was followed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_followed_on_https_up_to_a_bound() {
    let raw = image_bytes("v2", 64 * 1024);
    let z = zstd(&raw);
    let body = z.clone();
    let https = HttpsServer::start(move |path| {
        let hop = |p: &str| p.rsplit('/').next().and_then(|n| n.parse::<u32>().ok());
        match (path.starts_with("/loop/"), hop(path)) {
            (true, Some(n)) => Answer::redirect(&format!("/loop/{}", n + 1)),
            (false, Some(n)) if n < 3 => Answer::redirect(&format!("/ok/{}", n + 1)),
            _ => Answer::ok(body.clone()),
        }
    })
    .await;
    let (node, st) = stage(
        spec("v2", &https.url("/ok/0"), &checksum(&z), None),
        with_ca(&https.ca_pem, true),
    )
    .await;
    assert_eq!(
        st.phase,
        Some(ProgressPhase::Staged),
        "three https hops: {st:#?}"
    );
    assert!(node.slot_bytes(Slot::B).starts_with(&raw));

    let (_, st) = stage(
        spec("v2", &https.url("/loop/0"), &checksum(&z), None),
        with_ca(&https.ca_pem, true),
    )
    .await;
    assert_failed(
        &st,
        "RedirectRefused",
        &[
            &format!("more than {} redirects", osroll_api::policy::MAX_REDIRECTS),
            "/loop/6",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_is_trusted_only_through_the_bundle() {
    let raw = image_bytes("v2", 64 * 1024);
    let z = zstd(&raw);
    let body = z.clone();
    let https = HttpsServer::start(move |_| Answer::ok(body.clone())).await;
    let url = https.url("/image");

    // The bundle instead of the built-in roots.
    let (node, st) = stage(
        spec("v2", &url, &checksum(&z), None),
        with_ca(&https.ca_pem, false),
    )
    .await;
    assert_eq!(st.phase, Some(ProgressPhase::Staged), "{st:#?}");
    assert!(node.slot_bytes(Slot::B).starts_with(&raw));

    // Built-in roots only: the certificate is not trusted, failed at once (no retries).
    let (_, st) = stage(spec("v2", &url, &checksum(&z), None), |_| {}).await;
    assert_failed(
        &st,
        "TlsError",
        &["TLS error", &url, "certificate", "--ca-bundle"],
    );
}
