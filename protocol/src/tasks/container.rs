//! What a container task asks for: the image, bind mounts and network of
//! the docker driver ([`super::Driver::Docker`]). Parsed and checked here
//! so that every host refuses the same specs; how a node runs them is the
//! node's business.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Longest image reference accepted (docker's own limit on a name is
/// lower; this bounds the record).
pub const MAX_IMAGE_BYTES: usize = 512;
/// Most bind mounts of one container task.
pub const MAX_MOUNTS: usize = 32;
/// Longest path on either side of a mount.
pub const MAX_MOUNT_PATH_BYTES: usize = 1_024;

/// A container task: the image and what it sees of the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Image reference, such as `busybox:1.36` or `registry/app@sha256:..`.
    /// It must already be on the node: nothing is pulled while a lease runs.
    pub image: String,
    /// Host directories or files bound into the container.
    pub mounts: Vec<Mount>,
    /// The container's network.
    pub network: Network,
}

/// One bind mount, `SRC:DST[:ro]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Absolute path on the node.
    pub source: String,
    /// Absolute path in the container.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// The container's network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// Loopback only (the default: a task reaches nothing it was not given).
    #[default]
    None,
    /// Docker's default bridge: outbound traffic through the node's NAT.
    Bridge,
}

/// Why a container spec was refused. No state was changed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ContainerError {
    /// The image reference is empty.
    #[error("image: empty")]
    EmptyImage,
    /// The image reference is longer than [`MAX_IMAGE_BYTES`].
    #[error("image: longer than {MAX_IMAGE_BYTES} bytes")]
    ImageTooLong,
    /// The image reference holds a character no reference may hold, or
    /// starts with one that docker would read as a flag.
    #[error("image: {0:?} is not an image reference (want letters, digits and ._-/:@, starting with a letter or digit)")]
    BadImage(String),
    /// More than [`MAX_MOUNTS`] mounts.
    #[error("mount: more than {MAX_MOUNTS} mounts")]
    TooManyMounts,
    /// A mount is not `SRC:DST` or `SRC:DST:ro`.
    #[error("mount: {0:?} is not SRC:DST or SRC:DST:ro")]
    MountSyntax(String),
    /// A side of a mount is not an absolute path.
    #[error("mount: {0:?} is not an absolute path")]
    MountRelative(String),
    /// A side of a mount holds `..`, a comma, a quote, a NUL or a newline,
    /// or is longer than [`MAX_MOUNT_PATH_BYTES`].
    #[error("mount: {0:?} holds `..`, a comma, a quote, a control character, or is too long")]
    MountPath(String),
    /// A mount would cover the container's root.
    #[error("mount: the target may not be /")]
    MountOverRoot,
    /// A network name other than `none` and `bridge`.
    #[error("network: {0:?} is not one of \"none\", \"bridge\"")]
    BadNetwork(String),
    /// An environment entry a container cannot receive: its name holds
    /// whitespace or starts with `#`, or its value holds a line break
    /// (the environment travels as a file of `KEY=VALUE` lines, so that
    /// its values never show on a command line).
    #[error("env: {0:?} cannot be passed to a container (whitespace or a leading # in the name, or a line break in the value)")]
    Env(String),
}

impl ContainerError {
    /// The submit field the error is about.
    pub fn field(&self) -> &'static str {
        match self {
            ContainerError::EmptyImage
            | ContainerError::ImageTooLong
            | ContainerError::BadImage(_) => "image",
            ContainerError::TooManyMounts
            | ContainerError::MountSyntax(_)
            | ContainerError::MountRelative(_)
            | ContainerError::MountPath(_)
            | ContainerError::MountOverRoot => "mounts",
            ContainerError::BadNetwork(_) => "network",
            ContainerError::Env(_) => "env",
        }
    }
}

/// Checks that an environment entry survives docker's `--env-file` format
/// unchanged.
pub fn validate_env(key: &str, value: &str) -> Result<(), ContainerError> {
    let bad_key = key.starts_with('#') || key.chars().any(char::is_whitespace);
    let bad_value = value.contains(['\n', '\r']);
    if bad_key || bad_value {
        return Err(ContainerError::Env(key.to_string()));
    }
    Ok(())
}

impl ContainerSpec {
    /// A container of `image` with no mounts and no network.
    pub fn new(image: impl Into<String>) -> ContainerSpec {
        ContainerSpec {
            image: image.into(),
            mounts: Vec::new(),
            network: Network::None,
        }
    }

    /// Checks the image and every mount.
    pub fn validate(&self) -> Result<(), ContainerError> {
        validate_image(&self.image)?;
        if self.mounts.len() > MAX_MOUNTS {
            return Err(ContainerError::TooManyMounts);
        }
        self.mounts.iter().try_for_each(Mount::validate)
    }
}

/// Checks an image reference: docker's reference characters, not starting
/// with `-` (it is one word of docker's command line).
pub fn validate_image(image: &str) -> Result<(), ContainerError> {
    if image.is_empty() {
        return Err(ContainerError::EmptyImage);
    }
    if image.len() > MAX_IMAGE_BYTES {
        return Err(ContainerError::ImageTooLong);
    }
    let first_ok = image.as_bytes()[0].is_ascii_alphanumeric();
    let all_ok = image
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/' | b':' | b'@'));
    if first_ok && all_ok {
        Ok(())
    } else {
        Err(ContainerError::BadImage(image.to_string()))
    }
}

impl Mount {
    /// Parses `SRC:DST` or `SRC:DST:ro` (also `:rw`) and checks it.
    pub fn parse(text: &str) -> Result<Mount, ContainerError> {
        let syntax = || ContainerError::MountSyntax(text.to_string());
        let parts: Vec<&str> = text.split(':').collect();
        let (source, target, read_only) = match parts.as_slice() {
            [s, t] => (*s, *t, false),
            [s, t, "ro"] => (*s, *t, true),
            [s, t, "rw"] => (*s, *t, false),
            _ => return Err(syntax()),
        };
        if source.is_empty() || target.is_empty() {
            return Err(syntax());
        }
        let mount = Mount {
            source: source.to_string(),
            target: target.to_string(),
            read_only,
        };
        mount.validate()?;
        Ok(mount)
    }

    /// Checks both paths.
    pub fn validate(&self) -> Result<(), ContainerError> {
        check_mount_path(&self.source)?;
        check_mount_path(&self.target)?;
        if self.target.trim_end_matches('/').is_empty() {
            return Err(ContainerError::MountOverRoot);
        }
        Ok(())
    }
}

/// An absolute path docker's `--mount` list syntax carries unchanged.
fn check_mount_path(path: &str) -> Result<(), ContainerError> {
    if !path.starts_with('/') {
        return Err(ContainerError::MountRelative(path.to_string()));
    }
    let bad_char = path
        .chars()
        .any(|c| c.is_control() || matches!(c, ',' | '"' | ':'));
    let dot_dot = path.split('/').any(|part| part == "..");
    if bad_char || dot_dot || path.len() > MAX_MOUNT_PATH_BYTES {
        return Err(ContainerError::MountPath(path.to_string()));
    }
    Ok(())
}

impl std::fmt::Display for Mount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.source, self.target)?;
        if self.read_only {
            f.write_str(":ro")?;
        }
        Ok(())
    }
}

impl Network {
    /// Parses `none` or `bridge`.
    pub fn parse(text: &str) -> Result<Network, ContainerError> {
        match text {
            "none" => Ok(Network::None),
            "bridge" => Ok(Network::Bridge),
            other => Err(ContainerError::BadNetwork(other.to_string())),
        }
    }

    /// The name docker knows it by.
    pub fn as_str(&self) -> &'static str {
        match self {
            Network::None => "none",
            Network::Bridge => "bridge",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_parse_with_an_optional_read_only_flag() {
        let m = Mount::parse("/data/in:/in:ro").unwrap();
        assert_eq!(
            (m.source.as_str(), m.target.as_str(), m.read_only),
            ("/data/in", "/in", true)
        );
        assert_eq!(m.to_string(), "/data/in:/in:ro");
        let m = Mount::parse("/srv:/srv").unwrap();
        assert!(!m.read_only);
        assert!(!Mount::parse("/a:/b:rw").unwrap().read_only);
    }

    #[test]
    fn bad_mounts_are_refused_with_the_reason() {
        use ContainerError::*;
        type Want = fn(&ContainerError) -> bool;
        let cases: [(&str, Want); 10] = [
            ("/a", |e| matches!(e, MountSyntax(_))),
            ("/a:/b:rx", |e| matches!(e, MountSyntax(_))),
            ("/a:/b:ro:x", |e| matches!(e, MountSyntax(_))),
            (":/b", |e| matches!(e, MountSyntax(_))),
            ("rel:/b", |e| matches!(e, MountRelative(_))),
            ("/a:rel", |e| matches!(e, MountRelative(_))),
            ("/a/../etc:/b", |e| matches!(e, MountPath(_))),
            ("/a,type=volume:/b", |e| matches!(e, MountPath(_))),
            ("/a\n:/b", |e| matches!(e, MountPath(_))),
            ("/a:/", |e| matches!(e, MountOverRoot)),
        ];
        for (text, want) in cases {
            let e = Mount::parse(text).unwrap_err();
            assert!(want(&e), "{text:?} gave {e:?}");
        }
        let long = format!("/{}", "x".repeat(MAX_MOUNT_PATH_BYTES));
        assert!(Mount::parse(&format!("{long}:/b")).is_err());
    }

    #[test]
    fn env_entries_that_an_env_file_would_change_are_refused() {
        assert_eq!(validate_env("A", "x y = z "), Ok(()));
        for (k, v) in [
            ("A", "two\nlines"),
            ("A", "cr\r"),
            ("#A", "1"),
            ("A B", "1"),
            (" A", "1"),
        ] {
            assert_eq!(
                validate_env(k, v),
                Err(ContainerError::Env(k.into())),
                "{k:?}={v:?}"
            );
        }
        assert_eq!(ContainerError::Env("A".into()).field(), "env");
        assert_eq!(ContainerError::MountOverRoot.field(), "mounts");
        assert_eq!(ContainerError::EmptyImage.field(), "image");
    }

    #[test]
    fn networks_are_none_or_bridge() {
        assert_eq!(Network::parse("none"), Ok(Network::None));
        assert_eq!(Network::parse("bridge"), Ok(Network::Bridge));
        assert_eq!(
            Network::parse("host"),
            Err(ContainerError::BadNetwork("host".into()))
        );
        assert_eq!(Network::default(), Network::None);
        assert_eq!(Network::Bridge.as_str(), "bridge");
    }

    #[test]
    fn image_references_that_docker_would_misread_are_refused() {
        for good in [
            "busybox",
            "shoal-test-busybox:latest",
            "registry.example:5000/team/app:1.2",
            "app@sha256:0123abcd",
        ] {
            assert_eq!(validate_image(good), Ok(()), "{good}");
        }
        assert_eq!(validate_image(""), Err(ContainerError::EmptyImage));
        for bad in ["--privileged", "-v", "a b", "a;b", ".hidden", "img\n"] {
            assert!(
                matches!(validate_image(bad), Err(ContainerError::BadImage(_))),
                "{bad:?}"
            );
        }
        let long = "a".repeat(MAX_IMAGE_BYTES + 1);
        assert_eq!(validate_image(&long), Err(ContainerError::ImageTooLong));
        let mut spec = ContainerSpec::new("busybox");
        spec.mounts = vec![Mount::parse("/a:/b").unwrap(); MAX_MOUNTS + 1];
        assert_eq!(spec.validate(), Err(ContainerError::TooManyMounts));
    }
}
