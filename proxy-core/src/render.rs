//! The dry run: the desired IPVS state in `ipvsadm -Sn` format.

use crate::model::DesiredState;

/// Renders the desired virtual and real servers as `ipvsadm -Sn` would print
/// them once programmed (lines from [`ipvs::rules::render_save`]): one `-A`
/// line per virtual server followed by its `-a` lines, virtual servers in
/// key order (protocol, address, port; firewall marks last), real servers
/// by address and port. ipvsadm's own order differs (it sorts with wrapping
/// unsigned comparisons), so compare with
/// `diff <(ipvs-proxy plan | sort) <(ipvsadm -Sn | sort)`.
pub fn render_ipvsadm_save(desired: &DesiredState) -> String {
    let rendered: Vec<(&ipvs::VirtualServer, Vec<ipvs::RealServer>)> = desired
        .virtual_servers
        .values()
        .map(|v| {
            let reals = v.real_servers.iter().map(|r| r.to_real_server()).collect();
            (&v.server, reals)
        })
        .collect();
    ipvs::rules::render_save(rendered.iter().map(|(vs, reals)| (*vs, reals)))
}
