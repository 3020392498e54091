//! One-line rendering of an error with all its sources, for logs, Events and status
//! messages: the error types keep their sources, and this is where they are read out.

use std::error::Error;
use std::fmt;

/// Displays an error followed by each of its sources: `outer: middle: root cause`.
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn Error + 'a));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading the catalog")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn every_source_is_shown_once() {
        let e = Outer(std::io::Error::other("connection refused"));
        assert_eq!(
            Chain(&e).to_string(),
            "reading the catalog: connection refused"
        );
    }
}
