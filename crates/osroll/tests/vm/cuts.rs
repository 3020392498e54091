//! c. Power cuts (filled in below).

use super::scenarios::Env;

pub fn run(_env: &mut Env) -> Vec<String> {
    Vec::new()
}
