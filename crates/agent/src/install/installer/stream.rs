//! The installer fed from a byte stream instead of HTTP: stdin or one TCP connection
//! (`osroll flash -`, `osroll flash --listen ADDR`), replacing `ncat -l | zstd -d | dd`.
//! Everything after the input is the same pipeline: SHA-256 of the received bytes, zstd
//! or raw decoding, the size guard, `O_DIRECT` writes and the read-back. A stream cannot
//! be asked for the rest again, so a read error or a stall ends the install.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::{Fetch, ImageSpec, InstallError, InstallOptions, Installer};
use crate::install::slot_io::Create;

/// The stream an installer reads, and what to call it in errors.
pub(super) struct Reader {
    name: String,
    inner: Box<dyn AsyncRead + Send + Sync + Unpin>,
}

/// What a stream is expected to carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSpec {
    /// Where it comes from, for messages: `stdin`, or the peer's address.
    pub name: String,
    /// SHA-256 of the bytes the stream carries (`None`: the user waived the check).
    pub sha256: Option<[u8; 32]>,
    /// Expected decoded size, if known.
    pub size: Option<u64>,
}

impl Installer {
    /// Prepare to install the image `reader` carries into `target`.
    pub fn from_stream(
        spec: StreamSpec,
        reader: impl AsyncRead + Send + Sync + Unpin + 'static,
        target: &Path,
        create: Create,
        opts: InstallOptions,
    ) -> Result<Installer, InstallError> {
        let image = ImageSpec {
            url: spec.name.clone(),
            sha256: spec.sha256.unwrap_or_default(),
            size: spec.size,
        };
        let mut installer = Installer::new(image, target, create, opts)?;
        installer.stream = Some(Reader {
            name: spec.name,
            inner: Box::new(reader),
        });
        Ok(if spec.sha256.is_some() {
            installer
        } else {
            installer.waive_checksum()
        })
    }

    /// Read `reader` to its end, hashing and forwarding every byte.
    pub(super) async fn receive(&mut self, reader: &mut Reader) -> Result<(), Fetch> {
        let stall = self.opts.stall_timeout;
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = match tokio::time::timeout(stall, reader.inner.read(&mut buf)).await {
                Ok(Ok(0)) => return Ok(()),
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(self.stream_error(reader, e)),
                Err(_) => {
                    let e = std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no data for {}", show(stall)),
                    );
                    return Err(self.stream_error(reader, e));
                }
            };
            self.forward(&buf[..n]).await?;
        }
    }

    fn stream_error(&self, reader: &Reader, source: std::io::Error) -> Fetch {
        Fetch::Fatal(InstallError::Stream {
            from: reader.name.clone(),
            offset: self.offset,
            source,
        })
    }
}

fn show(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}
