//! The shipped image, for real: the static binary built by
//! `scripts/release.sh` goes into the FROM-scratch image of
//! deploy/docker/Dockerfile, runs in an otherwise empty container, and three
//! such containers form a party on a Docker network this test creates; a
//! `docker kill` is seen as a member going down. Skipped (with the reason
//! printed) where Docker is absent or `SHOAL_STATIC_BIN` is not set.

use serde_json::Value;
use shoal_tests::agents::{http_get, wait_for};
use shoal_tests::docker::docker;
use shoal_tests::repo_root;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const NODES: [&str; 3] = ["c1", "c2", "c3"];
const POLL: Duration = Duration::from_millis(250);
/// Tries at picking a private subnet no other network on this host uses.
const SUBNET_TRIES: u32 = 8;

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Why this machine cannot run the suite, if it cannot.
fn skip_reason() -> Option<String> {
    if std::env::var_os("SHOAL_STATIC_BIN").is_none() {
        return Some(
            "SHOAL_STATIC_BIN is not set (scripts/release.sh, then SHOAL_STATIC_BIN=dist/shoal)"
                .into(),
        );
    }
    match Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => None,
        _ => Some("no usable Docker engine (`docker info` failed)".into()),
    }
}

/// Everything the test made in Docker, removed on drop even when an
/// assertion failed half-way.
struct DockerScope {
    tag: String,
    image: Option<String>,
    network: Option<String>,
    containers: Vec<String>,
}

impl DockerScope {
    fn new() -> DockerScope {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        DockerScope {
            tag: format!("shoal-e2e-{}-{nanos}", std::process::id()),
            image: None,
            network: None,
            containers: Vec::new(),
        }
    }

    fn container_name(&self, node: &str) -> String {
        format!("{}-{node}", self.tag)
    }
}

impl Drop for DockerScope {
    fn drop(&mut self) {
        for name in &self.containers {
            let _ = docker(&["rm", "-f", "-v", name]);
        }
        if let Some(network) = &self.network {
            let _ = docker(&["network", "rm", network]);
        }
        if let Some(image) = &self.image {
            let _ = docker(&["rmi", "-f", image]);
        }
    }
}

fn static_bin() -> PathBuf {
    let path = PathBuf::from(std::env::var_os("SHOAL_STATIC_BIN").expect("checked by skip_reason"));
    if path.is_absolute() {
        path
    } else {
        repo_root().join(path)
    }
}

/// The image's build context as the Dockerfile expects it, in a temp dir.
fn build_context(bin: &Path, dir: &Path) {
    std::fs::create_dir_all(dir.join("dist")).unwrap();
    std::fs::copy(bin, dir.join("dist/shoal")).unwrap();
    for sub in ["data", "tls"] {
        let path = dir.join("deploy/docker/rootfs").join(sub);
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(path.join(".keep"), "").unwrap();
    }
}

/// Certificates for the nodes, readable by the image's uid 10001 only.
fn issue_certs(bin: &Path, dir: &Path) -> PathBuf {
    let certs = dir.join("certs");
    let nodes = NODES.join(",");
    let out = Command::new(bin)
        .args(["ca", "bootstrap", "--party", "acme", "--dir"])
        .arg(dir.join("ca"))
        .args(["--nodes", &nodes, "--out"])
        .arg(&certs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for node in NODES {
        let node_dir = certs.join(node);
        for entry in std::fs::read_dir(&node_dir).unwrap() {
            give_to_image_user(&entry.unwrap().path());
        }
        give_to_image_user(&node_dir);
    }
    certs
}

fn give_to_image_user(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if std::os::unix::fs::chown(path, Some(10001), Some(10001)).is_err() {
        // Not root: let the container's user read it instead.
        let mode = if path.is_dir() { 0o777 } else { 0o644 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

/// A user-defined bridge network on a free private /24; its prefix.
fn create_network(scope: &mut DockerScope) -> String {
    let name = scope.tag.clone();
    for attempt in 0..SUBNET_TRIES {
        let third = (std::process::id() + attempt * 37) % 200 + 20;
        let prefix = format!("10.213.{third}");
        let subnet = format!("{prefix}.0/24");
        let out = docker(&["network", "create", "--subnet", &subnet, &name]);
        if out.status.success() {
            scope.network = Some(name);
            return prefix;
        }
    }
    panic!("no free subnet for the test network after {SUBNET_TRIES} tries");
}

fn members(api: SocketAddr, token: &str) -> Option<Vec<Value>> {
    serde_json::from_str(&http_get(api, "/v1/members", Some(token))?).ok()
}

fn names_in_state(api: SocketAddr, token: &str, state: &str) -> Option<Vec<String>> {
    let mut names: Vec<String> = members(api, token)?
        .iter()
        .filter(|m| m["state"] == state)
        .filter_map(|m| m["name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    Some(names)
}

fn logs(name: &str) -> String {
    let out = docker(&["logs", "--tail", "40", name]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_scratch_image_runs_a_party_and_sees_a_killed_container_go_down() {
    if let Some(reason) = skip_reason() {
        println!("SKIPPED containers: {reason}");
        return;
    }
    let bin = static_bin();
    let ldd = Command::new("ldd").arg(&bin).output().unwrap();
    let ldd_says = format!(
        "{}{}",
        String::from_utf8_lossy(&ldd.stdout),
        String::from_utf8_lossy(&ldd.stderr)
    );
    assert!(
        ldd_says.contains("statically linked") && !ldd_says.contains("=>"),
        "{} is not static: {ldd_says}",
        bin.display()
    );

    let mut scope = DockerScope::new();
    let work = tempfile::tempdir().unwrap();
    let context = work.path().join("context");
    build_context(&bin, &context);
    let image = format!("{}:test", scope.tag);
    let dockerfile = repo_root().join("deploy/docker/Dockerfile");
    let dockerfile = dockerfile.to_str().unwrap();
    docker_ok(&[
        "build",
        "-q",
        "-f",
        dockerfile,
        "-t",
        &image,
        context.to_str().unwrap(),
    ]);
    scope.image = Some(image.clone());

    // Nothing in the container but the binary: --version must still run.
    let version = docker_ok(&["run", "--rm", "--network", "none", &image, "--version"]);
    assert!(version.starts_with("shoal "), "{version}");

    let certs = issue_certs(&bin, work.path());
    let prefix = create_network(&mut scope);
    let network = scope.network.clone().unwrap();
    let token = format!("t-{}", scope.tag);
    let mut apis = Vec::new();
    for (i, node) in NODES.iter().enumerate() {
        let name = scope.container_name(node);
        let ip = format!("{prefix}.{}", 11 + i);
        let tls = format!("{}:/tls", certs.join(node).display());
        // Every node joins through c1 by its DNS name on the network; c1
        // resolves to itself, drops it, and founds the party.
        let env = [
            format!("SHOAL_NAME={node}"),
            format!("SHOAL_LISTEN={ip}:7481"),
            "SHOAL_JOIN=c1:7481".to_string(),
            format!("SHOAL_API_TOKEN={token}"),
            "SHOAL_MEMBERSHIP_PRESET=local".to_string(),
        ];
        let mut args: Vec<&str> = vec![
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            &network,
            "--network-alias",
            node,
            "--ip",
            &ip,
            "--read-only",
            "-v",
            &tls,
            "-p",
            "127.0.0.1::7480",
        ];
        for e in &env {
            args.extend(["-e", e.as_str()]);
        }
        args.push(&image);
        docker_ok(&args);
        scope.containers.push(name.clone());
        let port = docker_ok(&["port", &name, "7480/tcp"]);
        let api: SocketAddr = port
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("docker port said {port:?}"));
        apis.push(api);
    }

    let all: Vec<String> = NODES.iter().map(|n| n.to_string()).collect();
    for (api, node) in apis.iter().zip(NODES) {
        let seen = wait_for(Duration::from_secs(60), POLL, || {
            (names_in_state(*api, &token, "alive")? == all).then_some(())
        });
        assert!(
            seen.is_some(),
            "{node} does not see all 3 alive: {:?}\n{}",
            members(*api, &token),
            logs(&scope.container_name(node))
        );
    }
    // The image's HEALTHCHECK (`shoal health`) reports the agent healthy.
    let first = scope.container_name("c1");
    let healthy = wait_for(Duration::from_secs(40), Duration::from_secs(1), || {
        let status = docker_ok(&["inspect", "-f", "{{.State.Health.Status}}", &first]);
        (status == "healthy").then_some(())
    });
    assert!(
        healthy.is_some(),
        "HEALTHCHECK never passed\n{}",
        logs(&first)
    );

    docker_ok(&["kill", &scope.container_name("c3")]);
    for (api, node) in apis.iter().zip(NODES).take(2) {
        let down = wait_for(Duration::from_secs(30), POLL, || {
            names_in_state(*api, &token, "down")?
                .contains(&"c3".to_string())
                .then_some(())
        });
        assert!(
            down.is_some(),
            "{node} never listed the killed c3 down: {:?}",
            members(*api, &token)
        );
    }
}
