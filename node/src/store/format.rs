//! The format version of a data directory: the file [`FORMAT_FILE_NAME`]
//! holds `shoal-store-format <version>`. It is read before anything else in
//! the directory is opened, so a binary never writes into a store laid out
//! by a build it does not know.
//!
//! A directory without the file is either empty (new: stamped with
//! [`FORMAT_VERSION`]) or laid out before versions were recorded, which is
//! format 1 (stamped 1, then opened as usual).

use std::io::Write;
use std::path::{Path, PathBuf};

use super::error::from_dir_io;
use super::StoreError;

/// A data directory format version.
pub type FormatVersion = u32;

/// The format this build creates.
pub const FORMAT_VERSION: FormatVersion = 1;

/// The formats this build opens, newest first.
pub const FORMAT_VERSIONS_READ: &[FormatVersion] = &[FORMAT_VERSION];

/// The format of a directory written before the marker existed.
pub const UNMARKED_FORMAT_VERSION: FormatVersion = 1;

/// The marker file inside the data directory.
pub const FORMAT_FILE_NAME: &str = "FORMAT";

/// The marker's first word.
const MARKER_WORD: &str = "shoal-store-format";

/// The largest marker file read (it is one short line).
const MARKER_LEN_MAX: u64 = 256;

/// `shoal-store-format <version>\n`.
pub fn marker(version: FormatVersion) -> String {
    format!("{MARKER_WORD} {version}\n")
}

/// The version a marker names, `None` when it is not a marker.
pub fn parse_marker(text: &str) -> Option<FormatVersion> {
    let line = text.strip_suffix('\n').unwrap_or(text);
    let digits = line.strip_prefix(MARKER_WORD)?.strip_prefix(' ')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Whether this build opens format `found` of `data_dir`.
pub fn readable(data_dir: &Path, found: FormatVersion) -> Result<(), StoreError> {
    if FORMAT_VERSIONS_READ.contains(&found) {
        return Ok(());
    }
    Err(StoreError::UnsupportedFormat {
        data_dir: data_dir.to_path_buf(),
        found,
        reads: FORMAT_VERSIONS_READ.to_vec(),
    })
}

/// Reads the format of `data_dir` (which exists), refuses one this build
/// cannot open, and stamps a directory that has no marker yet. Returns the
/// directory's format.
pub fn check_or_stamp(data_dir: &Path) -> Result<FormatVersion, StoreError> {
    let path = data_dir.join(FORMAT_FILE_NAME);
    let dir_err = |e| from_dir_io(data_dir.to_path_buf(), e);
    match std::fs::metadata(&path) {
        Ok(meta) => {
            if meta.len() > MARKER_LEN_MAX {
                return Err(bad_marker(path, "longer than a format line"));
            }
            let bytes = std::fs::read(&path).map_err(dir_err)?;
            let text = String::from_utf8_lossy(&bytes);
            let found = parse_marker(&text).ok_or_else(|| bad_marker(path.clone(), &text))?;
            readable(data_dir, found)?;
            Ok(found)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let version = if is_empty(data_dir).map_err(dir_err)? {
                FORMAT_VERSION
            } else {
                UNMARKED_FORMAT_VERSION
            };
            readable(data_dir, version)?;
            stamp(data_dir, version).map_err(dir_err)?;
            Ok(version)
        }
        Err(e) => Err(dir_err(e)),
    }
}

fn bad_marker(path: PathBuf, content: &str) -> StoreError {
    StoreError::BadFormatMarker {
        path,
        content: content.chars().take(80).collect(),
    }
}

/// Whether the directory holds nothing yet (the write probe aside).
fn is_empty(data_dir: &Path) -> std::io::Result<bool> {
    for entry in std::fs::read_dir(data_dir)? {
        if entry?.file_name() != ".shoal-write-probe" {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Writes the marker durably: a temporary file, synced, renamed over, and
/// the directory synced.
fn stamp(data_dir: &Path, version: FormatVersion) -> std::io::Result<()> {
    let tmp = data_dir.join(format!("{FORMAT_FILE_NAME}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(marker(version).as_bytes())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, data_dir.join(FORMAT_FILE_NAME))?;
    std::fs::File::open(data_dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_parse_in_one_spelling_only() {
        assert_eq!(parse_marker(&marker(1)), Some(1));
        assert_eq!(parse_marker("shoal-store-format 7"), Some(7));
        for bad in [
            "",
            "shoal-store-format",
            "shoal-store-format ",
            "shoal-store-format x",
            "shoal-store-format  1",
            "shoal-store-format 1\n\n",
            "shoal-store-format 99999999999",
            "redb",
        ] {
            assert_eq!(parse_marker(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_new_directory_is_stamped_with_this_builds_format() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(check_or_stamp(dir.path()).unwrap(), FORMAT_VERSION);
        let text = std::fs::read_to_string(dir.path().join(FORMAT_FILE_NAME)).unwrap();
        assert_eq!(text, marker(FORMAT_VERSION));
        assert_eq!(check_or_stamp(dir.path()).unwrap(), FORMAT_VERSION);
    }

    #[test]
    fn an_unmarked_directory_with_data_is_format_1_and_gets_stamped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("store.redb"), b"data").unwrap();
        assert_eq!(check_or_stamp(dir.path()).unwrap(), UNMARKED_FORMAT_VERSION);
        let text = std::fs::read_to_string(dir.path().join(FORMAT_FILE_NAME)).unwrap();
        assert_eq!(text, marker(UNMARKED_FORMAT_VERSION));
    }

    #[test]
    fn a_newer_format_is_refused_naming_the_directory_and_both_versions() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FORMAT_FILE_NAME), marker(9)).unwrap();
        let err = check_or_stamp(dir.path()).unwrap_err();
        assert!(
            matches!(&err, StoreError::UnsupportedFormat { found: 9, .. }),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        assert!(text.contains("format 9"), "{text}");
        assert!(text.contains("reads format 1"), "{text}");
        // Refused means untouched.
        let kept = std::fs::read_to_string(dir.path().join(FORMAT_FILE_NAME)).unwrap();
        assert_eq!(kept, marker(9));
    }

    #[test]
    fn a_garbled_marker_is_refused_not_guessed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FORMAT_FILE_NAME), "sqlite 3\n").unwrap();
        let err = check_or_stamp(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::BadFormatMarker { .. }), "{err:?}");
        std::fs::write(dir.path().join(FORMAT_FILE_NAME), vec![b'1'; 4096]).unwrap();
        assert!(matches!(
            check_or_stamp(dir.path()),
            Err(StoreError::BadFormatMarker { .. })
        ));
    }
}
