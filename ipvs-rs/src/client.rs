//! INTERIM API CONTRACT STUB - replaced by the real blocking client.
//! Every method returns an error until then.
#![allow(missing_docs, clippy::needless_pass_by_ref_mut)]

use std::os::fd::BorrowedFd;
use std::path::Path;
use std::time::Duration;

use crate::batch::{BatchReport, Op};
use crate::error::{Error, Result};
use crate::types::*;

pub struct Handle {
    _timeout: Duration,
}

fn stub<T>() -> Result<T> {
    Err(Error::IpvsUnavailable)
}

impl Handle {
    pub fn new() -> Result<Handle> {
        stub()
    }
    pub fn new_in_netns(_path: impl AsRef<Path>) -> Result<Handle> {
        stub()
    }
    pub fn new_in_netns_fd(_fd: BorrowedFd<'_>) -> Result<Handle> {
        stub()
    }
    pub fn set_timeout(&mut self, d: Duration) {
        self._timeout = d;
    }
    pub fn services(&mut self) -> Result<Vec<VirtualServer>> {
        stub()
    }
    pub fn service(&mut self, _key: &ServiceKey) -> Result<VirtualServer> {
        stub()
    }
    pub fn add_service(&mut self, _vs: &VirtualServer) -> Result<()> {
        stub()
    }
    pub fn edit_service(&mut self, _vs: &VirtualServer) -> Result<()> {
        stub()
    }
    pub fn delete_service(&mut self, _key: &ServiceKey) -> Result<()> {
        stub()
    }
    pub fn real_servers(&mut self, _svc: &ServiceKey) -> Result<Vec<RealServer>> {
        stub()
    }
    pub fn add_real_server(&mut self, _svc: &ServiceKey, _rs: &RealServer) -> Result<()> {
        stub()
    }
    pub fn edit_real_server(&mut self, _svc: &ServiceKey, _rs: &RealServer) -> Result<()> {
        stub()
    }
    pub fn delete_real_server(&mut self, _svc: &ServiceKey, _rs: &RealServerKey) -> Result<()> {
        stub()
    }
    pub fn dump(&mut self) -> Result<Vec<(VirtualServer, Vec<RealServer>)>> {
        stub()
    }
    pub fn flush(&mut self) -> Result<()> {
        stub()
    }
    pub fn zero(&mut self, _svc: Option<&ServiceKey>) -> Result<()> {
        stub()
    }
    pub fn timeouts(&mut self) -> Result<Timeouts> {
        stub()
    }
    pub fn set_timeouts(&mut self, _t: &Timeouts) -> Result<()> {
        stub()
    }
    pub fn info(&mut self) -> Result<Info> {
        stub()
    }
    pub fn daemons(&mut self) -> Result<Vec<SyncDaemon>> {
        stub()
    }
    pub fn start_daemon(&mut self, _d: &SyncDaemon) -> Result<()> {
        stub()
    }
    pub fn stop_daemon(&mut self, _state: DaemonState) -> Result<()> {
        stub()
    }
    pub fn apply(&mut self, _ops: &[Op]) -> Result<BatchReport> {
        stub()
    }
}
