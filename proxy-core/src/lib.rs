//! Kubernetes Services -> desired IPVS node state.
