//! Catalog parsing and resolution never panic, and their answers stay consistent:
//! a resolved image always comes from an entry without problems, and every rejection
//! names something.
#![no_main]

use libfuzzer_sys::fuzz_target;
use osroll_api::catalog::{Catalog, NodeVersion, is_valid_checksum};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // The last line, if it looks like one, is the request; the rest is the catalog.
    let (catalog, requested) = match text.rsplit_once("\n#req ") {
        Some((c, r)) => (c, r.trim()),
        None => (text, "stable"),
    };
    let Ok(cat) = Catalog::parse(catalog) else { return };
    let nodes = [NodeVersion { node: "n".into(), version: Some("v1.2.3".into()) }];
    for allow in [false, true] {
        match cat.resolve(requested, &nodes, allow) {
            Ok(r) => {
                assert!(is_valid_checksum(&r.image.checksum));
                assert!(!r.image.url.is_empty());
                assert!(r.warnings.iter().all(|w| !w.message.is_empty()));
            }
            Err(e) => assert!(!e.message.is_empty()),
        }
    }
});
