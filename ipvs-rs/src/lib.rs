//! IPVS generic-netlink client.
