//! Fake executables for tests: small `/bin/sh` scripts that record every invocation's
//! arguments before doing whatever the test asks of them.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Write an executable `<dir>/<name>` that appends its arguments to `<dir>/<name>.args`
/// and then runs `body` (shell).
pub(crate) fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    let record = dir.join(format!("{name}.args"));
    let text = format!(
        "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\0' \"$a\"; done >> '{r}'\nprintf '\\036' >> '{r}'\n{body}\n",
        r = record.display()
    );
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Every recorded invocation of `<dir>/<name>`, oldest first.
pub(crate) fn recorded_args(dir: &Path, name: &str) -> Vec<Vec<String>> {
    let raw = fs::read(dir.join(format!("{name}.args"))).unwrap_or_default();
    let text = String::from_utf8(raw).unwrap();
    // Each call is `arg\0arg\0...\x1e`; the text ends with a separator.
    let mut calls: Vec<&str> = text.split('\u{1e}').collect();
    calls.pop();
    calls
        .into_iter()
        .map(|call| {
            let mut args: Vec<String> = call.split('\0').map(str::to_string).collect();
            args.pop();
            args
        })
        .collect()
}
