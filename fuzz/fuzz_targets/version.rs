//! Version parsing never panics, and the ordering is a total order on what parses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use osroll_api::Version;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let parts: Vec<&str> = text.splitn(3, '\n').collect();
    let parsed: Vec<Version> = parts.iter().filter_map(|p| p.parse().ok()).collect();
    for a in &parsed {
        assert_eq!(a.cmp(a), std::cmp::Ordering::Equal);
        assert_eq!(a.to_string(), a.as_str());
        for b in &parsed {
            assert_eq!(a.cmp(b), b.cmp(a).reverse());
            for c in &parsed {
                if a <= b && b <= c {
                    assert!(a <= c, "{a} <= {b} <= {c}");
                }
            }
        }
    }
});
