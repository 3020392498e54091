//! The hand-off of a signed catalog from the controller to the agent: what the
//! controller resolves and stamps into a progress (`osroll_controller::catalog::resolve`
//! then `act::new_progress`) is exactly what the agent's own check
//! (`osroll_agent::trust::check`) accepts, and an image edited afterwards is not.

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use osroll_agent::trust::{Context, TrustConfig, check};
use osroll_api::freshness::{Freshness, comment};
use osroll_api::signing::{keygen, parse_public_keys, sign};
use osroll_api::{CatalogSource, OSUpgrade, OSUpgradeSpec};
use osroll_controller::act::{ProgressTemplate, new_progress};
use osroll_controller::catalog::{CatalogDoc, TrustPolicy, resolve};

const CATALOG: &str = "stable: \"2.0\"\nimages:\n  - version: \"2.0\"\n    url: https://img.example/2.0.zst\n    checksum: sha256:1111111111111111111111111111111111111111111111111111111111111111\n    size: 4096\n    osVersionManagement:\n      channel: stable\n";

fn ctx() -> Context<'static> {
    Context {
        running: Some("1.0"),
        now: Timestamp::now(),
        newest_serial: None,
    }
}

fn fresh() -> String {
    comment(&Freshness {
        serial: 1,
        expires: Timestamp::now() + SignedDuration::from_hours(1),
    })
}

fn progress_for(signature: Option<String>, keys: &str) -> osroll_api::OSUpgradeProgress {
    let spec = OSUpgradeSpec {
        version: "stable".into(),
        catalog: CatalogSource {
            inline: Some(CATALOG.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let doc = CatalogDoc {
        text: CATALOG.into(),
        signature,
        origin: "inline".into(),
    };
    let trust = TrustPolicy {
        keys: parse_public_keys(keys).unwrap(),
        require_signed: false,
    };
    let r = resolve(&doc, &spec, &[], &trust, (Timestamp::now(), None)).unwrap();
    let up = OSUpgrade::new("fleet", spec);
    new_progress(
        &up,
        "node-1",
        &ProgressTemplate {
            image: r.image,
            catalog_digest: Some(r.digest),
            signed_catalog: r.signed,
            os_version_management: r.os_version_management,
            earlier: r.earlier,
        },
    )
}

#[test]
fn what_the_controller_stamps_the_agent_accepts_and_edits_are_refused() {
    let (pk, sk) = keygen().unwrap();
    let sig = sign(CATALOG.as_bytes(), &sk, None, Some(&fresh())).unwrap();
    let p = progress_for(Some(sig), &pk);
    let agent = TrustConfig {
        keys: parse_public_keys(&pk).unwrap(),
        require_signed_catalog: true,
    };
    let image = p.spec.image.clone().unwrap();
    // The entry's osVersionManagement is what the progress carries.
    assert_eq!(
        p.spec.os_version_management,
        Some(serde_json::json!({"channel": "stable"}))
    );
    check(&p.spec, &image, &agent, ctx()).unwrap();

    let mut edited = image.clone();
    edited.url = "https://evil.example/2.0.zst".into();
    let r = check(&p.spec, &edited, &agent, ctx()).unwrap_err();
    assert_eq!(r.reason, "ImageNotInCatalog");
    assert!(r.message.contains("evil.example"), "{r}");
}

#[test]
fn an_unsigned_catalog_is_stamped_without_a_signature_and_refused_by_a_strict_agent() {
    let (pk, _) = keygen().unwrap();
    let p = progress_for(None, &pk);
    assert!(p.spec.signed_catalog.is_none() && p.spec.catalog_digest.is_some());
    let agent = TrustConfig {
        keys: parse_public_keys(&pk).unwrap(),
        require_signed_catalog: true,
    };
    let r = check(&p.spec, p.spec.image.as_ref().unwrap(), &agent, ctx()).unwrap_err();
    assert_eq!(r.reason, "CatalogNotSigned");
}
