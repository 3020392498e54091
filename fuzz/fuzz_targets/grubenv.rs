//! The GRUB environment block reader and writer: parsing arbitrary bytes never panics,
//! and whatever parses writes back to a block of the same size (1024 bytes for a
//! standard block) that parses to the same variables, and is stable from then on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use osroll_agent::boot::grubenv::{DEFAULT_SIZE, GrubEnv, GrubEnvError};

fuzz_target!(|data: &[u8]| {
    let Ok(env) = GrubEnv::parse(data) else {
        return;
    };
    match env.encode() {
        Ok(block) => {
            assert_eq!(block.len(), data.len(), "the block size never changes");
            let again = GrubEnv::parse(&block).expect("our own block parses");
            assert_eq!(again.vars(), env.vars(), "variables survive a round trip");
            assert_eq!(
                again.encode().expect("re-encodes"),
                block,
                "encoding is stable"
            );
            // Setting and unsetting through the public API keeps the invariants.
            let mut edited = again.clone();
            if edited.set("osroll_try", "B").is_ok() {
                if let Ok(b) = edited.encode() {
                    assert_eq!(b.len(), block.len());
                    let back = GrubEnv::parse(&b).expect("edited block parses");
                    assert_eq!(back.get("osroll_try"), Some("B"));
                }
            }
            edited.unset("osroll_try");
            if data.len() == DEFAULT_SIZE {
                assert_eq!(edited.encode().map(|b| b.len()).ok(), Some(DEFAULT_SIZE));
            }
        }
        // Only a block whose variables (plus our header) do not fit may fail to encode.
        Err(GrubEnvError::Full { needed, size }) => {
            assert!(needed > size);
            assert_eq!(size, data.len());
        }
        Err(e) => panic!("encoding a parsed block failed: {e}"),
    }
});
