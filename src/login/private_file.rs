//! The files `login` writes the Secret manifest into: `--output`, and the file that keeps the
//! refresh token when its destination fails (or while `--apply` writes it). Each is a new file
//! only its owner can read: a refresh token never goes into an existing file, through a link, or
//! into a file others can read (as a shell redirection creates).

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Writes `contents` into a new file at `path` with mode 0600. `create_new` (O_CREAT|O_EXCL)
/// refuses any existing path, a symbolic link included, so nothing is overwritten or followed.
pub fn write_new(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    let written = file.write_all(contents).and_then(|()| file.sync_all());
    if written.is_err() {
        // A partial manifest is of no use; the caller keeps the token elsewhere.
        let _ = std::fs::remove_file(path);
    }
    written
}

/// Keeps the manifest of the Secret `namespace/name` in a new file in the current directory, or
/// else the temporary directory: its path, or why no place took it.
pub fn keep(namespace: &str, name: &str, contents: &[u8]) -> Result<PathBuf, String> {
    let file_name = kept_file_name(namespace, name, rand::random());
    let mut failures = Vec::new();
    for dir in std::env::current_dir().into_iter().chain([std::env::temp_dir()]) {
        let path = dir.join(&file_name);
        match write_new(&path, contents) {
            Ok(()) => return Ok(path),
            Err(err) => failures.push(format!("{}: {err}", path.display())),
        }
    }
    Err(failures.join("; "))
}

/// A name that says what the file holds; random so that runs do not collide. Names read from a
/// file are not validated like the API server's, so anything but `[A-Za-z0-9.-]` becomes `_`:
/// the name stays one path component.
fn kept_file_name(namespace: &str, name: &str, random: u32) -> String {
    let safe = |c: char| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' };
    let stem: String = format!("{namespace}.{name}").chars().map(safe).collect();
    format!("{stem}.refresh-token-{random:08x}.yaml")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_file_only_its_owner_reads_and_never_an_existing_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.yaml");
        write_new(&path, b"secret manifest").expect("new file");
        assert_eq!(std::fs::read(&path).expect("read"), b"secret manifest");
        #[cfg(unix)]
        {
            use std::os::unix::fs::{PermissionsExt, symlink};
            let mode = std::fs::metadata(&path).expect("metadata").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            // A link, even to a path that does not exist yet, is not followed.
            let (link, target) = (dir.path().join("link.yaml"), dir.path().join("elsewhere.yaml"));
            symlink(&target, &link).expect("symlink");
            assert_eq!(write_new(&link, b"x").expect_err("link").kind(), io::ErrorKind::AlreadyExists);
            assert!(!target.exists());
        }
        assert_eq!(write_new(&path, b"other").expect_err("exists").kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).expect("read"), b"secret manifest", "not overwritten");
    }

    #[test]
    fn the_kept_file_name_is_one_path_component() {
        assert_eq!(kept_file_name("team-a", "user-token", 0xab), "team-a.user-token.refresh-token-000000ab.yaml");
        assert_eq!(kept_file_name("ns", "../x/y", 1), "ns..._x_y.refresh-token-00000001.yaml");
    }
}
