//! A JSON-lines file sink: one serialised record per line, appended, flushed after each batch so
//! a reader (or a crash) never sees half a batch linger in a buffer.

use std::{
    fs::{File, OpenOptions, Permissions},
    io::{BufWriter, ErrorKind, Write as _},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use serde::Serialize;

/// The mode of a log flowmon creates, whatever its umask (the service's is 0077): other
/// programs of flowmon's group (a log shipper) read it. A log that exists keeps its mode.
pub const LOG_FILE_MODE: u32 = 0o640;

pub struct JsonLines {
    path: PathBuf,
    out: BufWriter<File>,
}

impl JsonLines {
    pub fn open(path: &Path) -> Result<Self> {
        let context = || format!("cannot open {} for appending", path.display());
        let mut options = OpenOptions::new();
        options.append(true);
        let file = match options.clone().create_new(true).open(path) {
            Ok(file) => {
                file.set_permissions(Permissions::from_mode(LOG_FILE_MODE))
                    .with_context(context)?;
                file
            }
            Err(err) if err.kind() == ErrorKind::AlreadyExists => {
                options.open(path).with_context(context)?
            }
            Err(err) => return Err(err).with_context(context),
        };
        Ok(Self {
            path: path.to_owned(),
            out: BufWriter::new(file),
        })
    }

    /// Appends `records` and flushes them to the file.
    pub fn write_all<'a, T: Serialize + 'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a T>,
    ) -> Result<()> {
        for record in records {
            serde_json::to_writer(&mut self.out, record)?;
            self.out.write_all(b"\n")?;
        }
        self.out
            .flush()
            .with_context(|| format!("cannot write to {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_log_is_readable_by_the_group_and_an_old_one_keeps_its_mode() {
        let dir = std::env::temp_dir().join(format!("flowmon-json-lines-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let new = dir.join("new.jsonl");
        JsonLines::open(&new).unwrap().write_all(&[1]).unwrap();
        assert_eq!(mode(&new), LOG_FILE_MODE);
        let old = dir.join("old.jsonl");
        std::fs::write(&old, "0\n").unwrap();
        std::fs::set_permissions(&old, Permissions::from_mode(0o600)).unwrap();
        JsonLines::open(&old).unwrap().write_all(&[1]).unwrap();
        assert_eq!(mode(&old), 0o600);
        assert_eq!(std::fs::read_to_string(&old).unwrap(), "0\n1\n");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
