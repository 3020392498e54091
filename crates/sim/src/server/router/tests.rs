//! Request paths and query strings parse the way the real API server reads them.

use super::*;

#[test]
fn paths_parse_like_the_api_server() {
    let res = |g: &str, v: &str, p: &str, ns: Option<&str>, n: Option<&str>, s: Option<&str>| {
        Route::Resource {
            group: g.into(),
            version: v.into(),
            plural: p.into(),
            ns: ns.map(String::from),
            name: n.map(String::from),
            sub: s.map(String::from),
        }
    };
    assert_eq!(
        parse_path("/api/v1/namespaces"),
        res("", "v1", "namespaces", None, None, None)
    );
    assert_eq!(
        parse_path("/api/v1/namespaces/default"),
        res("", "v1", "namespaces", None, Some("default"), None)
    );
    assert_eq!(
        parse_path("/api/v1/namespaces/x/status"),
        res("", "v1", "namespaces", None, Some("x"), Some("status"))
    );
    assert_eq!(
        parse_path("/api/v1/namespaces/d/pods"),
        res("", "v1", "pods", Some("d"), None, None)
    );
    assert_eq!(
        parse_path("/api/v1/namespaces/d/pods/p/eviction"),
        res("", "v1", "pods", Some("d"), Some("p"), Some("eviction"))
    );
    assert_eq!(
        parse_path("/api/v1/pods"),
        res("", "v1", "pods", None, None, None)
    );
    assert_eq!(
        parse_path("/apis/osroll.io/v1alpha1/osupgrades/u/status"),
        res(
            "osroll.io",
            "v1alpha1",
            "osupgrades",
            None,
            Some("u"),
            Some("status")
        )
    );
    assert_eq!(parse_path("/apis/apps"), Route::Group("apps".into()));
    assert_eq!(
        parse_path("/openapi/v3/apis/osroll.io/v1alpha1"),
        Route::OpenApiV3("osroll.io".into(), "v1alpha1".into())
    );
}

#[test]
fn query_strings_decode() {
    let q = parse_query(Some(
        "labelSelector=osroll.io%2Fnode%3Dn1&fieldSelector=metadata.name%3Dx&watch=1&a+b=c",
    ));
    assert_eq!(q.get("labelSelector"), Some("osroll.io/node=n1"));
    assert_eq!(q.get("fieldSelector"), Some("metadata.name=x"));
    assert!(q.flag("watch"));
    assert_eq!(q.get("a b"), Some("c"));
}
