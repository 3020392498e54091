//! A local image server for the demo: simulated OS images (see
//! `osroll_agent::simhost::image_bytes`), zstd-compressed, served over HTTP on loopback,
//! with the catalog YAML that describes them.

use std::fmt::Write as _;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use tokio::task::JoinHandle;

/// One served image.
#[derive(Debug, Clone)]
pub struct ServedImage {
    /// OS version inside.
    pub version: String,
    /// Where it is served.
    pub url: String,
    /// `sha256:<hex>` of the served (compressed) bytes.
    pub checksum: String,
    /// Expanded size in bytes.
    pub size: u64,
    /// Compressed size in bytes.
    pub compressed: u64,
    /// Bytes of this image sent so far (every response counts its whole body).
    pub served: Arc<AtomicU64>,
}

/// Serves images until dropped.
pub struct ImageServer {
    /// The images, in the order given.
    pub images: Vec<ServedImage>,
    task: JoinHandle<()>,
}

impl Drop for ImageServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ImageServer {
    /// Generate an image of `size` bytes for each version and serve it at
    /// `/<version>.img.zst`.
    pub async fn start(versions: &[&str], size: usize) -> anyhow::Result<ImageServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the image server")?;
        let base = format!("http://{}", listener.local_addr()?);
        let mut app = axum::Router::new();
        let mut images = Vec::new();
        for v in versions {
            let raw = osroll_agent::simhost::image_bytes(v, size);
            let packed = bytes::Bytes::from(
                zstd::encode_all(raw.as_slice(), 3).context("compressing an image")?,
            );
            let path = format!("/{v}.img.zst");
            let served = Arc::new(AtomicU64::new(0));
            let counter = served.clone();
            images.push(ServedImage {
                version: v.to_string(),
                url: format!("{base}{path}"),
                checksum: osroll_api::catalog::digest(&packed),
                size: raw.len() as u64,
                compressed: packed.len() as u64,
                served,
            });
            app = app.route(
                &path,
                axum::routing::get(move || async move {
                    counter.fetch_add(packed.len() as u64, Ordering::SeqCst);
                    packed.clone()
                }),
            );
        }
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "image server stopped");
            }
        });
        Ok(ImageServer { images, task })
    }

    /// Bytes of `version`'s image served so far (0 for a version not served).
    pub fn bytes_served(&self, version: &str) -> u64 {
        self.images
            .iter()
            .find(|i| i.version == version)
            .map_or(0, |i| i.served.load(Ordering::SeqCst))
    }

    /// Catalog YAML listing every image, with `stable` pointing at `stable`.
    pub fn catalog(&self, stable: &str) -> String {
        let mut out = format!("stable: \"{stable}\"\nimages:\n");
        for i in &self.images {
            let _ = write!(
                out,
                "  - version: \"{}\"\n    url: {}\n    checksum: {}\n    size: {}\n",
                i.version, i.url, i.checksum, i.size
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_images_the_catalog_describes() {
        let s = ImageServer::start(&["1.0", "2.0"], 64 * 1024)
            .await
            .unwrap();
        let cat = osroll_api::Catalog::parse(&s.catalog("2.0")).unwrap();
        assert_eq!(cat.images.len(), 2);
        let img = &s.images[1];
        assert_eq!(s.bytes_served("2.0"), 0);
        let body = reqwest_get(&img.url).await;
        assert_eq!(s.bytes_served("2.0"), img.compressed);
        assert_eq!(s.bytes_served("1.0"), 0);
        assert_eq!(osroll_api::catalog::digest(&body), img.checksum);
        let raw = zstd::decode_all(body.as_slice()).unwrap();
        assert_eq!(raw.len() as u64, img.size);
        assert_eq!(
            osroll_agent::simhost::image_version(&raw).as_deref(),
            Some("2.0")
        );
    }

    async fn reqwest_get(url: &str) -> Vec<u8> {
        use http_body_util::BodyExt;
        let uri: hyper::Uri = url.parse().unwrap();
        let stream = tokio::net::TcpStream::connect(format!(
            "{}:{}",
            uri.host().unwrap(),
            uri.port_u16().unwrap()
        ))
        .await
        .unwrap();
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::get(uri.path())
            .header("host", "localhost")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec()
    }
}
