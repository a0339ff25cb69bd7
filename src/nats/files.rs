//! The files settings name (`.creds`, certificates, keys), read for a connect: off the runtime's
//! threads, by the connect's deadline, at most [`MAX_FILE_LEN`] bytes, regular files only.
//!
//! The runtime may have a single thread that every queue of the process shares, so a read that
//! waits (a FIFO nobody writes, a stalled network file system) must not happen on it; and a
//! device such as `/dev/zero` must not be read without end. Every refusal is
//! [`Error::InvalidConfig`] naming the setting and the path.

use std::{
    io::{self, Read},
    path::Path,
    time::Duration,
};

use tokio::time::Instant;

use crate::{config::json::invalid, error::Error, error::Result};

/// The largest file a setting may name: 1 MiB. Credentials, certificate chains and keys take a few
/// KB.
pub const MAX_FILE_LEN: u64 = 1 << 20;

/// When a connect must be done by: `connectTimeout` after it started.
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    /// The instant.
    pub at: Instant,
    /// The `connectTimeout` it was set from, for messages.
    pub connect_timeout: Duration,
}

impl Deadline {
    /// `connect_timeout` from now.
    pub fn after(connect_timeout: Duration) -> Self {
        Deadline {
            at: Instant::now() + connect_timeout,
            connect_timeout,
        }
    }
}

/// Reads the file `setting` names, in full, by `deadline`.
pub async fn read(setting: &str, path: &Path, deadline: Deadline) -> Result<Vec<u8>> {
    let owned = path.to_path_buf();
    let reading = tokio::task::spawn_blocking(move || read_regular_file(&owned));
    match tokio::time::timeout_at(deadline.at, reading).await {
        Ok(Ok(Ok(bytes))) => Ok(bytes),
        Ok(Ok(Err(reason))) => Err(unusable(setting, path, &reason)),
        Ok(Err(failed)) => Err(unusable(
            setting,
            path,
            &format!("reading it failed: {failed}"),
        )),
        Err(_) => Err(unusable(
            setting,
            path,
            &format!(
                "it could not be read within connectTimeout ({}ms)",
                deadline.connect_timeout.as_millis()
            ),
        )),
    }
}

/// Reads a regular file of at most [`MAX_FILE_LEN`] bytes; the error says why not.
fn read_regular_file(path: &Path) -> std::result::Result<Vec<u8>, String> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    // Opening a FIFO for reading waits for a writer; opened without waiting, it is then refused
    // as not a regular file. (Regular files ignore the flag.)
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = options.open(path).map_err(|err| io_reason(&err))?;
    let metadata = file.metadata().map_err(|err| io_reason(&err))?;
    if !metadata.is_file() {
        return Err(
            "it is not a regular file (FIFOs, sockets, devices and folders are not read)".into(),
        );
    }
    let too_large = || format!("it is larger than {MAX_FILE_LEN} bytes (1 MiB)");
    if metadata.len() > MAX_FILE_LEN {
        return Err(too_large());
    }
    // The size can change after the check (or be reported as 0, as /proc does): read with a limit.
    let mut bytes = Vec::new();
    file.take(MAX_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| io_reason(&err))?;
    if bytes.len() as u64 > MAX_FILE_LEN {
        return Err(too_large());
    }
    Ok(bytes)
}

/// The error for a file `setting` names that cannot be used.
pub fn unusable(setting: &str, path: &Path, reason: &str) -> Error {
    invalid(format!(
        "config.{setting} {} cannot be used: {reason}",
        path.display()
    ))
}

/// An I/O error's message without the path some of them repeat.
fn io_reason(err: &io::Error) -> String {
    match err.kind() {
        io::ErrorKind::NotFound => "no such file".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deadline() -> Deadline {
        Deadline::after(Duration::from_secs(5))
    }

    #[tokio::test]
    async fn regular_files_up_to_the_limit_are_read() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = dir.path().join("just-fits.pem");
        std::fs::write(&path, vec![b'a'; MAX_FILE_LEN as usize]).expect("write");
        let bytes = read("tls.caFile", &path, deadline()).await.expect("read");
        assert_eq!(bytes.len() as u64, MAX_FILE_LEN);
    }

    #[tokio::test]
    async fn larger_files_devices_and_folders_are_invalid_config() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let large = dir.path().join("large.creds");
        std::fs::write(&large, vec![b'a'; MAX_FILE_LEN as usize + 1]).expect("write");
        for path in [
            large.as_path(),
            Path::new("/dev/zero"),
            Path::new("/dev/null"),
            dir.path(),
            &dir.path().join("missing"),
        ] {
            let err = read("auth.credsFile", path, deadline())
                .await
                .expect_err("refused");
            assert_eq!(err.code(), "ERR_PQ_INVALID_CONFIG", "{err}");
            let message = err.to_string();
            assert!(message.contains("auth.credsFile"), "{message}");
            assert!(message.contains(&path.display().to_string()), "{message}");
        }
    }
}
