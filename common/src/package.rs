//! Handler packages: a function's handler folder packed by `fjord deploy` as a deterministic
//! `.tar.gz`, named by its SHA-256, kept in the installation's packages object store (NATS), and
//! unpacked by each worker host into its own cache. No shared filesystem is needed: a worker on
//! another host fetches the package by digest.
//!
//! Packing is deterministic (sorted paths, zeroed times and owners) so deploying an unchanged
//! folder yields the same digest, and hosts keep the dependencies they installed for it.

use std::path::{Component, Path};

use async_nats::jetstream::{self, object_store};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::Error;
use crate::queue::Queue;

/// Folders never packed: dependencies are installed on the worker host from `package.json` /
/// `requirements.txt`, and the rest is build or editor debris.
const SKIPPED: [&str; 6] = [
    "node_modules",
    ".git",
    "__pycache__",
    ".python",
    ".venv",
    "build",
];

/// The largest package accepted (packed size).
pub const MAX_PACKAGE_BYTES: usize = 64 * 1024 * 1024;

/// Hex SHA-256 of `bytes`: a package's name.
pub fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `text` looks like a package digest (64 lowercase hex digits).
pub fn is_digest(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Packs `dir` (files and folders, symlinks as links) into a deterministic `.tar.gz`.
pub fn pack(dir: &Path) -> Result<Vec<u8>, Error> {
    let mut paths = Vec::new();
    collect(dir, Path::new(""), &mut paths)
        .map_err(|e| Error::invalid("handler", format!("reading {}: {e}", dir.display())))?;
    paths.sort();
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    tar.follow_symlinks(false);
    for relative in paths {
        tar.append_path_with_name(dir.join(&relative), &relative)
            .map_err(|e| {
                Error::invalid("handler", format!("packing {}: {e}", relative.display()))
            })?;
    }
    let gz = tar
        .into_inner()
        .map_err(|e| Error::invalid("handler", format!("packing: {e}")))?;
    let bytes = gz
        .finish()
        .map_err(|e| Error::invalid("handler", format!("packing: {e}")))?;
    if bytes.len() > MAX_PACKAGE_BYTES {
        return Err(Error::invalid(
            "handler",
            format!(
                "{} packs to {} bytes, over the limit of {MAX_PACKAGE_BYTES}",
                dir.display(),
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}

fn collect(root: &Path, relative: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(root.join(relative))? {
        let entry = entry?;
        let name = entry.file_name();
        if SKIPPED.iter().any(|s| name == *s) {
            continue;
        }
        let path = relative.join(&name);
        let kind = entry.file_type()?;
        if kind.is_dir() {
            out.push(path.clone());
            collect(root, &path, out)?;
        } else if kind.is_file() || kind.is_symlink() {
            out.push(path);
        }
    }
    Ok(())
}

/// Unpacks a package into `dest` (which must exist and be empty). Entries that would land
/// outside `dest` (absolute paths, `..`) and anything but files, folders and links inside the
/// package are refused.
pub fn unpack(bytes: &[u8], dest: &Path) -> Result<(), Error> {
    let bad = |e: std::io::Error| Error::Malformed(format!("package: {e}"));
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(false);
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.into_owned();
        if path
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(Error::Malformed(format!(
                "package entry {} leaves its folder",
                path.display()
            )));
        }
        if let tar::EntryType::Symlink = entry.header().entry_type()
            && let Some(target) = entry.link_name().map_err(bad)?
            && (target.is_absolute() || target.components().any(|c| c == Component::ParentDir))
        {
            return Err(Error::Malformed(format!(
                "package link {} points outside its folder",
                path.display()
            )));
        }
        entry.unpack_in(dest).map_err(bad)?;
    }
    Ok(())
}

/// The packages object store.
#[derive(Clone)]
pub struct Packages {
    store: object_store::ObjectStore,
}

impl Packages {
    pub async fn open(queue: &Queue) -> Result<Self, Error> {
        let store = ensure_store(&queue.js, &queue.names.packages_bucket()).await?;
        Ok(Packages { store })
    }

    /// Stores a package under its digest; storing the same bytes again is a no-op. Returns
    /// whether it was new.
    pub async fn put(&self, bytes: &[u8]) -> Result<bool, Error> {
        let name = digest(bytes);
        if self.exists(&name).await? {
            return Ok(false);
        }
        let mut reader = bytes;
        self.store
            .put(name.as_str(), &mut reader)
            .await
            .map_err(Error::nats)?;
        Ok(true)
    }

    pub async fn exists(&self, digest: &str) -> Result<bool, Error> {
        match self.store.info(digest).await {
            Ok(info) => Ok(!info.deleted),
            Err(e) if e.kind() == object_store::InfoErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::nats(e)),
        }
    }

    /// The package's bytes, checked against its digest.
    pub async fn get(&self, digest: &str) -> Result<Bytes, Error> {
        let mut reader = self.store.get(digest).await.map_err(Error::nats)?;
        let mut out = Vec::new();
        reader
            .read_to_end(&mut out)
            .await
            .map_err(|e| Error::Nats(format!("reading package {digest}: {e}")))?;
        if self::digest(&out) != digest {
            return Err(Error::Malformed(format!(
                "package {digest} does not match its digest"
            )));
        }
        Ok(Bytes::from(out))
    }
}

/// Opens an object store bucket, creating it on first use.
pub(crate) async fn ensure_store(
    js: &jetstream::Context,
    bucket: &str,
) -> Result<object_store::ObjectStore, Error> {
    match js.get_object_store(bucket).await {
        Ok(store) => Ok(store),
        Err(_) => js
            .create_object_store(object_store::Config {
                bucket: bucket.to_owned(),
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(Error::nats),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_is_deterministic_and_round_trips() {
        let dir = std::env::temp_dir().join(format!("fjord-pack-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("lib")).unwrap();
        std::fs::create_dir_all(dir.join("node_modules/x")).unwrap();
        std::fs::write(dir.join("handler.js"), "module.exports = 1").unwrap();
        std::fs::write(dir.join("lib/util.js"), "x").unwrap();
        std::fs::write(dir.join("node_modules/x/index.js"), "skipped").unwrap();
        let a = pack(&dir).unwrap();
        let b = pack(&dir).unwrap();
        assert_eq!(digest(&a), digest(&b));
        assert!(is_digest(&digest(&a)));
        let out = dir.with_extension("out");
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).unwrap();
        unpack(&a, &out).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("lib/util.js")).unwrap(),
            "x"
        );
        assert!(!out.join("node_modules").exists());
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&out).unwrap();
    }
}
