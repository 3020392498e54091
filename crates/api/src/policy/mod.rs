//! Image source policy: which URLs an image may be fetched from.
//!
//! Only `https://` by default; `http://` only where the OSUpgrade opts in (a local
//! mirror); no other scheme ever. Redirects are followed a bounded number of times and
//! may never leave https once it was https. Mirror rewrite rules replace a URL prefix,
//! so a catalog naming a public host can be served from a site-local mirror.
//!
//! Deployment backends fetch from references rather than image URLs (an OSTree
//! `remote:ref`, a container image, a plugin's own payload): [`check_reference`] holds
//! the ones that name a URL to the same rule.

use url::Url;

/// Most redirects the agent follows for one download.
pub const MAX_REDIRECTS: usize = 5;

/// A refused URL.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("image URL {url:?} is not allowed: {why}")]
pub struct PolicyViolation {
    /// The refused URL.
    pub url: String,
    /// The rule it breaks.
    pub why: UrlRule,
}

/// The rule of the image source policy a URL breaks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlRule {
    /// The text does not parse as a URL.
    #[error("not a URL ({0})")]
    NotAUrl(#[source] url::ParseError),
    /// Plain http without the OSUpgrade's opt-in.
    #[error("plain http needs spec.allowHttpImages: true on the OSUpgrade")]
    HttpNotAllowed,
    /// A scheme other than https and http.
    #[error("scheme {0:?} is never allowed; use https")]
    Scheme(String),
    /// No host part.
    #[error("no host")]
    NoHost,
    /// User name or password in the URL.
    #[error("credentials in the URL are not allowed")]
    Credentials,
    /// Too long a redirect chain.
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
    /// A redirect from https to another scheme.
    #[error("redirect from https ({from}) to {to_scheme} is a downgrade")]
    HttpsDowngrade {
        /// The https URL redirected from.
        from: String,
        /// The scheme redirected to.
        to_scheme: String,
    },
}

fn violation(url: &str, why: UrlRule) -> PolicyViolation {
    PolicyViolation {
        url: url.to_string(),
        why,
    }
}

/// Check an image URL: https always, http only with `allow_http`, nothing else.
pub fn check_image_url(url: &str, allow_http: bool) -> Result<Url, PolicyViolation> {
    let u = Url::parse(url).map_err(|e| violation(url, UrlRule::NotAUrl(e)))?;
    match u.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => return Err(violation(url, UrlRule::HttpNotAllowed)),
        other => return Err(violation(url, UrlRule::Scheme(other.to_string()))),
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(violation(url, UrlRule::NoHost));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(violation(url, UrlRule::Credentials));
    }
    Ok(u)
}

/// Container transports whose `name://` form is not a URL: the registry protocol,
/// which uses TLS unless the host's own registry configuration says otherwise.
pub const REGISTRY_TRANSPORTS: [&str; 1] = ["docker"];

/// Check a reference a deployment tool fetches from: one that embeds a URL
/// (`scheme://...`, also after a transport prefix such as `ostree-remote-image:fedora:`)
/// must pass [`check_image_url`], unless the scheme is a [`REGISTRY_TRANSPORTS`] entry;
/// a reference with no URL in it (`fedora:fedora/42`, `oci:/srv/image`) names nothing
/// fetched over the network by this rule's reckoning and passes.
pub fn check_reference(reference: &str, allow_http: bool) -> Result<(), PolicyViolation> {
    let Some((before, _)) = reference.split_once("://") else {
        return Ok(());
    };
    let start = before.rfind(':').map_or(0, |i| i + 1);
    let scheme = &before[start..];
    if REGISTRY_TRANSPORTS.contains(&scheme) {
        return Ok(());
    }
    check_image_url(&reference[start..], allow_http)
        .map(|_| ())
        .map_err(|v| violation(reference, v.why))
}

/// Check one redirect hop (`hop` counts from 1).
pub fn check_redirect(
    from: &Url,
    to: &Url,
    hop: usize,
    allow_http: bool,
) -> Result<(), PolicyViolation> {
    if hop > MAX_REDIRECTS {
        return Err(violation(to.as_str(), UrlRule::TooManyRedirects));
    }
    if from.scheme() == "https" && to.scheme() != "https" {
        let why = UrlRule::HttpsDowngrade {
            from: from.to_string(),
            to_scheme: to.scheme().to_string(),
        };
        return Err(violation(to.as_str(), why));
    }
    check_image_url(to.as_str(), allow_http).map(|_| ())
}

/// A mirror rule: URLs starting with `from` are fetched from `to` + the rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rewrite {
    /// Prefix to replace.
    pub from: String,
    /// Replacement prefix.
    pub to: String,
}

impl std::str::FromStr for Rewrite {
    type Err = String;

    /// `FROM=TO`, e.g. `https://images.example/=https://mirror.local/images/`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (from, to) = s
            .split_once('=')
            .ok_or_else(|| format!("rewrite rule {s:?} is not FROM=TO"))?;
        if from.is_empty() || to.is_empty() {
            return Err(format!("rewrite rule {s:?} has an empty side"));
        }
        Ok(Rewrite {
            from: from.to_string(),
            to: to.to_string(),
        })
    }
}

/// Apply the first rule whose prefix matches; the longest prefix wins among several.
pub fn rewrite(url: &str, rules: &[Rewrite]) -> String {
    rules
        .iter()
        .filter(|r| url.starts_with(&r.from))
        .max_by_key(|r| r.from.len())
        .map(|r| format!("{}{}", r.to, &url[r.from.len()..]))
        .unwrap_or_else(|| url.to_string())
}

#[cfg(test)]
mod tests;
