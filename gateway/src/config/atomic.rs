//! Replacing a file so that a crash or a full disk at any moment leaves either the old file or
//! the new one, whole: a temporary file beside it is written and synced, renamed over it, and
//! the folder synced (the rename is durable only then). Every file the daemon and the CLI
//! rewrite goes through here: the configuration file, SaveConfig's wg-quick file, the
//! forwards' state.
//!
//! A configuration file keeps its mode ([`replace_file`]): an operator who made it 0640 for a
//! group keeps that. Files that are the program's own ([`replace_private_file`]) are root's
//! alone whatever they were, as wg-quick's SaveConfig makes them.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

/// The mode of a file written where none was: it may hold a private key.
const NEW_FILE_MODE: u32 = 0o600;

/// Replaces the file at `path` (through symlinks: the file they point at) with `contents`,
/// keeping its mode (0600 for a new file).
pub fn replace_file(path: &Path, contents: &str) -> Result<(), String> {
    replace(path, contents, |target| {
        fs::metadata(target).map_or(NEW_FILE_MODE, |meta| meta.permissions().mode() & 0o7777)
    })
}

/// Replaces the file at `path` with `contents`, readable and writable by its owner alone
/// whatever its mode was.
pub fn replace_private_file(path: &Path, contents: &str) -> Result<(), String> {
    replace(path, contents, |_| NEW_FILE_MODE)
}

fn replace(path: &Path, contents: &str, mode_of: impl FnOnce(&Path) -> u32) -> Result<(), String> {
    let target = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mode = mode_of(&target);
    let mut temporary = target.clone().into_os_string();
    temporary.push(".tmp");
    let temporary = Path::new(&temporary);
    let fail = |action: &str, e: std::io::Error| {
        let _ = fs::remove_file(temporary);
        format!("cannot {action} {} to update {}: {e}", temporary.display(), target.display())
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(NEW_FILE_MODE)
        .open(temporary)
        .map_err(|e| fail("create", e))?;
    // `mode` applies only to a file it creates; a leftover of a crash keeps its own until this.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| fail("set the mode of", e))?;
    file.write_all(contents.as_bytes()).map_err(|e| fail("write", e))?;
    file.sync_all().map_err(|e| fail("sync", e))?;
    drop(file);
    fs::rename(temporary, &target).map_err(|e| fail("rename", e))?;
    let folder = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::File::open(folder)
        .and_then(|folder| folder.sync_all())
        .map_err(|e| format!("cannot sync {}: {e}", folder.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_replaced_whole_and_keeps_its_mode() {
        let folder = std::env::temp_dir().join(format!("gateway-atomic-{}", std::process::id()));
        fs::create_dir_all(&folder).unwrap();
        let path = folder.join("wg0.toml");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        fs::write(folder.join("wg0.toml.tmp"), "a leftover of a crash, longer than the rest")
            .unwrap();
        replace_file(&path, "[interface]\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "[interface]\n");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
        assert!(!folder.join("wg0.toml.tmp").exists());

        let fresh = folder.join("wg1.toml");
        replace_file(&fresh, "x").unwrap();
        assert_eq!(fs::metadata(&fresh).unwrap().permissions().mode() & 0o777, 0o600);

        let error = replace_file(&folder.join("absent/wg2.toml"), "x").unwrap_err();
        assert!(error.starts_with("cannot create "), "{error}");
        fs::remove_dir_all(&folder).unwrap();
    }

    #[test]
    fn a_private_file_is_the_owners_alone_whatever_it_was() {
        let folder =
            std::env::temp_dir().join(format!("gateway-atomic-private-{}", std::process::id()));
        fs::create_dir_all(&folder).unwrap();
        let path = folder.join("wg9.conf");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        replace_private_file(&path, "[Interface]\nnew\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "[Interface]\nnew\n");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(!folder.join("wg9.conf.tmp").exists());
        fs::remove_dir_all(&folder).unwrap();
    }
}
