//! The data directory holds personal data (the SQLite database, dev-mode emails) and keys (dev
//! mode): what tandem creates there is for its own user only, directories 0700 and files 0600.
//! Modes are set explicitly after creating, so a permissive umask cannot widen them.

use std::path::Path;

#[cfg(unix)]
const DIRECTORY_MODE: u32 = 0o700;
#[cfg(unix)]
const FILE_MODE: u32 = 0o600;

/// Creates `dir` and any missing parents; a directory created here is the owner's only. One
/// that already exists keeps its mode: an operator who made it chose who may read it.
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(DIRECTORY_MODE);
        builder.create(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIRECTORY_MODE))
    }
    #[cfg(not(unix))]
    builder.create(dir)
}

/// Options that create a file only its owner may read and write; `restrict` the opened file
/// too, since the umask may have narrowed the mode below 0600 (never widened it).
pub fn options() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(FILE_MODE);
    }
    options
}

/// Gives an opened file exactly mode 0600.
pub fn restrict(file: &std::fs::File) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        Ok(())
    }
}

/// Creates `path` empty with mode 0600 unless it exists. A SQLite database created this way
/// keeps the mode, and SQLite gives its `-wal` and `-shm` files the database file's mode.
pub fn create_empty_file(path: &Path) -> std::io::Result<()> {
    match options().write(true).create_new(true).open(path) {
        Ok(file) => restrict(&file),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(err),
    }
}
