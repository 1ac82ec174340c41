//! End-to-end: the `ipvs-proxy` binary's nftables table under change, on a
//! real kernel with nftables (qemu guest), with real TCP traffic. Topology:
//! dataplane's `tests/common/net.rs` (the test thread's netns is the node,
//! where the agent runs; pods in their own namespaces).
//!
//! - A burst of 200 single manifest changes (endpoints replaced, Services
//!   added, deleted, NodePort Services added, LoadBalancer source ranges
//!   changed) while a request loop runs through a ClusterIP whose endpoints
//!   do not change: no request fails, and the table the agent ends with is
//!   the one a fresh start renders from the same manifests.
//! - Drift repair: an element of our table deleted behind the agent's back,
//!   then the whole table: the next full sync restores both.
#![cfg(feature = "e2e-tests")]

#[path = "../../dataplane/tests/common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::net::{self, sa, tcp_hello, tcp_server, POD_A1, POD_A2, POD_B1};
use common::{sh, sh_try, Netns};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ipvs-proxy");
const TABLE: &str = "ipvs-proxy";
/// The Service the request loop uses; its endpoints never change.
const WEB_VIP: &str = "10.96.0.10";

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the agent on `dir` in the calling thread's netns (the node); its
/// log goes to `$TMPDIR/<log>`.
fn spawn_agent(dir: &Path, log: &str, extra: &[&str]) -> Agent {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(std::env::temp_dir().join(log))
        .unwrap();
    let child = Command::new(BIN)
        .arg(format!("--manifests={}", dir.display()))
        .args([
            "--hostname-override=node-a",
            "--cluster-cidr=10.244.0.0/16",
            "--metrics-bind-address=127.0.0.1:10249",
            "--healthz-bind-address=127.0.0.1:10256",
            "-v=2",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("agent starts");
    Agent(child)
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return t0.elapsed();
        }
        thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

/// The agent's `/metrics` (on the node's loopback), `None` while it is not up.
fn metrics() -> Option<String> {
    let (ok, out) = sh_try("curl -s --max-time 10 http://127.0.0.1:10249/metrics");
    ok.then_some(out)
}

/// How many syncs the running agent has finished.
fn syncs_done() -> u64 {
    counter("kubeproxy_sync_proxy_rules_duration_seconds_count")
}

/// One unlabelled metric's value (0 while the agent is not up).
fn counter(name: &str) -> u64 {
    metrics()
        .and_then(|m| {
            m.lines()
                .find(|l| l.split_whitespace().next() == Some(name))
                .and_then(|l| l.split_whitespace().last())
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0, |v| v as u64)
}

/// One endpoint list entry of an EndpointSlice manifest.
fn ep(ip: &str, node: &str) -> String {
    format!("- addresses: [\"{ip}\"]\n  conditions: {{ready: true}}\n  nodeName: {node}\n")
}

/// A Service and its EndpointSlice. `kind`: ClusterIP, NodePort or
/// LoadBalancer; `lb`: (ingress IP, source range) for LoadBalancer;
/// `node_port` for NodePort and LoadBalancer.
fn svc_manifest(
    name: &str,
    vip: &str,
    kind: &str,
    node_port: Option<u16>,
    lb: Option<(&str, &str)>,
    eps: &str,
) -> String {
    let np = node_port.map_or(String::new(), |p| format!(", nodePort: {p}"));
    let (ranges, status) = match lb {
        Some((ip, range)) => (
            format!("  loadBalancerSourceRanges: [{range}]\n"),
            format!("status:\n  loadBalancer:\n    ingress: [{{ip: {ip}}}]\n"),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  type: {kind}\n  clusterIP: {vip}\n  clusterIPs: [{vip}]\n  ipFamilies: [IPv4]\n  ports:\n  - {{name: http, port: 80, targetPort: 8080, protocol: TCP{np}}}\n{ranges}{status}---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints:\n{eps}"
    )
}

/// Writes `file` in `dir` atomically (a temporary name the agent does not
/// read, then a rename).
fn put(dir: &Path, file: &str, text: &str) {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, dir.join(file)).unwrap();
}

/// The web Service: a pod on this node and one on node-b, both serving.
fn web(dir: &Path) {
    let eps = ep(POD_A2.1, "node-a") + &ep(POD_B1.1, "node-b");
    put(
        dir,
        "web.yaml",
        &svc_manifest("web", WEB_VIP, "ClusterIP", None, None, &eps),
    );
}

/// `n` endpoints of filler Service `i` (on another node; nothing listens),
/// the first one's last octet shifted by `gen`.
fn filler_eps(i: usize, gen: usize, n: usize) -> String {
    (0..n)
        .map(|j| {
            let last = if j == 0 { 10 + gen % 200 } else { 210 + j };
            ep(&format!("10.250.{i}.{last}"), "node-c")
        })
        .collect()
}

/// `nft -j list table inet <ours>` in a form two renderings of the same
/// table compare equal in: metainfo and handles dropped, set elements sorted.
fn canonical_table() -> Option<String> {
    let (ok, out) = sh_try(&format!("nft -j list table inet {TABLE}"));
    if !ok {
        return None;
    }
    let v: Value = serde_json::from_str(&out).expect("nft -j output is JSON");
    let items = v["nftables"].as_array().expect("nftables array");
    let mut lines = String::new();
    for item in items {
        if item.get("metainfo").is_some() {
            continue;
        }
        let mut item = item.clone();
        canon(&mut item);
        writeln!(lines, "{item}").unwrap();
    }
    Some(lines)
}

fn canon(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("handle");
            // Rule counters count packets, not configuration.
            if let Some(c @ Value::Object(_)) = m.get_mut("counter") {
                *c = Value::Null;
            }
            if let Some(Value::Array(elems)) = m.get_mut("elem") {
                elems.sort_by_key(|e| e.to_string());
            }
            for x in m.values_mut() {
                canon(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(canon),
        _ => {}
    }
}

fn ipvs_state() -> String {
    sh("ipvsadm -Sn | sort")
}

/// Waits until the agent is quiet: the same IPVS state and table over
/// `quiet` (after `min_syncs` syncs at least). Returns the table.
fn settled(min_syncs: u64, quiet: Duration, limit: Duration) -> String {
    let t0 = Instant::now();
    let snap = || (syncs_done(), ipvs_state(), canonical_table());
    let mut last = snap();
    while t0.elapsed() < limit {
        thread::sleep(quiet);
        let now = snap();
        // The sync count itself is not compared: with a short sync period
        // it grows in every window.
        if (&now.1, &now.2) == (&last.1, &last.2) && now.0 >= min_syncs {
            if let Some(t) = now.2 {
                return t;
            }
        }
        last = now;
    }
    panic!(
        "the agent did not settle in {limit:?} (syncs {}, table present {})",
        last.0,
        last.2.is_some()
    );
}

/// Each request of the loop: when it ended and its result.
type RequestLog = Vec<(Duration, Result<String, String>)>;

/// A new TCP connection to the web VIP every ~10 ms from pod-a1, until stopped.
fn request_loop(stop: Arc<AtomicBool>, log: Arc<Mutex<RequestLog>>) -> thread::JoinHandle<()> {
    let t0 = Instant::now();
    thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let r = tcp_hello(POD_A1.0, sa(WEB_VIP, 80), None)
                .map(|(name, _)| name)
                .map_err(|e| e.to_string());
            log.lock().unwrap().push((t0.elapsed(), r));
            thread::sleep(Duration::from_millis(10));
        }
    })
}

/// The node with the topology, pods a2 and b1 serving on 8080, and an
/// empty manifest directory.
fn setup(dir_name: &str) -> (Netns, PathBuf) {
    let ns = Netns::enter("node").with_uplink();
    net::build();
    tcp_server(POD_A2.0, sa(POD_A2.1, 8080), "a2");
    tcp_server(POD_B1.0, sa(POD_B1.1, 8080), "b1");
    let _ = sh_try(&format!("nft delete table inet {TABLE}"));
    let dir = std::env::temp_dir().join(dir_name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    (ns, dir)
}

fn teardown(dir: &Path) {
    let _ = sh_try(&format!("{BIN} --cleanup --hostname-override node-a"));
    let _ = std::fs::remove_dir_all(dir);
    for ns in ["pod-a1", "pod-a2", "pod-b1", "node-b", "ext"] {
        let _ = sh_try(&format!("ip netns del {ns}"));
    }
}

const FILLERS: usize = 40;
const BURST: usize = 200;

#[test]
fn a_burst_of_changes_loses_no_request_and_ends_in_the_fresh_table() {
    let (_ns, dir) = setup("filter-e2e-burst");
    web(&dir);
    // Fillers: i % 4 == 0 LoadBalancer (with a source range), 1 NodePort, else ClusterIP.
    let filler = |i: usize, gen: usize, range: &str| -> String {
        let name = format!("f{i}");
        let vip = format!("10.96.1.{}", i + 1);
        let eps = filler_eps(i, gen, 3);
        match i % 4 {
            0 => svc_manifest(
                &name,
                &vip,
                "LoadBalancer",
                Some(31000 + i as u16),
                Some((&format!("192.0.2.{}", i + 1), range)),
                &eps,
            ),
            1 => svc_manifest(&name, &vip, "NodePort", Some(31000 + i as u16), None, &eps),
            _ => svc_manifest(&name, &vip, "ClusterIP", None, None, &eps),
        }
    };
    for i in 0..FILLERS {
        put(
            &dir,
            &format!("f{i}.yaml"),
            &filler(i, 0, "198.51.100.0/24"),
        );
    }

    let agent = spawn_agent(&dir, "filter-e2e-burst.log", &[]);
    wait_for("the first sync", Duration::from_secs(120), || {
        syncs_done() >= 1
    });
    let (who, _) = tcp_hello(POD_A1.0, sa(WEB_VIP, 80), None).expect("web answers");
    assert!(who == "a2" || who == "b1", "{who}");
    let before = canonical_table().expect("our table after the first sync");
    assert!(
        before.contains("192.0.2.1") && before.contains("198.51.100.0"),
        "a LoadBalancer source range in the table: {before}"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let log: Arc<Mutex<RequestLog>> = Arc::default();
    let looper = request_loop(stop.clone(), log.clone());
    let count = |log: &Mutex<RequestLog>| log.lock().unwrap().len();
    wait_for("requests flowing", Duration::from_secs(30), || {
        count(&log) >= 20
    });
    let syncs_before = syncs_done();
    let netlink_before = counter("ipvs_proxy_nft_netlink_transactions_total");

    // The burst: 200 single changes, one file operation each, no pause.
    let t_burst = Instant::now();
    let (mut added, mut deleted, mut nodeports, mut ranges, mut endpoints) = (0, 0, 0, 0, 0);
    let mut present: Vec<usize> = (0..FILLERS).collect();
    for k in 0..BURST {
        match k % 5 {
            0 => {
                // One endpoint address of a filler replaced.
                let i = present[k % present.len()];
                let (file, text) = if i < FILLERS {
                    // A LoadBalancer filler keeps the source range it has.
                    let file = format!("f{i}.yaml");
                    let cur = std::fs::read_to_string(dir.join(&file)).unwrap();
                    let range = cur
                        .lines()
                        .find_map(|l| l.trim().strip_prefix("loadBalancerSourceRanges: ["))
                        .map_or("198.51.100.0/24".to_owned(), |r| {
                            r.trim_end_matches(']').to_owned()
                        });
                    (file, filler(i, k + 1, &range))
                } else {
                    let eps = filler_eps(i, k + 1, 3);
                    let (name, vip) = (format!("a{i}"), format!("10.96.2.{}", i - FILLERS + 1));
                    let text = svc_manifest(&name, &vip, "ClusterIP", None, None, &eps);
                    (format!("{name}.yaml"), text)
                };
                put(&dir, &file, &text);
                endpoints += 1;
            }
            1 => {
                // A ClusterIP Service added, with its slice.
                let i = FILLERS + added;
                put(
                    &dir,
                    &format!("a{i}.yaml"),
                    &svc_manifest(
                        &format!("a{i}"),
                        &format!("10.96.2.{}", added + 1),
                        "ClusterIP",
                        None,
                        None,
                        &filler_eps(i, 0, 3),
                    ),
                );
                present.push(i);
                added += 1;
            }
            2 => {
                // A Service deleted (its file removed): a ClusterIP filler
                // while there are, else one of the added ones.
                let pos = present
                    .iter()
                    .position(|&i| i >= FILLERS || i % 4 >= 2)
                    .expect("something to delete");
                let i = present.remove(pos);
                let file = if i < FILLERS {
                    format!("f{i}.yaml")
                } else {
                    format!("a{i}.yaml")
                };
                std::fs::remove_file(dir.join(file)).unwrap();
                deleted += 1;
            }
            3 => {
                // A NodePort Service added.
                let i = 200 + nodeports;
                put(
                    &dir,
                    &format!("n{i}.yaml"),
                    &svc_manifest(
                        &format!("n{i}"),
                        &format!("10.96.3.{}", nodeports + 1),
                        "NodePort",
                        Some(30000 + nodeports as u16),
                        None,
                        &filler_eps(i, 0, 3),
                    ),
                );
                nodeports += 1;
            }
            _ => {
                // A LoadBalancer's source range changed.
                let i = (ranges * 4) % FILLERS;
                put(
                    &dir,
                    &format!("f{i}.yaml"),
                    &filler(i, 0, &format!("100.64.{}.0/24", ranges)),
                );
                ranges += 1;
            }
        }
    }
    let burst_took = t_burst.elapsed();
    eprintln!(
        "burst of {BURST} changes written in {burst_took:?}: {endpoints} endpoint, {added} added, \
         {deleted} deleted, {nodeports} NodePort added, {ranges} source ranges"
    );
    let after = settled(
        syncs_before + 1,
        Duration::from_secs(3),
        Duration::from_secs(300),
    );
    let netlink_tx = counter("ipvs_proxy_nft_netlink_transactions_total") - netlink_before;
    eprintln!(
        "settled {:?} after the burst began, {} syncs during it, {netlink_tx} nfnetlink element \
         transactions, {} nft runs in all",
        t_burst.elapsed(),
        syncs_done() - syncs_before,
        counter("ipvs_proxy_nft_executions_total"),
    );
    // Element changes went to the kernel over nfnetlink, and none of them
    // had to be repaired by a table replacement.
    assert!(netlink_tx > 0, "no nfnetlink element transaction");
    let fallbacks = counter("ipvs_proxy_nft_element_fallbacks_total");
    if fallbacks > 0 {
        let log = std::fs::read_to_string(std::env::temp_dir().join("filter-e2e-burst.log"))
            .unwrap_or_default();
        let why: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("element update failed"))
            .take(5)
            .collect();
        panic!("{fallbacks} element updates fell back to replacing the table: {why:#?}");
    }
    // Keep the loop going a little on the final state too.
    let n = count(&log);
    wait_for("requests after the burst", Duration::from_secs(30), || {
        count(&log) >= n + 20
    });
    stop.store(true, Ordering::Relaxed);
    looper.join().expect("request loop");
    {
        let log = log.lock().unwrap();
        let failed: Vec<_> = log.iter().filter(|(_, r)| r.is_err()).collect();
        eprintln!("{} requests, {} failed", log.len(), failed.len());
        assert!(
            failed.is_empty(),
            "failed requests: {:#?}",
            &failed[..failed.len().min(20)]
        );
        assert!(log.len() >= 40, "the request loop ran: {}", log.len());
    }
    // The last changes of each kind are in the table.
    assert!(
        after.contains(&format!("\"10.96.2.{added}\"")),
        "last added Service"
    );
    assert!(
        after.contains(&format!("{}", 30000 + nodeports - 1)),
        "last NodePort"
    );
    assert!(
        after.contains(&format!("\"100.64.{}.0\"", ranges - 1)),
        "last source range"
    );
    let ipvs_after = ipvs_state();

    // A fresh start on the same manifests: our table deleted, a new agent.
    drop(agent);
    sh(&format!("nft delete table inet {TABLE}"));
    let _agent = spawn_agent(&dir, "filter-e2e-burst.log", &[]);
    wait_for(
        "the fresh agent's first sync",
        Duration::from_secs(120),
        || syncs_done() >= 1,
    );
    let fresh = settled(1, Duration::from_secs(3), Duration::from_secs(120));
    if after != fresh {
        let a: Vec<&str> = after.lines().collect();
        let f: Vec<&str> = fresh.lines().collect();
        let only_after: Vec<_> = a.iter().filter(|l| !f.contains(l)).collect();
        let only_fresh: Vec<_> = f.iter().filter(|l| !a.contains(l)).collect();
        panic!(
            "the table after the burst differs from a fresh start's:\nonly after the burst: {only_after:#?}\nonly fresh: {only_fresh:#?}"
        );
    }
    assert_eq!(
        ipvs_after,
        ipvs_state(),
        "IPVS after the burst = fresh start"
    );
    teardown(&dir);
}

#[test]
fn full_sync_repairs_a_deleted_element_and_a_deleted_table() {
    let (_ns, dir) = setup("filter-e2e-drift");
    web(&dir);
    put(
        &dir,
        "lb.yaml",
        &svc_manifest(
            "lb",
            "10.96.0.20",
            "LoadBalancer",
            Some(31080),
            Some(("192.0.2.20", "198.51.100.0/24")),
            &(ep(POD_A2.1, "node-a")),
        ),
    );
    let period = Duration::from_secs(3);
    let _agent = spawn_agent(&dir, "filter-e2e-drift.log", &["--ipvs-sync-period=3s"]);
    wait_for("the first sync", Duration::from_secs(120), || {
        syncs_done() >= 1
    });
    let good = settled(1, Duration::from_secs(2), Duration::from_secs(120));
    let element = format!("{{ {WEB_VIP} . tcp . 80 }}");
    let has = || {
        sh_try(&format!(
            "nft get element inet {TABLE} service-ports-v4 '{element}'"
        ))
        .0
    };
    assert!(has(), "web's element in service-ports-v4: {good}");

    // One element deleted behind the agent's back. `sh` fails unless nft
    // deleted it (nft refuses to delete an absent element); a second nft
    // command to check it is gone would race the 3 s full sync that
    // restores it (seen once in a clean-clone CI run).
    sh(&format!(
        "nft delete element inet {TABLE} service-ports-v4 '{element}'"
    ));
    let s0 = syncs_done();
    // Three periods and at least two full syncs of slack under TCG.
    let t = wait_for(
        "the deleted element restored by a full sync",
        Duration::from_secs(60),
        || has() && syncs_done() > s0,
    );
    eprintln!("element restored after {t:?} (sync period {period:?})");
    assert_eq!(
        canonical_table().as_deref(),
        Some(good.as_str()),
        "the whole table is back as it was"
    );

    // The whole table deleted.
    sh(&format!("nft delete table inet {TABLE}"));
    let t = wait_for(
        "the deleted table restored by a full sync",
        Duration::from_secs(60),
        || canonical_table().is_some(),
    );
    eprintln!("table restored after {t:?}");
    let back = settled(1, Duration::from_secs(2), Duration::from_secs(60));
    assert_eq!(back, good, "the restored table is the one we had");
    let (who, _) = tcp_hello(POD_A1.0, sa(WEB_VIP, 80), None).expect("web answers after repair");
    assert!(who == "a2" || who == "b1", "{who}");
    teardown(&dir);
}
