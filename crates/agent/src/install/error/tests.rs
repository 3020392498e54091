use super::*;

#[test]
fn only_network_errors_are_retryable_and_reasons_are_distinct() {
    let errs = [
        InstallError::InvalidSpec("x".into()),
        InstallError::Network {
            url: "u".into(),
            attempts: 3,
            offset: 7,
            detail: "reset".into(),
        },
        InstallError::Http {
            url: "u".into(),
            detail: "404".into(),
        },
        InstallError::ChecksumMismatch {
            expected: "a".into(),
            actual: "b".into(),
            bytes: 1,
        },
        InstallError::TooLarge {
            what: "slot".into(),
            limit: 1,
        },
        InstallError::SizeMismatch {
            expected: 2,
            actual: 1,
        },
        InstallError::Format("gzip".into()),
        InstallError::Redirect {
            url: "u".into(),
            detail: "to http".into(),
        },
        InstallError::Tls {
            url: "u".into(),
            detail: "UnknownIssuer".into(),
        },
        InstallError::io(
            std::path::Path::new("/dev/x"),
            "write",
            std::io::Error::other("EIO"),
        ),
        InstallError::VerifyMismatch {
            path: "/dev/x".into(),
            len: 1,
            wrote: "a".into(),
            read: "b".into(),
        },
    ];
    let retryable: Vec<_> = errs
        .iter()
        .filter(|e| e.is_retryable())
        .map(|e| e.reason())
        .collect();
    assert_eq!(retryable, ["NetworkError"]);
    let mut reasons: Vec<_> = errs.iter().map(|e| e.reason()).collect();
    reasons.sort();
    reasons.dedup();
    assert_eq!(reasons.len(), errs.len());
    assert!(errs[1].to_string().contains("at byte 7"), "{}", errs[1]);
    assert!(errs[9].to_string().contains("/dev/x"), "{}", errs[9]);
}
