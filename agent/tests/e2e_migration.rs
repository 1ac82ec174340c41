//! End-to-end: taking a live node over from kube-proxy's IPVS mode, on a
//! real kernel (qemu guest) with real TCP traffic.
//!
//! The node namespace first gets exactly what kube-proxy v1.30 writes for
//! three Services (`tests/fixtures/kube-proxy-v1.30/`: IPVS services,
//! kube-ipvs0 and its addresses, the nat and filter chains, the ipsets;
//! each file says which kube-proxy code path produced it), plus kubelet's
//! chains in both iptables backends and a foreign `KUBE-` ipset. Traffic is
//! checked to flow through that state. Then `ipvs-proxy` starts on the same
//! Services while a request loop goes through the ClusterIP, the NodePort
//! and the ETP=Local LoadBalancer IP, a long-lived connection is open and
//! `/metrics` and `/healthz` are scraped. Checked: no failed request, the
//! long connection lives, the adopted virtual servers kept their counters
//! (no delete and re-add), kube-proxy's chains and sets are gone while
//! kubelet's and the foreign ones stay, every scrape had kube-proxy's
//! names and body, and the final state equals that of a fresh start.
//! Finally the rollback: `ipvs-proxy --cleanup` removes our IPVS services,
//! table and kube-ipvs0 and nothing foreign, and kube-proxy's state written
//! again carries traffic through the three Services.
//!
//! ```text
//!  mig-node (uplink0 10.0.2.15 + default route)
//!    └ cni0 10.244.0.1/24 ── mig-pod1 10.244.0.2 (server "pod1" :8080)
//!                        └── mig-pod2 10.244.0.3 (server "pod2" :8080)
//! ```
#![cfg(feature = "e2e-tests")]

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};

const BIN: &str = env!("CARGO_BIN_EXE_ipvs-proxy");
const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/kube-proxy-v1.30"
);
const NODE: &str = "mig-node";
const PODS: [(&str, &str, &str); 2] = [
    ("mig-pod1", "10.244.0.2", "pod1"),
    ("mig-pod2", "10.244.0.3", "pod2"),
];
/// ClusterIP, NodePort, ETP=Local LoadBalancer ingress.
const TARGETS: [(&str, &str); 3] = [
    ("ClusterIP", "10.96.0.10:80"),
    ("NodePort", "10.0.2.15:30080"),
    ("LoadBalancer", "192.0.2.100:80"),
];
/// Metric names kube-proxy's dashboards read.
const KUBE_PROXY_METRICS: [&str; 5] = [
    "kubeproxy_sync_proxy_rules_duration_seconds",
    "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
    "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
    "kubeproxy_network_programming_duration_seconds",
    "kubeproxy_sync_proxy_rules_endpoint_changes_total",
];

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

/// `cmd` run in the node's namespace.
fn node(cmd: &str) -> String {
    sh(&format!("ip netns exec {NODE} {cmd}"))
}

fn enter(ns: &str) {
    let f = File::open(format!("/run/netns/{ns}")).expect("open netns");
    setns(f.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns");
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
    for (ns, ip, _) in PODS {
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

/// The fixture's lines without comments.
fn fixture(name: &str) -> String {
    std::fs::read_to_string(Path::new(FIXTURES).join(name))
        .expect("fixture")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Feeds `text` to `cmd` run in the node's namespace.
fn node_stdin(cmd: &str, text: &str) {
    let path = std::env::temp_dir().join("mig-stdin");
    std::fs::write(&path, text).unwrap();
    node(&format!("{cmd} < {}", path.display()));
}

/// Writes what kube-proxy v1.30 (and kubelet) leave on the node.
fn kube_proxy_state() {
    for cmd in fixture("kube-ipvs0.sh").lines() {
        node(cmd);
    }
    node_stdin("ipset restore", &fixture("ipset.restore"));
    node_stdin("iptables-restore --noflush", &fixture("iptables.rules"));
    node_stdin("iptables-restore --noflush", &fixture("kubelet.rules"));
    // The other backend holds kubelet's chains too (a node whose kubelet
    // and kube-proxy images disagree on the backend).
    node_stdin(
        "iptables-legacy-restore --noflush",
        &fixture("kubelet.rules"),
    );
    node_stdin("ipvsadm -R", &fixture("ipvs.rules"));
    // A KUBE- set that is somebody else's (kube-router names its sets so).
    node("ipset create KUBE-SRC-FOREIGN hash:ip");
}

/// One request on a fresh connection: greeting, then an echoed line.
fn request(target: &str, n: u64) -> Result<String, String> {
    let addr: SocketAddr = target.parse().map_err(|e| format!("{e}"))?;
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

/// `GET path` on the node's loopback: status line and body, or why not.
fn http_get(port: u16, path: &str) -> Result<(String, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    let status = out.lines().next().unwrap_or_default().to_string();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
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

fn log_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(name)
}

fn spawn_agent(dir: &Path, log: &str) -> Agent {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(log))
        .unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", NODE, BIN])
        .arg(format!("--manifests={}", dir.display()))
        .args([
            "--hostname-override=node-a",
            "--cluster-cidr=10.244.0.0/16",
            "--metrics-bind-address=127.0.0.1:10249",
            "--healthz-bind-address=127.0.0.1:10256",
            "-v=2",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("agent starts");
    Agent(child)
}

/// kube-proxy's chain names per table and its set names, read from the
/// fixtures (not from the code under test).
fn kube_proxy_names() -> (Vec<(String, String)>, Vec<String>) {
    let mut chains = Vec::new();
    let mut table = String::new();
    for l in fixture("iptables.rules").lines() {
        if let Some(t) = l.strip_prefix('*') {
            table = t.to_string();
        } else if let Some(c) = l.strip_prefix(':') {
            chains.push((table.clone(), c.split(' ').next().unwrap().to_string()));
        }
    }
    let sets = fixture("ipset.restore")
        .lines()
        .filter_map(|l| l.strip_prefix("create "))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    (chains, sets)
}

/// The chains declared per table in `iptables-save` output.
fn saved_chains(save: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let mut table = String::new();
    for l in save.lines() {
        if let Some(t) = l.strip_prefix('*') {
            table = t.to_string();
        } else if let Some(c) = l.strip_prefix(':') {
            out.insert((table.clone(), c.split(' ').next().unwrap().to_string()));
        }
    }
    out
}

/// The rules (`-A` lines) of `iptables-save` output, per table.
fn saved_rules(save: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut table = String::new();
    for l in save.lines() {
        if let Some(t) = l.strip_prefix('*') {
            table = t.to_string();
        } else if l.starts_with("-A ") {
            out.insert(format!("{table} {l}"));
        }
    }
    out
}

/// kubelet's rules as iptables-save prints them, read back from the
/// fixture after loading (for the before/after comparison).
fn kubelet_lines(save: &str) -> BTreeSet<String> {
    saved_rules(save)
        .into_iter()
        .filter(|r| r.contains("KUBE-FIREWALL") || r.contains("KUBE-MARK-DROP"))
        .collect()
}

/// Connections seen by the virtual server `target` (ipvsadm --stats).
fn vs_conns(target: &str) -> u64 {
    let out = node(&format!("ipvsadm -Ln --stats -t {target}"));
    out.lines()
        .find(|l| l.starts_with("TCP"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no stats for {target}: {out}"))
}

/// What the node holds, for the comparison with a fresh start.
fn node_state() -> String {
    let ipvs = node("ipvsadm -Sn | sort");
    let nft = node("nft list table inet ipvs-proxy");
    // Counters differ between runs; what the rules are must not.
    let nft: String = nft
        .lines()
        .map(|l| {
            let mut words = Vec::new();
            let mut it = l.split_whitespace();
            while let Some(w) = it.next() {
                if w == "packets" || w == "bytes" {
                    it.next();
                } else {
                    words.push(w);
                }
            }
            format!("{}\n", words.join(" "))
        })
        .collect();
    let addrs: BTreeSet<String> = node("ip -o -4 addr show dev kube-ipvs0")
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3).map(str::to_string))
        .collect();
    format!("== ipvs\n{ipvs}== nft\n{nft}== kube-ipvs0\n{addrs:?}\n")
}

type RequestLog = Vec<(Duration, &'static str, Result<String, String>)>;

#[test]
fn agent_takes_a_node_over_from_kube_proxy_ipvs_mode_without_losing_a_connection() {
    topology();
    for (ns, ip, name) in PODS {
        server(ns, ip, name);
    }
    kube_proxy_state();
    let (kp_chains, kp_sets) = kube_proxy_names();
    let nft_before = node("iptables-save");
    let legacy_before = node("iptables-legacy-save");
    for c in &kp_chains {
        assert!(saved_chains(&nft_before).contains(c), "{c:?} loaded");
    }
    let kubelet_nft = kubelet_lines(&nft_before);
    // INPUT and OUTPUT jumps, the KUBE-FIREWALL rule, the KUBE-MARK-DROP rule.
    assert_eq!(kubelet_nft.len(), 4, "{nft_before}");
    let kubelet_legacy = kubelet_lines(&legacy_before);
    assert_eq!(kubelet_legacy.len(), 4, "{legacy_before}");

    // Traffic flows through kube-proxy's state, and through its rules.
    let mut n = 0;
    for (what, target) in TARGETS {
        let mut who = BTreeSet::new();
        for _ in 0..6 {
            n += 1;
            let r = in_node(move || request(target, n));
            who.insert(r.unwrap_or_else(|e| panic!("{what} {target} via kube-proxy: {e}")));
        }
        assert_eq!(
            who.len(),
            2,
            "{what}: both pods answer via kube-proxy's IPVS"
        );
    }
    let marked = node("iptables -t nat -L KUBE-MARK-MASQ -n -v -x");
    let pkts: u64 = marked
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    assert!(
        pkts > 0,
        "kube-proxy's masquerade marking was used:\n{marked}"
    );
    let conns_before: Vec<u64> = TARGETS.iter().map(|(_, t)| vs_conns(t)).collect();

    // The long-lived connection, opened through kube-proxy's state.
    let mut held = in_node(|| {
        let s = TcpStream::connect_timeout(&TARGETS[0].1.parse().unwrap(), Duration::from_secs(5))
            .expect("long-lived connection");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    });
    let held_who = read_line(&mut held);
    let mut pings = 0u32;
    ping(&mut held, &held_who, &mut pings);

    // The request loop, cycling over the three Services.
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let log: Arc<Mutex<RequestLog>> = Arc::default();
    let looper = {
        let (stop, log) = (stop.clone(), log.clone());
        thread::spawn(move || {
            enter(NODE);
            let mut n = 1000;
            while !stop.load(Ordering::Relaxed) {
                for (what, target) in TARGETS {
                    n += 1;
                    let r = request(target, n);
                    log.lock().unwrap().push((t0.elapsed(), what, r));
                }
                thread::sleep(Duration::from_millis(20));
            }
        })
    };
    // The scraper: /metrics and /healthz every 100 ms.
    type Scrapes = Vec<(Duration, &'static str, Result<(String, String), String>)>;
    let scrapes: Arc<Mutex<Scrapes>> = Arc::default();
    let scraper = {
        let (stop, scrapes) = (stop.clone(), scrapes.clone());
        thread::spawn(move || {
            enter(NODE);
            while !stop.load(Ordering::Relaxed) {
                for (port, path) in [(10249, "/metrics"), (10256, "/healthz")] {
                    let r = http_get(port, path);
                    scrapes.lock().unwrap().push((t0.elapsed(), path, r));
                }
                thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let count = |log: &Mutex<RequestLog>| log.lock().unwrap().len();
    wait_for("requests flowing", Duration::from_secs(30), || {
        count(&log) >= 30
    });

    // The switch.
    let dir = std::env::temp_dir().join("mig-manifests");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        Path::new(FIXTURES).join("services.yaml"),
        dir.join("services.yaml"),
    )
    .unwrap();
    let _ = std::fs::remove_file(log_path("mig-agent.log"));
    let started = t0.elapsed();
    let mut agent = spawn_agent(&dir, "mig-agent.log");
    let agent_log = || std::fs::read_to_string(log_path("mig-agent.log")).unwrap_or_default();
    // The long-lived connection is asked every second during the switch.
    let t_start = Instant::now();
    while !agent_log().contains("removed kube-proxy's iptables chains and ipsets") {
        assert!(
            t_start.elapsed() < Duration::from_secs(240),
            "kube-proxy's rules not removed in time; agent log:\n{}",
            agent_log()
        );
        ping(&mut held, &held_who, &mut pings);
        thread::sleep(Duration::from_secs(1));
    }
    let took = t_start.elapsed();
    let removed_at = t0.elapsed();
    eprintln!("agent started at {started:?}; kube-proxy's rules removed {took:?} later");
    // More requests after the removal.
    let n_at_removal = count(&log);
    wait_for(
        "requests after the removal",
        Duration::from_secs(90),
        || count(&log) >= n_at_removal + 60,
    );
    ping(&mut held, &held_who, &mut pings);
    stop.store(true, Ordering::Relaxed);
    looper.join().expect("request loop");
    scraper.join().expect("scraper");

    // Every request answered.
    let log = log.lock().unwrap();
    let failed: Vec<_> = log.iter().filter(|(_, _, r)| r.is_err()).collect();
    for (what, _) in TARGETS {
        let (ok, during) =
            log.iter()
                .filter(|(_, w, _)| *w == what)
                .fold((0, 0), |(ok, during), (t, _, r)| {
                    (
                        ok + usize::from(r.is_ok()),
                        during + usize::from(*t >= started && *t <= removed_at),
                    )
                });
        eprintln!("{what}: {ok} answered, {during} sent between agent start and removal");
        assert!(during > 0, "{what}: requests during the switch");
    }
    eprintln!(
        "{} requests in {:?} (agent started at {started:?}, kube-proxy's rules removed at {removed_at:?}), {} failed; long-lived connection to {held_who}: {pings} pings answered",
        log.len(),
        t0.elapsed(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "failed requests: {:#?}\nagent log:\n{}",
        &failed[..failed.len().min(20)],
        agent_log()
    );

    // Every scrape once the agent listened had kube-proxy's names and body.
    let scrapes = scrapes.lock().unwrap();
    let mut answered = (0, 0);
    for (t, path, r) in scrapes.iter() {
        let Ok((status, body)) = r else { continue };
        if *path == "/metrics" {
            answered.0 += 1;
            assert!(status.contains(" 200"), "{t:?} {path}: {status}");
            for m in KUBE_PROXY_METRICS {
                assert!(body.contains(m), "{t:?} {path}: no {m}\n{body}");
            }
        } else {
            answered.1 += 1;
            assert!(
                status.contains(" 200") || status.contains(" 503"),
                "{t:?} {path}: {status}"
            );
            assert!(
                body.starts_with("{\"lastUpdated\": ") && body.contains("\"currentTime\": "),
                "{t:?} {path}: kube-proxy's body, got {body}"
            );
        }
    }
    let last_health = scrapes
        .iter()
        .rev()
        .find(|(_, p, r)| *p == "/healthz" && r.is_ok())
        .expect("a /healthz answer");
    assert!(
        last_health.2.as_ref().unwrap().0.contains(" 200"),
        "healthy after the switch: {last_health:?}"
    );
    eprintln!(
        "scrapes answered during the switch: /metrics {}, /healthz {}",
        answered.0, answered.1
    );
    assert!(answered.0 > 0 && answered.1 > 0);

    // Adopted in place: the virtual servers kept their counters.
    for ((what, target), before) in TARGETS.iter().zip(&conns_before) {
        let after = vs_conns(target);
        assert!(
            after > *before,
            "{what} {target}: connection counter {before} -> {after} (a re-added service starts at 0)"
        );
    }

    // kube-proxy's chains and sets are gone; kubelet's and foreign ones stay.
    let nft_after = node("iptables-save");
    let legacy_after = node("iptables-legacy-save");
    for c in &kp_chains {
        assert!(
            !saved_chains(&nft_after).contains(c),
            "{c:?} left:\n{nft_after}"
        );
    }
    assert_eq!(kubelet_lines(&nft_after), kubelet_nft, "{nft_after}");
    assert_eq!(kubelet_lines(&legacy_after), kubelet_legacy);
    assert_eq!(saved_rules(&legacy_after), saved_rules(&legacy_before));
    for t in ["mangle", "nat", "filter"] {
        assert!(
            saved_chains(&nft_after).contains(&(t.to_string(), "KUBE-KUBELET-CANARY".to_string())),
            "{t} KUBE-KUBELET-CANARY kept"
        );
    }
    assert!(
        !nft_after.contains("KUBE-SERVICES") && !nft_after.contains("match-set"),
        "{nft_after}"
    );
    let sets: BTreeSet<String> = node("ipset list -n").lines().map(str::to_string).collect();
    for s in &kp_sets {
        assert!(!sets.contains(s), "set {s} left: {sets:?}");
    }
    assert!(sets.contains("KUBE-SRC-FOREIGN"), "{sets:?}");
    eprintln!("left on the node after the migration:\n== iptables-save (nf_tables)\n{nft_after}== ipset list -n\n{sets:?}");
    let log_text = agent_log();
    let removed_line = log_text
        .lines()
        .find(|l| l.contains("removed kube-proxy's iptables chains and ipsets"))
        .unwrap_or_default()
        .to_string();
    eprintln!("agent: {removed_line}");
    eprintln!("the agent's info lines up to the removal:");
    for l in log_text
        .lines()
        .filter(|l| l.contains(" INFO ") || l.contains(" WARN "))
        .take_while(|l| !l.contains("removed kube-proxy's"))
        .take(40)
    {
        eprintln!("  {}", l.chars().take(300).collect::<String>());
    }

    // The final state equals a fresh start's.
    let migrated = node_state();
    assert!(migrated.contains("-A -t 10.96.0.10:80 -s rr"), "{migrated}");
    let pid = agent.0.id();
    sh(&format!("kill -TERM {pid}"));
    assert!(agent.0.wait().unwrap().success());
    drop(held);
    let out = node(&format!("{BIN} --cleanup --hostname-override node-a"));
    eprintln!("--cleanup: {out}");
    assert!(
        node("ipvsadm -Sn").trim().is_empty(),
        "cleanup removed ours"
    );
    let syncs = || {
        in_node(|| http_get(10249, "/metrics"))
            .ok()
            .and_then(|(_, m)| {
                m.lines()
                    .find(|l| l.starts_with("kubeproxy_sync_proxy_rules_duration_seconds_count"))
                    .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            })
            .unwrap_or(0.0)
    };
    let mut fresh_agent = spawn_agent(&dir, "mig-agent-fresh.log");
    wait_for(
        "the fresh agent's first sync",
        Duration::from_secs(180),
        || syncs() >= 1.0,
    );
    // Same kernel view, compared until it settles (the fresh agent's table
    // is written by its first sync, the gauges set when the sync returns).
    let mut fresh = String::new();
    let same = (0..40).any(|_| {
        fresh = node_state();
        let same = fresh == migrated;
        if !same {
            thread::sleep(Duration::from_millis(500));
        }
        same
    });
    assert!(
        same,
        "after the migration:\n{migrated}\nafter a fresh start:\n{fresh}"
    );
    // The reverse path: stop the agent as a DaemonSet rollout would, then
    // `--cleanup` and kube-proxy's state again.
    let pid = fresh_agent.0.id();
    sh(&format!("kill -TERM {pid}"));
    assert!(fresh_agent.0.wait().unwrap().success());
    drop(fresh_agent);
    drop(agent);
    roll_back_to_kube_proxy();
    let _ = std::fs::remove_dir_all(&dir);
    for ns in [NODE, PODS[0].0, PODS[1].0] {
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
    }
}

/// The IPVS services (`ipvsadm -Sn` lines) on the node.
fn ipvs_lines() -> BTreeSet<String> {
    node("ipvsadm -Sn").lines().map(str::to_string).collect()
}

/// The node's addresses, per interface (`ip -o addr` without the
/// lifetimes).
fn addresses() -> BTreeSet<String> {
    node("ip -o addr show")
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() > 3).then(|| format!("{} {}", w[1], w[3]))
        })
        .collect()
}

/// The rollback docs/migration.md describes, after the agent has taken the
/// node over and stopped: `ipvs-proxy --cleanup` removes our IPVS services,
/// our nftables table and kube-ipvs0 with its addresses, and nothing that
/// is not ours; then kube-proxy's state (what kube-proxy v1.30 writes on
/// start, the same fixtures) carries traffic through all three Services
/// again.
fn roll_back_to_kube_proxy() {
    // Foreign state `--cleanup` must leave: an IPVS service on a node
    // address outside the NodePort range, an nftables table, a dummy
    // interface with an address (kubelet's chains, the foreign ipset and
    // the uplink are there already).
    node("ipvsadm -A -t 10.0.2.15:9999 -s rr");
    node("ipvsadm -a -t 10.0.2.15:9999 -r 10.244.0.2:8080 -m -w 1");
    node("nft add table inet foreign");
    node("nft 'add chain inet foreign keep { type filter hook forward priority 10 ; }'");
    node("ip link add foreign0 type dummy");
    node("ip addr add 172.31.0.1/32 dev foreign0");
    let foreign_ipvs: BTreeSet<String> = [
        "-A -t 10.0.2.15:9999 -s rr",
        "-a -t 10.0.2.15:9999 -r 10.244.0.2:8080 -m -w 1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let ipvs_before = ipvs_lines();
    assert!(
        ipvs_before.len() > foreign_ipvs.len() && ipvs_before.is_superset(&foreign_ipvs),
        "{ipvs_before:?}"
    );
    assert!(node("nft list tables").contains("table inet ipvs-proxy"));
    let (nft_before, legacy_before) = (node("iptables-save"), node("iptables-legacy-save"));
    let sets_before = node("ipset list -n");
    let addrs_before = addresses();
    assert!(addrs_before.iter().any(|a| a.starts_with("kube-ipvs0 ")));

    let t = Instant::now();
    let out = node(&format!("{BIN} --cleanup --hostname-override node-a"));
    eprintln!("rollback: --cleanup in {:?}: {}", t.elapsed(), out.trim());

    // Ours is gone.
    let tables = node("nft list tables");
    assert!(!tables.contains("inet ipvs-proxy"), "{tables}");
    assert_eq!(
        ipvs_lines(),
        foreign_ipvs,
        "only the foreign IPVS service left"
    );
    let kube_ipvs0 = Command::new("ip")
        .args(["-n", NODE, "link", "show", "kube-ipvs0"])
        .output()
        .unwrap();
    assert!(!kube_ipvs0.status.success(), "kube-ipvs0 deleted");
    // Nothing else changed.
    assert!(tables.contains("table inet foreign"), "{tables}");
    assert_eq!(
        saved_rules(&node("iptables-save")),
        saved_rules(&nft_before)
    );
    assert_eq!(
        saved_rules(&node("iptables-legacy-save")),
        saved_rules(&legacy_before)
    );
    assert_eq!(node("ipset list -n"), sets_before);
    let addrs_after = addresses();
    let removed: BTreeSet<&String> = addrs_before.difference(&addrs_after).collect();
    assert!(
        removed.iter().all(|a| a.starts_with("kube-ipvs0 "))
            && addrs_after.is_subset(&addrs_before),
        "only kube-ipvs0's addresses removed: {removed:?}"
    );
    for a in [
        "foreign0 172.31.0.1/32",
        "uplink0 10.0.2.15/24",
        "cni0 10.244.0.1/24",
    ] {
        assert!(addrs_after.contains(a), "{a} kept: {addrs_after:?}");
    }
    // Traffic is down for the Services until kube-proxy has synced.
    assert!(
        in_node(|| request(TARGETS[0].1, 1)).is_err(),
        "nothing serves the ClusterIP after --cleanup"
    );

    // kube-proxy starts again and writes its state (kubelet's chains and
    // the foreign objects are still there).
    for cmd in fixture("kube-ipvs0.sh").lines() {
        node(cmd);
    }
    node_stdin("ipset restore", &fixture("ipset.restore"));
    node_stdin("iptables-restore --noflush", &fixture("iptables.rules"));
    node_stdin("ipvsadm -R", &fixture("ipvs.rules"));
    node("iptables -t nat -Z KUBE-MARK-MASQ");
    let mut n = 5000;
    let mut answered = 0;
    for (what, target) in TARGETS {
        let mut who = BTreeSet::new();
        for _ in 0..6 {
            n += 1;
            let r = in_node(move || request(target, n));
            who.insert(r.unwrap_or_else(|e| panic!("{what} {target} after the rollback: {e}")));
            answered += 1;
        }
        assert_eq!(who.len(), 2, "{what}: both pods answer after the rollback");
    }
    let marked = node("iptables -t nat -L KUBE-MARK-MASQ -n -v -x");
    let pkts: u64 = marked
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    assert!(
        pkts > 0,
        "kube-proxy's masquerade marking is used again:\n{marked}"
    );
    assert!(ipvs_lines().is_superset(&foreign_ipvs));
    eprintln!(
        "rollback: {answered} requests through ClusterIP, NodePort and LoadBalancer answered by both pods via kube-proxy's state; KUBE-MARK-MASQ marked {pkts} packets; foreign IPVS service, nft table, dummy address, kubelet chains and ipset untouched"
    );
}

/// Runs `f` on a thread inside the node's namespace.
fn in_node<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    thread::scope(|s| {
        s.spawn(|| {
            enter(NODE);
            f()
        })
        .join()
        .expect("netns thread panicked")
    })
}

fn read_line(s: &mut TcpStream) -> String {
    let mut line = String::new();
    BufReader::new(s.try_clone().unwrap())
        .read_line(&mut line)
        .expect("read on the long-lived connection");
    line.trim().to_string()
}

/// Sends a line on the long-lived connection and checks the echo.
fn ping(held: &mut TcpStream, who: &str, n: &mut u32) {
    *n += 1;
    held.write_all(format!("held {n}\n").as_bytes())
        .expect("write on the long-lived connection");
    assert_eq!(
        read_line(held),
        format!("{who} held {n}"),
        "the long-lived connection survives the migration"
    );
}
