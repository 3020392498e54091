//! Unit tests of catalog internals that the public API cannot reach cheaply: duplicate
//! detection over a catalog far larger than any real one.

use super::*;

/// 200k entries: 150k distinct versions, then 50k that repeat the first 50k spelt
/// another way (`v` prefix, trailing `.0`), with every 7th entry unparsable. Entry
/// indices skip (as when malformed entries were dropped) so messages must name
/// indices, not positions.
#[test]
fn duplicates_in_a_large_catalog_are_all_found_in_order() {
    const TOTAL: usize = 200_000;
    const DISTINCT: usize = 150_000;
    let unparsable = |pos: usize| pos % 7 == 3;
    let images: Vec<CatalogImage> = (0..TOTAL)
        .map(|pos| CatalogImage {
            index: 2 * pos,
            version: if unparsable(pos) {
                format!("bad-{pos}")
            } else if pos < DISTINCT {
                format!("1.{pos}")
            } else {
                format!("v1.{}.0", pos - DISTINCT)
            },
            ..CatalogImage::default()
        })
        .collect();
    let mut cat = Catalog {
        images,
        ..Catalog::default()
    };
    cat.find_duplicates();

    let expected: Vec<CatalogProblem> = (DISTINCT..TOTAL)
        .filter(|&pos| !unparsable(pos) && !unparsable(pos - DISTINCT))
        .map(|pos| CatalogProblem {
            field: format!("images[{}].version", 2 * pos),
            index: Some(2 * pos),
            version: Some(format!("v1.{}.0", pos - DISTINCT)),
            message: format!(
                "duplicate version \"v1.{}.0\": images[{}] has it already",
                pos - DISTINCT,
                2 * (pos - DISTINCT)
            ),
        })
        .collect();
    assert!(expected.len() > 30_000, "{}", expected.len());
    assert_eq!(cat.problems.len(), expected.len());
    assert!(cat.problems == expected, "first difference: {:?}", {
        let i = (0..expected.len())
            .find(|&i| cat.problems[i] != expected[i])
            .unwrap_or(0);
        (&cat.problems[i], &expected[i])
    });
}
