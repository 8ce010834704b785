//! Where the server key comes from (SPEC 13): `--server-key`
//! (`SUBSCRIBERD_SERVER_KEY`, 64 hex characters), else the file
//! `--server-key-file`, else, for a sled data directory, the file beside
//! it, `<data>.server-key`, created (mode 0600) on first use. Never inside
//! the data directory: a copy of that directory alone must reveal no API
//! key.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use subscriber_store::ServerKey;

use crate::cli::ServerKeyArgs;

/// A key, and the file just created for it, if one was.
pub struct Loaded {
    pub key: ServerKey,
    pub created: Option<PathBuf>,
}

/// The server key `args` name; with neither given, the one beside `data`
/// (created if missing) when there is a data directory to put it beside,
/// else none.
pub fn load(args: &ServerKeyArgs, data: Option<&Path>) -> Result<Option<Loaded>, String> {
    if let Some(text) = &args.server_key {
        let key = ServerKey::parse(text).map_err(|_| {
            "--server-key (SUBSCRIBERD_SERVER_KEY) is not 64 hexadecimal characters".to_owned()
        })?;
        return Ok(Some(Loaded { key, created: None }));
    }
    if let Some(path) = &args.server_key_file {
        return read(path).map(|key| Some(Loaded { key, created: None }));
    }
    let Some(data) = data else {
        return Ok(None);
    };
    let path = beside(data)?;
    if path.exists() {
        return read(&path).map(|key| Some(Loaded { key, created: None }));
    }
    create(&path).map(Some)
}

/// `<data>.server-key`, in the directory that holds `data`.
pub fn beside(data: &Path) -> Result<PathBuf, String> {
    let absolute =
        std::path::absolute(data).map_err(|e| format!("cannot resolve {}: {e}", data.display()))?;
    let name = absolute.file_name().ok_or_else(|| {
        format!(
            "cannot put a server key beside {}: give --server-key-file",
            data.display()
        )
    })?;
    let mut file = name.to_owned();
    file.push(".server-key");
    Ok(absolute.with_file_name(file))
}

fn read(path: &Path) -> Result<ServerKey, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the server key {}: {e}", path.display()))?;
    let key = ServerKey::parse(&text).map_err(|_| {
        format!(
            "the server key file {} does not hold 64 hexadecimal characters",
            path.display()
        )
    })?;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "the server key file can be read by other users; chmod 600 it");
        }
    }
    Ok(key)
}

/// A new key in a new file at `path` (mode 0600, synced with its
/// directory). Written whole beside and linked into place, so a process
/// that races this one reads either no file or the whole key.
fn create(path: &Path) -> Result<Loaded, String> {
    let failed =
        |e: std::io::Error| format!("cannot create the server key {}: {e}", path.display());
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(failed)?;
    let key = ServerKey::generate().map_err(|e| e.to_string())?;
    let temporary = path.with_extension(format!("server-key.{}.new", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(failed)?;
    let written = file
        .write_all(format!("{}\n", key.to_hex()).as_bytes())
        .and_then(|()| file.sync_all());
    let linked = written.and_then(|()| std::fs::hard_link(&temporary, path));
    let _ = std::fs::remove_file(&temporary);
    match linked {
        Ok(()) => {}
        // Another process made it first: use that one.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return read(path).map(|key| Loaded { key, created: None });
        }
        Err(e) => return Err(failed(e)),
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(failed)?;
    Ok(Loaded {
        key,
        created: Some(path.to_owned()),
    })
}

/// What a new key file is for, for the line that announces it.
pub fn created_message(path: &Path) -> String {
    format!(
        "Created the server key {} (mode 0600). It seals the API keys kept for Inbox HMAC checks and signs Inbox session tokens; keep it apart from copies of the data directory, and give every server of one store the same key.",
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_file_is_beside_the_data_directory() {
        let at = |data: &str| beside(Path::new(data)).expect("a path");
        assert_eq!(
            at("/var/lib/subscriberd/data"),
            PathBuf::from("/var/lib/subscriberd/data.server-key")
        );
        assert_eq!(
            at("/var/lib/subscriberd/data/"),
            PathBuf::from("/var/lib/subscriberd/data.server-key")
        );
        assert!(at("relative-data").is_absolute());
        assert!(beside(Path::new("/")).is_err());
    }

    #[test]
    fn a_key_file_is_created_once_with_mode_0600_and_then_read() {
        let dir = tempfile::tempdir().expect("dir");
        let data = dir.path().join("data");
        let args = ServerKeyArgs::default();
        let first = load(&args, Some(&data)).expect("loads").expect("a key");
        let path = first.created.clone().expect("created");
        assert_eq!(path, dir.path().join("data.server-key"));
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load(&args, Some(&data)).expect("loads").expect("a key");
        assert_eq!(again.key, first.key);
        assert_eq!(again.created, None);
        // Nothing of it inside the data directory, nor a leftover beside.
        assert!(!data.exists());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["data.server-key"]);
        // Without a data directory (PostgreSQL) and no key given: none.
        assert!(load(&args, None).expect("loads").is_none());
    }

    #[test]
    fn given_keys_win_and_bad_ones_are_one_line_errors() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("key");
        let key = ServerKey::generate().expect("key");
        std::fs::write(&file, key.to_hex()).expect("write");
        let from_file = ServerKeyArgs {
            server_key_file: Some(file.clone()),
            server_key: None,
        };
        let loaded = load(&from_file, None).expect("loads").expect("a key");
        assert_eq!(loaded.key, key);
        let from_text = ServerKeyArgs {
            server_key_file: None,
            server_key: Some(key.to_hex()),
        };
        assert_eq!(
            load(&from_text, Some(&dir.path().join("data")))
                .expect("loads")
                .expect("a key")
                .key,
            key
        );
        std::fs::write(&file, "nope").expect("write");
        let e = load(&from_file, None).err().expect("refused");
        assert!(e.contains("does not hold 64 hexadecimal"), "{e}");
        let missing = ServerKeyArgs {
            server_key_file: Some(dir.path().join("absent")),
            server_key: None,
        };
        assert!(load(&missing, None).is_err());
        let bad_text = ServerKeyArgs {
            server_key_file: None,
            server_key: Some("xyz".into()),
        };
        assert!(load(&bad_text, None).is_err());
    }
}
