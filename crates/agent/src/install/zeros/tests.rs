use super::*;

const G: usize = 16;

/// A block of `granules` granules, the listed ones filled with a set byte.
fn block(granules: usize, set: &[usize]) -> Vec<u8> {
    let mut b = vec![0u8; granules * G];
    for &g in set {
        b[g * G + G / 2] = 0x80;
    }
    b
}

#[test]
fn zero_check_finds_a_single_set_bit_anywhere() {
    assert!(is_zero(&[]));
    assert!(is_zero(&vec![0u8; 10_000]));
    for at in [0, 4095, 4096, 9_999] {
        let mut b = vec![0u8; 10_000];
        b[at] = 1;
        assert!(!is_zero(&b), "bit at {at}");
    }
}

#[test]
fn parts_cover_the_block_in_order() {
    let b = block(10, &[0, 5, 9]);
    assert_eq!(
        split(&b, G, 2 * G),
        [
            Part::Data(0..G),
            Part::Zero(G..5 * G),
            Part::Data(5 * G..6 * G),
            Part::Zero(6 * G..9 * G),
            Part::Data(9 * G..10 * G),
        ]
    );
}

#[test]
fn short_zero_runs_stay_data_and_merge_with_their_neighbours() {
    let b = block(6, &[0, 2, 5]);
    // Zero runs of one granule (1) and two granules (3..5); only the second is long enough.
    assert_eq!(
        split(&b, G, 2 * G),
        [
            Part::Data(0..3 * G),
            Part::Zero(3 * G..5 * G),
            Part::Data(5 * G..6 * G)
        ]
    );
    assert_eq!(split(&b, G, 3 * G), [Part::Data(0..6 * G)]);
}

#[test]
fn a_partial_last_granule_is_data_even_when_zero() {
    let mut b = block(3, &[]);
    b.extend_from_slice(&[0u8; G / 2]);
    assert_eq!(
        split(&b, G, G),
        [Part::Zero(0..3 * G), Part::Data(3 * G..3 * G + G / 2)]
    );
    assert_eq!(split(&[], G, G), []);
    assert_eq!(split(&[0u8; 5], G, G), [Part::Data(0..5)]);
}

#[test]
fn all_data_and_all_zero_blocks_are_one_part() {
    assert_eq!(split(&[1u8; 8 * G], G, G), [Part::Data(0..8 * G)]);
    assert_eq!(split(&[0u8; 8 * G], G, G), [Part::Zero(0..8 * G)]);
}
