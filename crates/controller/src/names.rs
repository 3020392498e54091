//! Bounded lists of node, pod and OSUpgrade names for human-readable messages, so a
//! status message or Event stays short however large the fleet.

/// At most this many names are listed in one message.
const MAX_NAMES: usize = 5;

/// `a, b, c and 4 more`.
pub(crate) fn name_list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let all: Vec<&str> = names.into_iter().collect();
    let mut s = all
        .iter()
        .take(MAX_NAMES)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if all.len() > MAX_NAMES {
        s.push_str(&format!(" and {} more", all.len() - MAX_NAMES));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_lists_are_bounded() {
        let names: Vec<String> = (0..8).map(|i| format!("n{i}")).collect();
        assert_eq!(
            name_list(names.iter().map(String::as_str)),
            "n0, n1, n2, n3, n4 and 3 more"
        );
        assert_eq!(name_list(["a"]), "a");
    }
}
