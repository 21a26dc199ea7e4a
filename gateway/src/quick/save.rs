//! SaveConfig: the configuration file rewritten from the interface's live state, atomically
//! (a temporary file beside it, synced, then renamed over it), readable by root alone, so a
//! crash or a full disk leaves the old file whole and the private key never world-readable.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

/// Replaces the file at `path` (through symlinks: the file they point at) with `contents`.
pub fn write_atomically(path: &Path, contents: &str) -> Result<(), String> {
    let target = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut temporary = target.clone().into_os_string();
    temporary.push(".tmp");
    let temporary = Path::new(&temporary);
    let fail = |action: &str, e: std::io::Error| {
        let _ = fs::remove_file(temporary);
        format!("cannot {action} {} to save the configuration: {e}", temporary.display())
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(temporary)
        .map_err(|e| fail("create", e))?;
    // `mode` applies only to a file it creates; a leftover keeps its own until this.
    file.set_permissions(fs::Permissions::from_mode(0o600)).map_err(|e| fail("restrict", e))?;
    file.write_all(contents.as_bytes()).map_err(|e| fail("write", e))?;
    file.sync_all().map_err(|e| fail("sync", e))?;
    drop(file);
    fs::rename(temporary, &target).map_err(|e| fail("rename", e))?;
    if let Some(directory) = target.parent().and_then(|dir| fs::File::open(dir).ok()) {
        // The rename itself survives a crash only once the directory is synced.
        let _ = directory.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_with_mode_0600_and_leaves_no_temporary() {
        let directory =
            std::env::temp_dir().join(format!("gateway-save-test-{}", std::process::id()));
        fs::create_dir_all(&directory).unwrap();
        let path = directory.join("wg9.conf");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_atomically(&path, "[Interface]\nnew\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "[Interface]\nnew\n");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(!directory.join("wg9.conf.tmp").exists());
        fs::remove_dir_all(&directory).unwrap();
    }
}
