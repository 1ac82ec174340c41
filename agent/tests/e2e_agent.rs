//! End-to-end: the `ipvs-proxy` binary itself, from `--manifests`, on a real
//! kernel with nftables (qemu guest), with real TCP traffic.
//!
//! ```text
//!  agent-node (the agent runs here; uplink0 10.0.2.15 + default route)
//!    └ cni0 10.244.0.1/24 ── agent-pod1 10.244.0.2 (server "pod1" :8080)
//!                        └── agent-pod2 10.244.0.3 (server "pod2" :8080)
//! ```
//!
//! The Service `default/web` (ClusterIP 10.96.0.10:80 -> 8080) first has
//! pod1, then the manifest is edited to pod2: traffic moves, the open
//! connection to pod1 keeps working while pod1 drains. Also checked:
//! `show`, `plan`, `/healthz`, `/metrics`, rules kept after the agent stops
//! (fail static), and `--cleanup` removing ours but not a foreign service.
#![cfg(feature = "e2e-tests")]

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};

const BIN: &str = env!("CARGO_BIN_EXE_ipvs-proxy");
const NODE: &str = "agent-node";
const PODS: [(&str, &str); 2] = [("agent-pod1", "10.244.0.2"), ("agent-pod2", "10.244.0.3")];

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

/// Runs `f` on a thread inside netns `ns`.
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
fn hello(timeout: Duration) -> Result<(TcpStream, String), String> {
    in_ns(NODE, || {
        let addr: SocketAddr = "10.96.0.10:80".parse().unwrap();
        let s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(s.try_clone().map_err(|e| e.to_string())?)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        Ok((s, line.trim().to_string()))
    })
}

fn http_get(path: &str, port: u16) -> String {
    in_ns(NODE, || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
}

fn manifest(dir: &Path, pod_ip: &str) {
    manifest_eps(dir, &[pod_ip]);
}

/// Writes the Service `default/web` with one ready endpoint per address.
fn manifest_eps(dir: &Path, pod_ips: &[&str]) {
    let eps: String = pod_ips
        .iter()
        .map(|ip| {
            format!("- addresses: [\"{ip}\"]\n  conditions: {{ready: true}}\n  nodeName: node-a\n")
        })
        .collect();
    let text = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default}}\nspec:\n  clusterIP: 10.96.0.10\n  clusterIPs: [10.96.0.10]\n  ipFamilies: [IPv4]\n  ports:\n  - {{name: http, port: 80, targetPort: 8080, protocol: TCP}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: web}}\naddressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints:\n{eps}"
    );
    // Write then rename: the agent never reads half a file.
    let tmp = dir.join(".web.yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, dir.join("web.yaml")).unwrap();
}

fn show(dir: &Path) -> String {
    sh(&format!(
        "ip netns exec {NODE} {BIN} show default/web --manifests {} --hostname-override node-a",
        dir.display()
    ))
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return t0.elapsed();
        }
        thread::sleep(Duration::from_millis(50));
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

/// Starts `ipvs-proxy --manifests DIR` in the node namespace; its log is
/// appended to `$TMPDIR/<log>`.
fn spawn_agent(dir: &Path, log: &str) -> Agent {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(std::env::temp_dir().join(log))
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

#[test]
fn agent_programs_the_kernel_from_manifests_and_traffic_moves() {
    topology();
    server(PODS[0].0, PODS[0].1, "pod1");
    server(PODS[1].0, PODS[1].1, "pod2");
    // A foreign IPVS service the agent must never touch.
    sh(&format!(
        "ip netns exec {NODE} ipvsadm -A -t 192.0.2.50:80 -s rr"
    ));

    let dir: PathBuf = std::env::temp_dir().join("agent-e2e-manifests");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    manifest(&dir, PODS[0].1);

    // The dry run first: what will be programmed.
    let plan = sh(&format!(
        "{BIN} plan --manifests {} --node-name node-a --node-ip 10.0.2.15",
        dir.display()
    ));
    assert!(plan.contains("-A -t 10.96.0.10:80 -s rr"), "{plan}");
    assert!(
        plan.contains("-a -t 10.96.0.10:80 -r 10.244.0.2:8080 -m -w 1"),
        "{plan}"
    );

    let mut agent = spawn_agent(&dir, "agent-e2e.log");

    let t = wait_for("pod1 programmed", Duration::from_secs(60), || {
        show(&dir).contains("-> 10.244.0.2:8080  weight 1")
    });
    eprintln!("first sync visible in IPVS after {t:?} (from the first poll)");
    let (mut held, who) = hello(Duration::from_secs(10)).expect("connect to the VIP");
    assert_eq!(who, "pod1");

    // Health and metrics.
    let hz = http_get("/healthz", 10256);
    assert!(hz.starts_with("HTTP/1.1 200"), "{hz}");
    assert!(hz.contains("\"nodeEligible\": true"), "{hz}");
    // The gauges are set when the sync returns, after the packet filter
    // (nft, ~0.5 s under TCG) that follows the IPVS operations seen above.
    let mut m = String::new();
    wait_for("the first sync's metrics", Duration::from_secs(30), || {
        m = http_get("/metrics", 10249);
        m.contains("ipvs_proxy_virtual_servers 1")
    });
    assert!(
        m.contains("kubeproxy_sync_proxy_rules_last_timestamp_seconds"),
        "{m}"
    );

    // Move the Service to pod2: the held connection keeps pod1 draining.
    let t0 = Instant::now();
    manifest(&dir, PODS[1].1);
    wait_for("pod2 programmed", Duration::from_secs(60), || {
        let s = show(&dir);
        s.contains("-> 10.244.0.3:8080  weight 1") && s.contains("-> 10.244.0.2:8080  weight 0")
    });
    eprintln!(
        "endpoint change visible in IPVS after {:?} (file write to show)",
        t0.elapsed()
    );
    eprintln!("{}", show(&dir));
    let (_, who) = hello(Duration::from_secs(10)).expect("connect to the VIP again");
    assert_eq!(who, "pod2", "new connections go to pod2");
    in_ns(NODE, || {
        held.write_all(b"still there\n").unwrap();
        let mut line = String::new();
        BufReader::new(held.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "pod1 still there",
            "the drained connection lives on"
        );
    });

    // The agent stops: the rules stay (fail static).
    let _ = agent.0.kill();
    let _ = agent.0.wait();
    let (_, who) = hello(Duration::from_secs(10)).expect("VIP still served");
    assert_eq!(who, "pod2");

    // --cleanup removes ours, keeps the foreign service.
    let out = sh(&format!(
        "ip netns exec {NODE} {BIN} --cleanup --hostname-override node-a"
    ));
    assert!(out.contains("removed 1 IPVS virtual servers"), "{out}");
    let left = sh(&format!("ip netns exec {NODE} ipvsadm -Sn"));
    assert!(left.contains("192.0.2.50:80"), "{left}");
    assert!(!left.contains("10.96.0.10"), "{left}");
    drop(agent);
    for ns in [NODE, PODS[0].0, PODS[1].0] {
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
    }
}

/// `GET path` on the node's loopback; `None` while nothing listens.
fn try_http_get(path: &str, port: u16) -> Option<String> {
    in_ns(NODE, || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    })
}

/// How many syncs the running agent has finished (from `/metrics`).
fn syncs_done() -> u64 {
    try_http_get("/metrics", 10249)
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("kubeproxy_sync_proxy_rules_duration_seconds_count"))
                .and_then(|l| l.split_whitespace().last())
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0, |v| v as u64)
}

/// What the agent owns in the kernel, for before/after comparisons.
fn kernel_state() -> String {
    format!(
        "{}\n{}",
        sh(&format!("ip netns exec {NODE} ipvsadm -Sn | sort")),
        sh(&format!("ip -n {NODE} -o addr show dev kube-ipvs0"))
    )
}

/// Each request of the loop: when it ended, and which pod answered.
type RequestLog = Vec<(Duration, Result<String, String>)>;

/// One request on a fresh connection: greeting, then an echoed line.
fn request(n: u64) -> Result<String, String> {
    let addr: SocketAddr = "10.96.0.10:80".parse().map_err(|e| format!("{e}"))?;
    let t = Duration::from_secs(3);
    let mut s = TcpStream::connect_timeout(&addr, t).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(t)).map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
    let mut who = String::new();
    r.read_line(&mut who)
        .map_err(|e| format!("greeting: {e}"))?;
    let who = who.trim().to_string();
    s.write_all(format!("req {n}\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| format!("reply: {e}"))?;
    if line.trim() != format!("{who} req {n}") {
        return Err(format!("greeting {who:?}, reply {line:?}"));
    }
    Ok(who)
}

/// Sends a line on the long-lived connection and checks the echo.
fn ping_held(held: &mut TcpStream, who: &str, n: u32) {
    held.write_all(format!("held {n}\n").as_bytes())
        .expect("write on the long-lived connection");
    let mut line = String::new();
    BufReader::new(held.try_clone().unwrap())
        .read_line(&mut line)
        .expect("read on the long-lived connection");
    assert_eq!(
        line.trim(),
        format!("{who} held {n}"),
        "the long-lived connection survives agent restarts"
    );
}

/// Lets the request loop run `more` further requests (60 s at most), then
/// asserts that none has failed so far and that the loop did not stall.
fn settle(log: &Mutex<RequestLog>, phase: &str, more: usize, events: &[(Duration, String)]) {
    let n = log.lock().unwrap().len();
    let t = Instant::now();
    while log.lock().unwrap().len() < n + more && t.elapsed() < Duration::from_secs(60) {
        thread::sleep(Duration::from_millis(50));
    }
    let log = log.lock().unwrap();
    let failed: Vec<_> = log.iter().filter(|(_, r)| r.is_err()).take(20).collect();
    assert!(
        failed.is_empty(),
        "failed requests by the end of {phase}: {failed:#?}\nevents: {events:#?}"
    );
    assert!(
        log.len() >= n + more,
        "the request loop stalled during {phase}"
    );
}

#[test]
fn agent_restarts_under_traffic_lose_no_connection() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    topology();
    server(PODS[0].0, PODS[0].1, "pod1");
    server(PODS[1].0, PODS[1].1, "pod2");
    let dir: PathBuf = std::env::temp_dir().join("agent-e2e-restart");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    manifest_eps(&dir, &[PODS[0].1, PODS[1].1]);

    let mut agent = spawn_agent(&dir, "agent-e2e-restart.log");
    wait_for("both endpoints programmed", Duration::from_secs(90), || {
        let s = show(&dir);
        s.contains("-> 10.244.0.2:8080  weight 1") && s.contains("-> 10.244.0.3:8080  weight 1")
    });
    wait_for("a finished sync", Duration::from_secs(60), || {
        syncs_done() >= 1
    });
    let before = kernel_state();
    assert!(before.contains("-A -t 10.96.0.10:80 -s rr"), "{before}");
    assert!(before.contains("10.96.0.10/32"), "{before}");
    let (mut held, held_who) = hello(Duration::from_secs(10)).expect("long-lived connection");
    let mut pings = 0;
    ping_held(&mut held, &held_who, pings);

    // The request loop: a new connection every ~20 ms, from the node.
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let log: Arc<Mutex<RequestLog>> = Arc::default();
    let looper = {
        let (stop, log) = (stop.clone(), log.clone());
        thread::spawn(move || {
            enter(NODE);
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let r = request(n);
                log.lock().unwrap().push((t0.elapsed(), r));
                thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let count = |log: &Mutex<RequestLog>| log.lock().unwrap().len();
    wait_for("requests flowing", Duration::from_secs(30), || {
        count(&log) >= 20
    });

    let mut events = Vec::new();
    for signal in ["TERM", "KILL"] {
        let pid = agent.0.id();
        events.push((t0.elapsed(), format!("SIG{signal} to the agent")));
        sh(&format!("kill -{signal} {pid}"));
        let status = agent.0.wait().expect("agent exits");
        events.push((t0.elapsed(), format!("agent exited: {status}")));
        if signal == "TERM" {
            assert!(status.success(), "SIGTERM is a clean exit: {status}");
        }
        // Traffic with no agent at all (fail static).
        settle(&log, "the time without an agent", 10, &events);
        agent = spawn_agent(&dir, "agent-e2e-restart.log");
        events.push((t0.elapsed(), "agent restarted".to_string()));
        let waited = wait_for(
            "the new agent's first sync",
            Duration::from_secs(120),
            || syncs_done() >= 1,
        );
        events.push((t0.elapsed(), format!("first sync seen after {waited:?}")));
        // Keep the loop going over a few more syncs of the new agent.
        settle(&log, "the restart", 50, &events);
        pings += 1;
        ping_held(&mut held, &held_who, pings);
        let after = kernel_state();
        assert_eq!(
            before, after,
            "kernel state converged to the same after SIG{signal}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    looper.join().expect("request loop");

    let log = log.lock().unwrap();
    let failed: Vec<_> = log.iter().filter(|(_, r)| r.is_err()).collect();
    let pod1 = log
        .iter()
        .filter(|(_, r)| r.as_deref() == Ok("pod1"))
        .count();
    let pod2 = log
        .iter()
        .filter(|(_, r)| r.as_deref() == Ok("pod2"))
        .count();
    eprintln!("events: {events:#?}");
    eprintln!(
        "{} requests in {:?}: pod1 {pod1}, pod2 {pod2}, failed {}",
        log.len(),
        t0.elapsed(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "failed requests: {:#?}\nevents: {events:#?}",
        &failed[..failed.len().min(20)]
    );
    assert!(pod1 > 0 && pod2 > 0, "both endpoints served: {pod1} {pod2}");
    assert_eq!(pod1 + pod2, log.len());

    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
    for ns in [NODE, PODS[0].0, PODS[1].0] {
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
    }
}
