//! A busybox image built locally, for tests that need a real container but
//! cannot pull (test machines have no registry access).
//!
//! The image is `FROM scratch` plus Debian's statically linked busybox
//! (`busybox-static`), with every applet linked into `/bin` (`sh`, `sleep`,
//! `httpd`, `wget`, `nc`, …).

use std::path::Path;

use bollard::query_parameters::BuildImageOptions;
use futures::StreamExt;
use tracing::debug;

use crate::{DockerRuntime, RuntimeError};

/// Where Debian's `busybox-static` installs the binary.
pub const DEFAULT_BUSYBOX_PATH: &str = "/bin/busybox";

/// The Dockerfile of the image; the build context holds it and `busybox`.
pub const BUSYBOX_DOCKERFILE: &str = "FROM scratch\n\
COPY busybox /bin/busybox\n\
RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n";

/// Builds the busybox image from [`DEFAULT_BUSYBOX_PATH`] and tags it `tag`.
/// Repeated builds hit Docker's build cache and take well under a second.
pub async fn build_busybox_image(runtime: &DockerRuntime, tag: &str) -> Result<(), RuntimeError> {
    build_busybox_image_from(runtime, tag, Path::new(DEFAULT_BUSYBOX_PATH)).await
}

/// Builds the busybox image from a statically linked busybox at `busybox`.
pub async fn build_busybox_image_from(
    runtime: &DockerRuntime,
    tag: &str,
    busybox: &Path,
) -> Result<(), RuntimeError> {
    let binary = tokio::fs::read(busybox).await.map_err(|e| {
        RuntimeError::Other(format!(
            "cannot read {} to build {tag}: {e} (install Debian's busybox-static)",
            busybox.display()
        ))
    })?;
    let context = build_context(&binary)
        .map_err(|e| RuntimeError::Other(format!("cannot build the context for {tag}: {e}")))?;

    let options = BuildImageOptions {
        t: Some(tag.to_string()),
        rm: true,
        forcerm: true,
        ..Default::default()
    };
    let mut output =
        runtime
            .client()
            .build_image(options, None, Some(bollard::body_full(context.into())));
    while let Some(item) = output.next().await {
        match item {
            Ok(info) => {
                if let Some(line) = info.stream.as_deref().map(str::trim_end) {
                    if !line.is_empty() {
                        debug!(%tag, "build: {line}");
                    }
                }
            }
            Err(e) => {
                let error = match e {
                    bollard::errors::Error::DockerStreamError { error } => error,
                    bollard::errors::Error::DockerResponseServerError { message, .. } => message,
                    other => {
                        return Err(RuntimeError::Unavailable(format!(
                            "building {tag}: {other}"
                        )))
                    }
                };
                return Err(RuntimeError::Other(format!("building {tag}: {error}")));
            }
        }
    }
    Ok(())
}

fn build_context(busybox: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut archive = tar::Builder::new(Vec::new());
    let mut append = |name: &str, mode: u32, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_cksum();
        archive.append_data(&mut header, name, data)
    };
    append("Dockerfile", 0o644, BUSYBOX_DOCKERFILE.as_bytes())?;
    append("busybox", 0o755, busybox)?;
    archive.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_holds_dockerfile_and_executable_busybox() {
        let context = build_context(b"\x7fELF fake").unwrap();
        let mut archive = tar::Archive::new(context.as_slice());
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            seen.push((path, entry.header().mode().unwrap(), entry.size()));
        }
        assert_eq!(
            seen,
            vec![
                (
                    "Dockerfile".to_string(),
                    0o644,
                    BUSYBOX_DOCKERFILE.len() as u64
                ),
                ("busybox".to_string(), 0o755, 9),
            ]
        );
    }
}
