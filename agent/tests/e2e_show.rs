//! End-to-end: `ipvs-proxy show` from an operator's shell (no kubeconfig,
//! no manifest flags) on a real kernel (qemu guest), asking the running
//! agent over its control socket.
//!
//! ```text
//!  show-node (the agent runs here; uplink0 10.0.2.15 + default route)
//!    └ cni0 10.244.0.1/24 ── show-pod1 10.244.0.2 (server "pod1" :8080)
//!                        └── show-pod2 10.244.0.3 (server "pod2" :8080)
//! ```
//!
//! The agent runs from `--manifests` (as in `e2e_agent.rs`, whose helpers
//! are repeated here: each test file is its own crate): `default/web`
//! (ClusterIP 10.96.0.10:80) first on pod1, then on pod2 while a connection
//! to pod1 stays open (pod1 drains), and `default/bad`, rejected (port 0).
//! Checked: the mapped text with the draining real server, the last sync
//! and the rejection; `-o json`; a `NAMESPACE/NAME` filter; a non-root user
//! cannot connect; after SIGTERM the socket is gone and `show` says no agent
//! answers and prints the kernel's table unmapped; after SIGKILL the stale
//! socket is handled by `show` and by the next agent.
#![cfg(feature = "e2e-tests")]

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};

const BIN: &str = env!("CARGO_BIN_EXE_ipvs-proxy");
const NODE: &str = "show-node";
const PODS: [(&str, &str); 2] = [("show-pod1", "10.244.0.2"), ("show-pod2", "10.244.0.3")];
const SOCKET: &str = "/run/ipvs-proxy/ipvs-proxy.sock";

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    assert!(
        out.status.success(),
        "command failed: {cmd}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn enter(ns: &str) {
    let f = File::open(format!("/run/netns/{ns}")).expect("open netns");
    setns(f.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns");
}

fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    thread::scope(|s| {
        s.spawn(|| {
            enter(ns);
            f()
        })
        .join()
        .expect("netns thread panicked")
    })
}

fn topology() {
    for ns in [NODE, PODS[0].0, PODS[1].0] {
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
        sh(&format!("ip netns add {ns} && ip -n {ns} link set lo up"));
    }
    sh(&format!(
        "ip -n {NODE} link add uplink0 type dummy && ip -n {NODE} link set uplink0 up \
         && ip -n {NODE} addr add 10.0.2.15/24 dev uplink0 \
         && ip -n {NODE} route add default via 10.0.2.2 \
         && ip -n {NODE} link add cni0 type bridge && ip -n {NODE} link set cni0 up \
         && ip -n {NODE} addr add 10.244.0.1/24 dev cni0"
    ));
    for (ns, ip) in PODS {
        sh(&format!(
            "ip -n {NODE} link add v-{ns} type veth peer name eth0 netns {ns} \
             && ip -n {NODE} link set v-{ns} master cni0 up \
             && ip -n {ns} link set eth0 up && ip -n {ns} addr add {ip}/24 dev eth0 \
             && ip -n {ns} route add default via 10.244.0.1"
        ));
    }
}

/// A TCP server in `ns`: greets with its name, then echoes lines.
fn server(ns: &'static str, ip: &'static str, name: &'static str) {
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        enter(ns);
        let l = TcpListener::bind(format!("{ip}:8080")).expect("bind");
        tx.send(()).expect("ready");
        for s in l.incoming().flatten() {
            thread::spawn(move || {
                let mut w = s.try_clone().expect("clone");
                let _ = w.write_all(format!("{name}\n").as_bytes());
                for line in BufReader::new(s).lines() {
                    let Ok(line) = line else { break };
                    if w.write_all(format!("{name} {line}\n").as_bytes()).is_err() {
                        break;
                    }
                }
            });
        }
    });
    rx.recv_timeout(Duration::from_secs(30)).expect("server up");
}

/// Connects to the VIP from the node and reads the greeting.
fn hello() -> (TcpStream, String) {
    in_ns(NODE, || {
        let addr: SocketAddr = "10.96.0.10:80".parse().unwrap();
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut line = String::new();
        BufReader::new(s.try_clone().unwrap())
            .read_line(&mut line)
            .expect("greeting");
        (s, line.trim().to_string())
    })
}

/// `default/web` on `pod_ip`, and `default/bad` (port 0: rejected).
fn manifest(dir: &Path, pod_ip: &str) {
    let text = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default}}\nspec:\n  clusterIP: 10.96.0.10\n  clusterIPs: [10.96.0.10]\n  ipFamilies: [IPv4]\n  ports:\n  - {{name: http, port: 80, targetPort: 8080, protocol: TCP}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: web}}\naddressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints:\n- addresses: [\"{pod_ip}\"]\n  conditions: {{ready: true}}\n  nodeName: node-a\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: bad, namespace: default}}\nspec:\n  clusterIP: 10.96.0.99\n  clusterIPs: [10.96.0.99]\n  ipFamilies: [IPv4]\n  ports:\n  - {{name: http, port: 0, targetPort: 8080, protocol: TCP}}\n"
    );
    let tmp = dir.join(".web.yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, dir.join("web.yaml")).unwrap();
}

/// `ipvs-proxy show ARGS` in the node's network namespace, as root, with
/// no source flags.
fn show(args: &str) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!("ip netns exec {NODE} {BIN} show {args}"))
        .output()
        .expect("show runs")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `show ARGS`, which must succeed: its stdout.
fn show_ok(args: &str) -> String {
    let o = show(args);
    let (out, err) = text(&o);
    assert!(o.status.success(), "show {args} failed: {out}{err}");
    out
}

fn show_json(args: &str) -> serde_json::Value {
    let out = show_ok(&format!("-o json {args}"));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return t0.elapsed();
        }
        thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_agent(dir: &Path) -> Agent {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(std::env::temp_dir().join("show-e2e.log"))
        .unwrap();
    // `ip netns exec` execs the agent: the child's pid is the agent's.
    let child = Command::new("ip")
        .args(["netns", "exec", NODE, BIN])
        .arg(format!("--manifests={}", dir.display()))
        .args([
            "--hostname-override=node-a",
            "--cluster-cidr=10.244.0.0/16",
            "--metrics-bind-address=127.0.0.1:10249",
            "--healthz-bind-address=127.0.0.1:10256",
            "--drain-period=10m",
            "-v=2",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("agent starts");
    Agent(child)
}

/// The agent with this pid answers `show` and has synced.
fn answering(pid: u32) -> bool {
    let o = show("-o json");
    if !o.status.success() {
        return false;
    }
    serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .is_ok_and(|j| j["agent"]["pid"] == pid && j["last_sync"]["result"] == "ok")
}

#[test]
fn show_asks_the_running_agent_and_falls_back_to_the_kernel() {
    topology();
    server(PODS[0].0, PODS[0].1, "pod1");
    server(PODS[1].0, PODS[1].1, "pod2");
    // A foreign IPVS service: shown, never mapped.
    sh(&format!(
        "ip netns exec {NODE} ipvsadm -A -t 192.0.2.50:80 -s rr"
    ));
    let dir: PathBuf = std::env::temp_dir().join("show-e2e-manifests");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    manifest(&dir, PODS[0].1);

    let mut agent = spawn_agent(&dir);
    let pid = agent.0.id();
    wait_for(
        "the agent answering after a sync",
        Duration::from_secs(120),
        || answering(pid),
    );

    // Only root: the socket 0600 and its directory 0700, both root's.
    let sock = std::fs::symlink_metadata(SOCKET).expect("the socket exists");
    assert!(sock.file_type().is_socket());
    assert_eq!(sock.permissions().mode() & 0o777, 0o600);
    assert_eq!(sock.uid(), 0);
    let d = std::fs::metadata("/run/ipvs-proxy").unwrap();
    assert_eq!(d.permissions().mode() & 0o777, 0o700);
    assert_eq!(d.uid(), 0);
    let o = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "show",
        ])
        .output()
        .expect("setpriv runs");
    let (out, err) = text(&o);
    eprintln!("show as uid 65534: {:?}\n{err}", o.status);
    assert!(!o.status.success(), "a non-root user got an answer: {out}");
    assert!(
        err.contains("Permission denied") && err.contains("show needs root"),
        "{err}"
    );
    assert!(out.is_empty(), "{out}");

    // Traffic to pod1; then web moves to pod2 while the connection stays.
    let (mut held, who) = hello();
    assert_eq!(who, "pod1");
    manifest(&dir, PODS[1].1);
    let mut shown = String::new();
    wait_for("pod1 draining in show", Duration::from_secs(60), || {
        shown = show_ok("");
        shown.contains("-> 10.244.0.3:8080  weight 1")
            && shown.contains("-> 10.244.0.2:8080  weight 0  active 1")
    });
    eprintln!("show:\n{shown}");
    let lines: Vec<&str> = shown.lines().collect();
    assert!(
        lines[0].starts_with(&format!("agent: pid {pid}, node node-a, manifests ")),
        "{shown}"
    );
    assert!(lines[1].starts_with("last sync: 20"), "{shown}");
    assert!(lines[1].ends_with(", ok"), "{shown}");
    let web = lines
        .iter()
        .position(|l| *l == "default/web:http  TCP 10.96.0.10:80  rr")
        .unwrap_or_else(|| panic!("web mapped: {shown}"));
    assert!(
        lines[web + 1].starts_with("  -> 10.244.0.2:8080  weight 0  active 1  inactive ")
            && lines[web + 1].ends_with("  draining"),
        "{shown}"
    );
    assert!(
        lines[web + 2].starts_with("  -> 10.244.0.3:8080  weight 1  active 0  inactive ")
            && !lines[web + 2].contains("draining"),
        "{shown}"
    );
    assert!(lines.contains(&"-  TCP 192.0.2.50:80  rr"), "{shown}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("rejected Service default/bad: ")),
        "{shown}"
    );

    // -o json: the documented shape.
    let j = show_json("");
    assert_eq!(j["version"], 1);
    assert_eq!(j["mapping"], "agent");
    assert_eq!(j["agent"]["pid"], pid);
    assert_eq!(j["agent"]["node"], "node-a");
    assert_eq!(j["agent"]["dry_run"], false);
    assert_eq!(j["last_sync"]["result"], "ok");
    assert_eq!(j["last_sync"]["failed_ops"], 0);
    assert!(j["last_sync"]["started_at"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert!(j["last_sync"]["duration_seconds"].as_f64().unwrap() >= 0.0);
    assert!(j["last_successful_sync"].is_string());
    let vss = j["virtual_servers"].as_array().unwrap();
    let web = vss
        .iter()
        .find(|v| v["service"] == "default/web:http")
        .expect("web in json");
    assert_eq!(web["namespace"], "default");
    assert_eq!(web["name"], "web");
    assert_eq!(web["port_name"], "http");
    assert_eq!(web["virtual_server"], "TCP 10.96.0.10:80");
    assert_eq!(web["address"], "10.96.0.10");
    assert_eq!(web["port"], 80);
    assert_eq!(web["protocol"], "TCP");
    assert_eq!(web["scheduler"], "rr");
    assert_eq!(web["in_kernel"], true);
    let rs = web["real_servers"].as_array().unwrap();
    assert_eq!(rs.len(), 2, "{web}");
    assert_eq!(rs[0]["address"], "10.244.0.2");
    assert_eq!(rs[0]["port"], 8080);
    assert_eq!(rs[0]["weight"], 0);
    assert_eq!(rs[0]["active"], 1);
    assert_eq!(rs[0]["draining"], true);
    assert!(rs[0]["draining_seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(rs[1]["address"], "10.244.0.3");
    assert_eq!(rs[1]["weight"], 1);
    assert_eq!(rs[1]["draining"], false);
    let foreign = vss
        .iter()
        .find(|v| v["virtual_server"] == "TCP 192.0.2.50:80")
        .expect("foreign in json");
    assert!(foreign["service"].is_null());
    let rejected = j["rejected"].as_array().unwrap();
    assert!(
        rejected.iter().any(|r| r["kind"] == "Service"
            && r["namespace"] == "default"
            && r["name"] == "bad"
            && r["reason"].is_string()
            && r["detail"].is_string()),
        "{rejected:?}"
    );

    // A NAMESPACE/NAME filter.
    let one = show_ok("default/web");
    assert!(
        one.contains("default/web:http  TCP 10.96.0.10:80  rr"),
        "{one}"
    );
    assert!(!one.contains("192.0.2.50"), "{one}");
    assert!(!one.contains("rejected"), "{one}");
    let bad = show_json("default/bad");
    assert_eq!(bad["virtual_servers"].as_array().unwrap().len(), 0);
    assert_eq!(bad["rejected"].as_array().unwrap().len(), 1);

    // The drained connection still works.
    in_ns(NODE, || {
        held.write_all(b"still there\n").unwrap();
        let mut line = String::new();
        BufReader::new(held.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "pod1 still there");
    });

    // SIGTERM: a clean exit removes the socket; show falls back.
    sh(&format!("kill -TERM {pid}"));
    let status = agent.0.wait().expect("agent exits");
    assert!(status.success(), "{status}");
    assert!(
        !Path::new(SOCKET).exists(),
        "socket removed on a clean exit"
    );
    let o = show("");
    let (out, err) = text(&o);
    eprintln!("show with no agent:\n{err}{out}");
    assert!(o.status.success(), "{out}{err}");
    assert!(
        err.contains(&format!("no agent answers on {SOCKET}")),
        "{err}"
    );
    assert!(err.contains("not mapped to Services"), "{err}");
    assert!(!out.contains("agent:"), "{out}");
    assert!(
        out.contains("-  TCP 10.96.0.10:80  rr\n"),
        "rules kept: {out}"
    );
    assert!(out.contains("-> 10.244.0.3:8080  weight 1"), "{out}");
    assert!(out.contains("-  TCP 192.0.2.50:80  rr\n"), "{out}");
    assert!(!out.contains("default/web"), "{out}");
    let j = show_json("");
    assert_eq!(j["mapping"], "kernel");
    assert!(j["agent"].is_null() && j["last_sync"].is_null());
    assert!(j["virtual_servers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v["service"].is_null()));

    // SIGKILL leaves a stale socket: show still falls back, and the next
    // agent replaces it.
    agent = spawn_agent(&dir);
    let pid = agent.0.id();
    wait_for(
        "the second agent answering",
        Duration::from_secs(120),
        || answering(pid),
    );
    sh(&format!("kill -KILL {pid}"));
    let _ = agent.0.wait();
    let stale = std::fs::symlink_metadata(SOCKET).expect("a killed agent leaves its socket");
    assert!(stale.file_type().is_socket());
    let o = show("");
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(err.contains("no agent answers"), "{err}");
    assert!(out.contains("-  TCP 10.96.0.10:80  rr\n"), "{out}");
    agent = spawn_agent(&dir);
    let pid = agent.0.id();
    wait_for(
        "the third agent answering",
        Duration::from_secs(120),
        || answering(pid),
    );
    let again = show_ok("default/web");
    assert!(
        again.contains("default/web:http  TCP 10.96.0.10:80  rr"),
        "{again}"
    );

    // Source flags keep working as before, with the agent running.
    let from_manifests = show_ok(&format!(
        "default/web --manifests {} --hostname-override node-a",
        dir.display()
    ));
    assert!(
        from_manifests.starts_with("default/web:http  TCP 10.96.0.10:80  rr\n"),
        "{from_manifests}"
    );

    drop(agent);
    let _ = sh(&format!(
        "ip netns exec {NODE} {BIN} --cleanup --hostname-override node-a"
    ));
    let _ = std::fs::remove_dir_all(&dir);
    for ns in [NODE, PODS[0].0, PODS[1].0] {
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
    }
}
