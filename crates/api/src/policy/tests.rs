//! The image source policy: allowed schemes, redirect rules and mirror rewrites.

use super::*;

#[test]
fn schemes() {
    assert!(check_image_url("https://img.example/a.zst", false).is_ok());
    let e = check_image_url("http://mirror.local/a.zst", false).unwrap_err();
    assert!(
        e.why.to_string().contains("allowHttpImages") && e.url == "http://mirror.local/a.zst",
        "{e}"
    );
    assert!(check_image_url("http://mirror.local/a.zst", true).is_ok());
    for bad in ["file:///etc/shadow", "ftp://h/a", "gopher://h/", "data:,x"] {
        let e = check_image_url(bad, true).unwrap_err();
        assert!(e.to_string().contains(bad), "{e}");
    }
    assert!(
        check_image_url("https://user:pw@h/a", false)
            .unwrap_err()
            .why
            .to_string()
            .contains("credentials")
    );
    let e = check_image_url("not a url", true).unwrap_err();
    assert!(matches!(e.why, UrlRule::NotAUrl(_)), "{e}");
    assert!(
        std::error::Error::source(&e.why).is_some(),
        "the parse error is kept"
    );
}

#[test]
fn redirects_stay_on_https_and_are_bounded() {
    let s = |u: &str| Url::parse(u).unwrap();
    assert!(check_redirect(&s("https://a/x"), &s("https://b/y"), 1, false).is_ok());
    let e = check_redirect(&s("https://a/x"), &s("http://b/y"), 1, true).unwrap_err();
    assert!(e.why.to_string().contains("downgrade"), "{e}");
    assert!(check_redirect(&s("http://a/x"), &s("http://b/y"), 1, true).is_ok());
    assert!(check_redirect(&s("http://a/x"), &s("http://b/y"), 1, false).is_err());
    let e = check_redirect(
        &s("https://a/x"),
        &s("https://b/y"),
        MAX_REDIRECTS + 1,
        false,
    )
    .unwrap_err();
    assert!(e.why.to_string().contains("redirects"));
}

#[test]
fn rewrites_use_the_longest_prefix() {
    let rules: Vec<Rewrite> = [
        "https://img.example/=https://m1/",
        "https://img.example/os/=https://m2/os/",
    ]
    .iter()
    .map(|r| r.parse().unwrap())
    .collect();
    assert_eq!(
        rewrite("https://img.example/os/v1.zst", &rules),
        "https://m2/os/v1.zst"
    );
    assert_eq!(
        rewrite("https://img.example/k/v1.zst", &rules),
        "https://m1/k/v1.zst"
    );
    assert_eq!(
        rewrite("https://other/v1.zst", &rules),
        "https://other/v1.zst"
    );
    assert!("nonsense".parse::<Rewrite>().is_err());
    assert!("=x".parse::<Rewrite>().is_err());
}

#[test]
fn references_are_held_to_the_url_rule_only_where_they_name_a_url() {
    for ok in [
        "fedora:fedora/x86_64/coreos/stable",
        "ostree-unverified-registry:quay.io/fedora/fedora-coreos:stable",
        "ostree-remote-image:fedora:docker://quay.io/fedora/fedora-coreos:stable",
        "docker://quay.io/os:2.0",
        "oci:/srv/images/os",
        "https://os.example/repo",
        "ostree-remote-image:fedora:https://os.example/repo",
        "",
    ] {
        assert_eq!(check_reference(ok, false), Ok(()), "{ok}");
    }
    let e = check_reference("http://os.example/repo", false).unwrap_err();
    assert_eq!(
        (e.url.as_str(), e.why),
        ("http://os.example/repo", UrlRule::HttpNotAllowed)
    );
    assert_eq!(check_reference("http://os.example/repo", true), Ok(()));
    let e = check_reference("ostree-image-signed:http://evil.example/os", false).unwrap_err();
    assert_eq!(e.url, "ostree-image-signed:http://evil.example/os");
    assert_eq!(e.why, UrlRule::HttpNotAllowed);
    for bad in [
        "file:///etc/shadow",
        "ftp://os.example/x",
        "https://u:p@os.example/x",
    ] {
        assert!(check_reference(bad, true).is_err(), "{bad}");
    }
}
